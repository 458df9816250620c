"""API keys (SPEC section 10): `API_KEYS` is a comma-separated list of `secret` or `name:secret`.

Each key is a scope: the jobs and idempotency keys it creates are its own, and no other key
sees them. A named entry's scope is its name; an unnamed one's is `key-` and the first 12 hex
digits of the secret's SHA-256 (the secret itself is never stored or logged). Comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_SECRET_CHARS = 8


@dataclass(frozen=True)
class ApiKey:
    scope: str
    digest: bytes  # SHA-256 of the secret: what requests are compared against


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """The keys of an API_KEYS value; ValueError (without the secrets) if it is malformed."""
    keys: list[ApiKey] = []
    for number, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            raise ValueError(f"entry {number} is empty")
        name, sep, secret = entry.partition(":")
        if not sep:
            name, secret = "", entry
        if sep and not _NAME.match(name):
            raise ValueError(f"entry {number}: a name is 1-64 letters, digits, '_', '.' or '-'")
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"entry {number}: a secret has at least {MIN_SECRET_CHARS} characters")
        digest = hashlib.sha256(secret.encode()).digest()
        keys.append(ApiKey(scope=name or f"key-{digest.hex()[:12]}", digest=digest))
    if len({k.digest for k in keys}) != len(keys):
        raise ValueError("the same secret is given twice")
    if len({k.scope for k in keys}) != len(keys):
        raise ValueError("the same name is given twice")
    return tuple(keys)


def scope_of(keys: tuple[ApiKey, ...], authorization: str | None) -> str | None:
    """The scope of a `Bearer <secret>` header, or None if it names no configured key."""
    if authorization is None:
        return None
    kind, _, secret = authorization.partition(" ")
    if kind.lower() != "bearer" or not secret:
        return None
    digest = hashlib.sha256(secret.strip().encode()).digest()
    found = None
    for key in keys:  # every key is compared, so the time does not say which one matched
        if hmac.compare_digest(key.digest, digest):
            found = key.scope
    return found

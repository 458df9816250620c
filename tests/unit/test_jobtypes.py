"""Job type handler logic (SPEC section 8): payload validation, `run`, `compensate`, schemas.

The BlockList port is an in-memory fake here: these tests are about what the handlers do with
the port. The real `blocked_ips` table (SqlBlockList) is tested in integration/.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from tasksvc.jobtypes import block_ip, default_registry, hash
from tasksvc.jobtypes.base import CompensationContext, RunContext, SimulatedFailure

_ABSENT = object()
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@dataclass
class FakeBlockList:
    """The BlockList protocol on a dict: remembers, per job, what a row was before its first write."""

    rows: dict[str, str | None] = field(default_factory=dict)  # ip -> reason
    undo: dict[uuid.UUID, tuple[str, tuple[bool, str | None]]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def _remember(self, ip: str, job_id: uuid.UUID) -> None:
        self.undo.setdefault(job_id, (ip, (ip in self.rows, self.rows.get(ip))))

    def block(self, ip: str, reason: str | None, job_id: uuid.UUID) -> bool:
        self.calls.append(("block", ip, reason, job_id))
        self._remember(ip, job_id)
        changed = self.rows.get(ip, _ABSENT) != reason
        self.rows[ip] = reason
        return changed

    def unblock(self, ip: str, job_id: uuid.UUID) -> bool:
        self.calls.append(("unblock", ip, job_id))
        self._remember(ip, job_id)
        return self.rows.pop(ip, _ABSENT) is not _ABSENT

    def restore(self, job_id: uuid.UUID) -> bool:
        self.calls.append(("restore", job_id))
        if job_id not in self.undo:
            return False
        ip, (existed, reason) = self.undo[job_id]
        before = dict(self.rows)
        if existed:
            self.rows[ip] = reason
        else:
            self.rows.pop(ip, None)
        return self.rows != before


def run_ctx(attempt: int = 1, blocklist: FakeBlockList | None = None, job_id: uuid.UUID | None = None) -> RunContext:
    return RunContext(job_id=job_id or uuid.uuid4(), attempt=attempt, blocklist=blocklist or FakeBlockList())


def comp_ctx(job_id: uuid.UUID, blocklist: FakeBlockList) -> CompensationContext:
    errors = [{"attempt": 1, "type": "SimulatedFailure", "message": "x"}]
    return CompensationContext(job_id=job_id, attempts=1, errors=errors, blocklist=blocklist)


# -- registry and schemas ---------------------------------------------------------------------


def test_registry_holds_the_built_in_types_by_name() -> None:
    registry = default_registry()
    assert set(registry) == {"hash", "block_ip"}
    assert all(name == job_type.name for name, job_type in registry.items())
    assert registry["hash"].compensate is None  # nothing to undo: compensation is `skipped`
    assert registry["block_ip"].compensate is not None


@pytest.mark.parametrize(("name", "required"), [("hash", ["data"]), ("block_ip", ["ip"])])
def test_json_schemas_describe_the_payload(name: str, required: list[str]) -> None:
    schema = default_registry()[name].json_schema()
    assert schema["type"] == "object"
    assert isinstance(schema["properties"], dict)
    assert schema["properties"]
    assert schema["required"] == required
    assert schema["additionalProperties"] is False  # extra="forbid" is visible to clients


def test_hash_schema_lists_the_algorithms_and_wire_names() -> None:
    props = default_registry()["hash"].json_schema()["properties"]
    assert set(props["algo"]["enum"]) == hashlib.algorithms_guaranteed
    assert props["algo"]["default"] == "sha256"
    assert set(props["encoding"]["enum"]) == {"utf-8", "base64"}
    assert "failTimes" in props  # the alias, as clients send it
    assert "fail_times" not in props


def test_block_ip_schema_lists_the_actions() -> None:
    props = default_registry()["block_ip"].json_schema()["properties"]
    assert props["action"]["enum"] == ["block", "unblock"]
    assert props["action"]["default"] == "block"


# -- hash -------------------------------------------------------------------------------------


def parse_hash(payload: dict[str, Any]) -> hash.HashPayload:
    return hash.JOB_TYPE.parse(payload)


def test_hash_of_abc_is_the_known_sha256() -> None:
    assert hash.run(parse_hash({"data": "abc"}), run_ctx()) == {"algo": "sha256", "digest": ABC_SHA256}


def test_hash_decodes_base64_data() -> None:
    payload = parse_hash({"data": base64.b64encode(b"abc").decode(), "encoding": "base64"})
    assert hash.run(payload, run_ctx())["digest"] == ABC_SHA256


def test_hash_of_binary_base64_data() -> None:
    raw = bytes(range(256))
    payload = parse_hash({"data": base64.b64encode(raw).decode(), "encoding": "base64", "algo": "md5"})
    assert hash.run(payload, run_ctx())["digest"] == hashlib.md5(raw).hexdigest()  # noqa: S324 - a test vector


def test_hash_utf8_encodes_non_ascii_data() -> None:
    payload = parse_hash({"data": "héllo €"})
    assert hash.run(payload, run_ctx())["digest"] == hashlib.sha256("héllo €".encode()).hexdigest()


@pytest.mark.parametrize("algo", sorted(hashlib.algorithms_guaranteed))
def test_every_guaranteed_algorithm_works(algo: str) -> None:
    result = hash.run(parse_hash({"data": "abc", "algo": algo}), run_ctx())
    assert result["algo"] == algo
    h = hashlib.new(algo, b"abc")
    if algo.startswith("shake_"):
        assert len(result["digest"]) == 64  # 32 bytes of output, in hex
        assert result["digest"] == h.hexdigest(32)  # type: ignore[call-arg]
    else:
        assert result["digest"] == h.hexdigest()


@pytest.mark.parametrize(
    "payload",
    [
        {"data": "abc", "algo": "sha257"},  # unknown algorithm
        {"data": "abc", "algo": "md4"},  # exists in some OpenSSL builds, not guaranteed
        {"data": "abc", "algo": ""},
        {"data": "abc", "colour": "red"},  # extra field
        {"data": "abc", "fail_times": 2},  # the Python name is not the wire name: an extra field
        {"data": "abc", "failTimes": -1},
        {"data": "abc", "encoding": "latin-1"},
        {"data": "not base64!", "encoding": "base64"},
        {"data": 42},
        {"algo": "sha256"},  # data is required
    ],
)
def test_hash_rejects_bad_payloads(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_hash(payload)


@pytest.mark.parametrize("attempt", [1, 2, 3, 10])
def test_hash_fail_true_fails_every_attempt(attempt: int) -> None:
    with pytest.raises(SimulatedFailure):
        hash.run(parse_hash({"data": "abc", "fail": True}), run_ctx(attempt=attempt))


@pytest.mark.parametrize(("attempt", "fails"), [(1, True), (2, True), (3, False), (4, False)])
def test_hash_fail_times_fails_the_first_k_attempts(attempt: int, fails: bool) -> None:
    payload = parse_hash({"data": "abc", "failTimes": 2})
    if fails:
        with pytest.raises(SimulatedFailure, match=f"attempt {attempt}"):
            hash.run(payload, run_ctx(attempt=attempt))
    else:
        assert hash.run(payload, run_ctx(attempt=attempt))["digest"] == ABC_SHA256


def test_hash_does_not_touch_the_blocklist() -> None:
    blocklist = FakeBlockList()
    hash.run(parse_hash({"data": "abc"}), run_ctx(blocklist=blocklist))
    assert blocklist.calls == []


# -- block_ip: normalisation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4/32", "1.2.3.4"),  # a /32 is the address
        ("::ffff:1.2.3.4", "1.2.3.4"),  # IPv4-mapped IPv6 is its IPv4 address
        ("::ffff:1.2.3.4/128", "1.2.3.4"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # a mapped network becomes the IPv4 network
        ("10.0.0.0/8", "10.0.0.0/8"),  # a network stays a network
        ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),  # netmask spelling -> prefix length
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:DB8::1", "2001:db8::1"),  # IPv6 is lower-cased and compressed
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8::1/128", "2001:db8::1"),
        (" 1.2.3.4 ", "1.2.3.4"),  # surrounding whitespace is stripped (normalise_ip calls .strip())
    ],
)
def test_normalise_ip(text: str, expected: str) -> None:
    assert block_ip.normalise_ip(text) == expected
    assert block_ip.BlockIpPayload.model_validate({"ip": text}).ip == expected


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1/8",  # host bits set in a CIDR
        "2001:db8::1/32",  # host bits set, IPv6
        "0.0.0.0/0",  # every IPv4 address
        "::/0",  # every IPv6 address
        "::ffff:0:0/96",  # every IPv4 address, spelled as mapped IPv6
        "not-an-ip",
        "1.2.3.256",
        "1.2.3.4/33",
        "01.2.3.4",  # leading zeros are ambiguous (octal?)
        "",
    ],
)
def test_normalise_ip_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError; the message is for humans
        block_ip.normalise_ip(text)
    with pytest.raises(ValidationError):
        block_ip.BlockIpPayload.model_validate({"ip": text})


def test_normalise_ip_has_one_spelling_for_a_scoped_ipv6_address() -> None:
    try:
        normalised = block_ip.normalise_ip("fe80::1%eth0")
    except ValueError:
        return  # refusing a zone id is fine too
    assert normalised == "fe80::1"


@pytest.mark.parametrize(
    "payload",
    [
        {"ip": "1.2.3.4", "action": "ban"},
        {"ip": "1.2.3.4", "colour": "red"},  # extra field
        {"ip": "1.2.3.4", "reason": "x" * 1001},
        {"ip": "1" * 65},
        {"reason": "no ip"},
    ],
)
def test_block_ip_rejects_bad_payloads(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        default_registry()["block_ip"].parse(payload)


# -- block_ip: run and compensate -------------------------------------------------------------


def parse_block(payload: dict[str, Any]) -> block_ip.BlockIpPayload:
    return block_ip.JOB_TYPE.parse(payload)


def test_block_writes_the_normalised_ip() -> None:
    blocklist, job_id = FakeBlockList(), uuid.uuid4()
    result = block_ip.run(parse_block({"ip": "1.2.3.4/32", "reason": "abuse"}), run_ctx(1, blocklist, job_id))
    assert result == {"ip": "1.2.3.4", "action": "block", "changed": True}
    assert blocklist.calls == [("block", "1.2.3.4", "abuse", job_id)]
    assert blocklist.rows == {"1.2.3.4": "abuse"}


def test_block_twice_is_harmless() -> None:
    blocklist, job_id = FakeBlockList(), uuid.uuid4()
    payload = parse_block({"ip": "10.0.0.0/8"})
    block_ip.run(payload, run_ctx(1, blocklist, job_id))
    assert block_ip.run(payload, run_ctx(2, blocklist, job_id))["changed"] is False
    assert blocklist.rows == {"10.0.0.0/8": None}


def test_unblock_removes_the_row() -> None:
    blocklist, job_id = FakeBlockList(rows={"2001:db8::1": "old"}), uuid.uuid4()
    result = block_ip.run(parse_block({"ip": "2001:DB8::1", "action": "unblock"}), run_ctx(1, blocklist, job_id))
    assert result == {"ip": "2001:db8::1", "action": "unblock", "changed": True}
    assert blocklist.calls == [("unblock", "2001:db8::1", job_id)]
    assert blocklist.rows == {}


@pytest.mark.parametrize("action", ["block", "unblock"])
def test_fail_true_raises_after_the_write(action: str) -> None:
    blocklist, job_id = FakeBlockList(rows={"1.2.3.4": "old"}), uuid.uuid4()
    with pytest.raises(SimulatedFailure):
        block_ip.run(parse_block({"ip": "1.2.3.4", "action": action, "fail": True}), run_ctx(1, blocklist, job_id))
    assert [call[0] for call in blocklist.calls] == [action]  # the write happened before the failure


def test_compensate_calls_restore_with_the_job_id() -> None:
    blocklist, job_id = FakeBlockList(), uuid.uuid4()
    result = block_ip.compensate(parse_block({"ip": "1.2.3.4"}), comp_ctx(job_id, blocklist))
    assert blocklist.calls == [("restore", job_id)]
    assert result == {"ip": "1.2.3.4", "restored": False}  # the job never wrote: nothing to restore


def test_failed_block_then_compensate_removes_the_inserted_ip() -> None:
    blocklist, job_id = FakeBlockList(rows={"9.9.9.9": "other"}), uuid.uuid4()
    payload = parse_block({"ip": "1.2.3.4", "fail": True})
    for attempt in (1, 2):
        with pytest.raises(SimulatedFailure):
            block_ip.run(payload, run_ctx(attempt, blocklist, job_id))
    assert block_ip.compensate(payload, comp_ctx(job_id, blocklist)) == {"ip": "1.2.3.4", "restored": True}
    assert blocklist.rows == {"9.9.9.9": "other"}
    # Compensation is idempotent: a second run changes nothing.
    assert block_ip.compensate(payload, comp_ctx(job_id, blocklist)) == {"ip": "1.2.3.4", "restored": False}
    assert blocklist.rows == {"9.9.9.9": "other"}


def test_failed_unblock_then_compensate_reinserts_the_removed_ip() -> None:
    blocklist, job_id = FakeBlockList(rows={"1.2.3.4": "old reason"}), uuid.uuid4()
    payload = parse_block({"ip": "1.2.3.4", "action": "unblock", "fail": True})
    with pytest.raises(SimulatedFailure):
        block_ip.run(payload, run_ctx(1, blocklist, job_id))
    assert blocklist.rows == {}
    assert block_ip.compensate(payload, comp_ctx(job_id, blocklist))["restored"] is True
    assert blocklist.rows == {"1.2.3.4": "old reason"}

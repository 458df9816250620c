"""`hash`: digest some data. Nothing to undo, so its compensation is `skipped`."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from tasksvc.jobtypes.base import JobType, Payload, RunContext, SimulatedFailure

ALGORITHMS = tuple(sorted(hashlib.algorithms_guaranteed))
_SHAKE_DIGEST_BYTES = 32


class HashPayload(Payload):
    data: Annotated[str, StringConstraints(max_length=1_000_000)]
    algo: Annotated[str, Field(json_schema_extra={"enum": list(ALGORITHMS)})] = "sha256"
    encoding: Literal["utf-8", "base64"] = "utf-8"
    fail: bool = False
    fail_times: Annotated[int, Field(alias="failTimes", ge=0, le=1000)] = 0

    @field_validator("algo")
    @classmethod
    def _known_algo(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"must be one of {', '.join(ALGORITHMS)}")
        return value

    def raw(self) -> bytes:
        if self.encoding == "utf-8":
            return self.data.encode()
        try:
            return base64.b64decode(self.data, validate=True)
        except binascii.Error as exc:
            raise ValueError("data is not valid base64") from exc

    @model_validator(mode="after")
    def _data_decodes(self) -> Self:
        self.raw()
        return self


def run(payload: HashPayload, ctx: RunContext) -> dict[str, str]:
    if payload.fail or ctx.attempt <= payload.fail_times:
        raise SimulatedFailure(f"simulated failure on attempt {ctx.attempt}")
    digest = hashlib.new(payload.algo, payload.raw())
    hexdigest = (
        digest.hexdigest(_SHAKE_DIGEST_BYTES)  # type: ignore[call-arg]
        if payload.algo.startswith("shake_")
        else digest.hexdigest()
    )
    return {"algo": payload.algo, "digest": hexdigest}


JOB_TYPE = JobType(
    name="hash",
    payload_model=HashPayload,
    run=run,
    description="Hex digest of `data` with `algo`. `fail`/`failTimes` simulate failures.",
)

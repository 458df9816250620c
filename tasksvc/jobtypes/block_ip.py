"""`block_ip`: write (or remove) a row of `blocked_ips`; compensation puts back what was there.

Addresses are normalised so that one network has one spelling: `1.2.3.4/32` is
`1.2.3.4`, an IPv4-mapped IPv6 address is its IPv4 address, a CIDR with host bits set
is refused, and so are `0.0.0.0/0` and `::/0` (blocking everything is a typo, not a job).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import StringConstraints, field_validator

from tasksvc.jobtypes.base import CompensationContext, JobType, Payload, RunContext, SimulatedFailure

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_ip(text: str) -> str:
    """The canonical spelling of an address or network; ValueError if it is not one we accept."""
    if "%" in text:
        raise ValueError("IPv6 zone ids (%...) are not accepted: give the address without one")
    try:
        network: IPNetwork = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IP address or CIDR network without host bits: {exc}") from None
    if isinstance(network, ipaddress.IPv6Network):
        network = _unmap(network)
    if network.prefixlen == 0:
        raise ValueError("refusing to block every address (prefix length 0)")
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _unmap(network: ipaddress.IPv6Network) -> IPNetwork:
    mapped = network.network_address.ipv4_mapped
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))


class BlockIpPayload(Payload):
    ip: Annotated[str, StringConstraints(max_length=64)]
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
    action: Literal["block", "unblock"] = "block"
    fail: bool = False

    @field_validator("ip")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_ip(value)


def run(payload: BlockIpPayload, ctx: RunContext) -> dict[str, object]:
    if payload.action == "block":
        changed = ctx.blocklist.block(payload.ip, payload.reason, ctx.job_id)
    else:
        changed = ctx.blocklist.unblock(payload.ip, ctx.job_id)
    if payload.fail:
        raise SimulatedFailure(f"simulated failure after {payload.action} of {payload.ip}")
    return {"ip": payload.ip, "action": payload.action, "changed": changed}


def compensate(payload: BlockIpPayload, ctx: CompensationContext) -> dict[str, object]:
    return {"ip": payload.ip, "restored": ctx.blocklist.restore(ctx.job_id)}


JOB_TYPE = JobType(
    name="block_ip",
    payload_model=BlockIpPayload,
    run=run,
    compensate=compensate,
    description="Block or unblock an IP address or CIDR network in `blocked_ips`.",
)

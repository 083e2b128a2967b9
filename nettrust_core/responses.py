"""The answer NetTrust gives for a blocked name, as plain values the adapter turns into a reply.

``nxdomain`` — NXDOMAIN with an SOA, so stub resolvers cache the refusal (negative TTL);
``sinkhole`` — 0.0.0.0 for A, :: for AAAA, NODATA with SOA for other types;
``refused`` — a bare REFUSED.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidValue
from .answer import A, AAAA

RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 3, 5
BLOCKED_TTL = 60
KINDS = ("nxdomain", "sinkhole", "refused")


@dataclass(frozen=True, slots=True)
class BlockedResponse:
    rcode: int
    answer: tuple[str, ...] = ()       # zone-file lines
    authority: tuple[str, ...] = ()


def blocked_response(kind: str, qname: str, qtype: int, ttl: int = BLOCKED_TTL) -> BlockedResponse:
    owner = f"{qname}." if qname else "."
    soa = (f"{owner} {ttl} IN SOA blocked.nettrust.invalid. hostmaster.nettrust.invalid. "
           f"1 3600 600 86400 {ttl}")
    if kind == "refused":
        return BlockedResponse(RCODE_REFUSED)
    if kind == "sinkhole":
        if qtype == A:
            return BlockedResponse(RCODE_NOERROR, (f"{owner} {ttl} IN A 0.0.0.0",))
        if qtype == AAAA:
            return BlockedResponse(RCODE_NOERROR, (f"{owner} {ttl} IN AAAA ::",))
        return BlockedResponse(RCODE_NOERROR, (), (soa,))
    if kind == "nxdomain":
        return BlockedResponse(RCODE_NXDOMAIN, (), (soa,))
    raise InvalidValue(f"unknown blocked answer kind {kind!r}; expected one of {', '.join(KINDS)}")

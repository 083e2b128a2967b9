"""What an answer is, in plain Python values.

The Unbound adapter builds an :class:`Answer` from Unbound's ``reply_info``; tests build the same
value from a dnspython message with :meth:`Answer.from_dns_message`.  Policy only ever sees this.

Names are normalized: lower case, no trailing dot.
"""

from __future__ import annotations

from typing import Final

import enum
import ipaddress
from dataclasses import dataclass

from .errors import NetTrustError

#: Record types the answer model understands (numbers as on the wire).
A: Final = 1
CNAME: Final = 5
DNAME: Final = 39
PTR: Final = 12
AAAA: Final = 28
#: dnspython's ``resolve_chaining`` caps chains at 16 links; a longer chain is refused outright.
MAX_CHAIN: Final = 16

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TYPE_NAMES = {A: "A", CNAME: "CNAME", DNAME: "DNAME", PTR: "PTR", AAAA: "AAAA"}


class Security(enum.IntEnum):
    """DNSSEC status, numbered exactly as Unbound's ``sec_status_*`` (secure is 5, not 4)."""

    UNCHECKED = 0
    BOGUS = 1
    INDETERMINATE = 2
    INSECURE = 3
    SECURE = 5

    @classmethod
    def from_unbound(cls, value: object) -> "Security":
        """Unbound's status as a member; any value without one is BOGUS.

        Unbound has more statuses than pythonmod exports: 4 is ``sec_status_secure_sentinel_fail``
        (the root-key sentinel, RFC 8509), and a later release may add others.  Whatever this
        module does not know is never trusted.
        """
        try:
            return _SECURITY_BY_VALUE[value]  # type: ignore[index]  # any value: unknown ones are BOGUS
        except (KeyError, TypeError):
            return cls.BOGUS


_SECURITY_BY_VALUE = {int(m): m for m in Security}


class Source(enum.Enum):
    """Where Unbound got the answer from."""

    RESOLVED = "resolved"      # MODDONE of a mesh query (cache miss, prefetch)
    CACHE = "cache"            # message-cache hit
    LOCAL = "local"            # local-data the administrator declared (not RPZ, not auth-zone:
                               # those are labelled RESOLVED by the adapter and judged in full)
    CONFIRMED = "confirmed"    # a PTR answer's address that a forward lookup confirmed (made by
                               # nettrust_core.reverse, never by a client; judged in full)


@dataclass(frozen=True, slots=True)
class Record:
    """One answer-section record: ``data`` is an address for A/AAAA (text, or already an
    ``ipaddress`` object when the adapter decoded it from wire bytes), a name for CNAME/DNAME/PTR."""

    owner: str
    rtype: int
    ttl: int
    data: str | ipaddress.IPv4Address | ipaddress.IPv6Address

    # Written out, not generated: compiled by mypyc (nettrust_core.compiled), an explicit
    # __init__ is native (44 ns), the one @dataclass generates at run time is not (730 ns for a
    # frozen class; measured with mypyc 1.x on /usr/bin/python3 3.11).  Same fields, same
    # defaults, in the same order; eq, hash, repr and immutability still come from @dataclass.
    def __init__(self, owner: str, rtype: int, ttl: int,
                 data: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "rtype", rtype)
        object.__setattr__(self, "ttl", ttl)
        object.__setattr__(self, "data", data)


@dataclass(frozen=True, slots=True)
class Answer:
    qname: str
    qtype: int
    rcode: int
    security: Security
    records: tuple[Record, ...] = ()
    client: str | None = None
    source: Source = Source.RESOLVED

    def __init__(self, qname: str, qtype: int, rcode: int, security: Security,
                 records: tuple[Record, ...] = (), client: str | None = None,
                 source: Source = Source.RESOLVED) -> None:
        """Native when compiled: see :class:`Record`."""
        object.__setattr__(self, "qname", qname)
        object.__setattr__(self, "qtype", qtype)
        object.__setattr__(self, "rcode", rcode)
        object.__setattr__(self, "security", security)
        object.__setattr__(self, "records", records)
        object.__setattr__(self, "client", client)
        object.__setattr__(self, "source", source)

    def chain(self) -> tuple[str, ...]:
        """The names from the question to the final CNAME target, in order.

        Only CNAMEs owned by the current link are followed, so records for unrelated names
        stuffed into an answer are never believed.  A loop ends the chain where it closes; a
        chain longer than :data:`MAX_CHAIN` raises :class:`ChainTooLong`.
        """
        cnames: dict[str, str] = {}
        for r in self.records:
            if r.rtype == CNAME and r.owner not in cnames:
                cnames[r.owner] = str(r.data)       # a name: only A/AAAA data are addresses
        if not cnames:
            return (self.qname,)                    # the usual answer: no CNAME at all
        names = [self.qname]
        seen = {self.qname}
        while (target := cnames.get(names[-1])) is not None and target not in seen:
            if len(names) > MAX_CHAIN:
                raise ChainTooLong(self.qname, len(names))
            names.append(target)
            seen.add(target)
        return tuple(names)

    def addresses(self, final_name: str | None = None) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        """(address, ttl) of the A/AAAA records owned by the chain's final name.

        A malformed address is skipped (it can never be granted), never raised.
        """
        if final_name is None:
            final_name = self.chain()[-1]
        found = []
        for r in self.records:
            if r.owner != final_name or r.rtype not in (A, AAAA):
                continue
            addr = r.data
            if isinstance(addr, str):
                try:
                    addr = ipaddress.ip_address(addr)
                except ValueError:
                    continue
            if (r.rtype == A) != isinstance(addr, ipaddress.IPv4Address):
                continue
            found.append((addr, r.ttl))
        return found

    @classmethod
    def from_dns_message(cls, message, security: Security = Security.INSECURE, *,
                         client: str | None = None, source: Source = Source.RESOLVED) -> "Answer":
        """Build an Answer from a ``dns.message.Message`` (dnspython), as the adapter would."""
        question = message.question[0]
        records = []
        for rrset in message.answer:
            owner = normalize(rrset.name.to_text())
            for rd in rrset:
                if rrset.rdtype in (A, AAAA):
                    data = rd.address
                elif rrset.rdtype in (CNAME, DNAME, PTR):
                    data = normalize(rd.target.to_text())
                else:
                    data = rd.to_text()
                records.append(Record(owner, int(rrset.rdtype), int(rrset.ttl), data))
        return cls(normalize(question.name.to_text()), int(question.rdtype), int(message.rcode()),
                   Security(security), tuple(records), client, source)


class ChainTooLong(NetTrustError, ValueError):
    def __init__(self, qname: str, length: int) -> None:
        super().__init__(f"CNAME chain of {qname} is longer than {MAX_CHAIN} links")
        self.qname = qname
        self.length = length


def normalize(name: str) -> str:
    """Lower-case, strip the trailing dot; the root is ``""``.  For names that came off the wire."""
    name = name.lower()
    return name[:-1] if name.endswith(".") else name

"""Which granted addresses still carry a live connection: one kernel-filtered conntrack dump.

The ruleset ORs a mark bit into every connection a grant lets through (``ct mark set ct mark |
BIT``).  A ctnetlink dump request carrying ``CTA_MARK``/``CTA_MARK_MASK`` makes the kernel skip
every other entry while walking its table, so the reply holds only NetTrust's connections, never
the whole table.  All address families come in one dump (nfgenmsg family AF_UNSPEC).

Wire layout (a reply message, after the nfgenmsg)::

    CTA_TUPLE_ORIG (nest)  CTA_TUPLE_IP (nest)    CTA_IP_V4_DST 4 bytes | CTA_IP_V6_DST 16 bytes
                           CTA_TUPLE_PROTO (nest) CTA_PROTO_NUM u8
    CTA_PROTOINFO (nest)   CTA_PROTOINFO_TCP (nest) CTA_PROTOINFO_TCP_STATE u8

Parsing uses :mod:`..firewall.netlink`'s helpers: netlink headers in host order as netlink
defines them, every value as bytes or explicit big-endian, nothing sized by the machine's word
(the seed's MIPS64 failure).  Any failure raises :class:`ConntrackError`, which callers treat as
"liveness unknown".
"""

from __future__ import annotations

import ipaddress
import os
import struct

from ..errors import NetTrustError
from ..firewall import netlink as nl
from ..firewall.base import IPAddress

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
CTA_TUPLE_ORIG = 1
CTA_PROTOINFO = 4
CTA_MARK = 8
CTA_MARK_MASK = 21
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_DST = 2
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
IPPROTO_TCP = 6
#: TCP conntrack states that count as a live connection (SYN_SENT, SYN_RECV, ESTABLISHED,
#: FIN_WAIT, CLOSE_WAIT, SYN_SENT2); LAST_ACK, TIME_WAIT and CLOSE are endings.
TCP_LIVE_STATES = frozenset((1, 2, 3, 4, 5, 9))

#: Set by tests to stand in for a kernel without nf_conntrack (it is built in here): a fake,
#: named as such, that makes every query fail the way a missing ctnetlink does.
FAKE_UNAVAILABLE_ENV = "NETTRUST_FAKE_CONNTRACK_UNAVAILABLE"


class ConntrackError(NetTrustError):
    """Conntrack could not be asked (module missing, no permission, malformed reply)."""


def dump_request_body(mark: int, mask: int) -> bytes:
    """The attributes that make the kernel return only entries with ``mark & mask == mark``."""
    return nl.attr(CTA_MARK, nl.be32(mark)) + nl.attr(CTA_MARK_MASK, nl.be32(mask))


def parse_entry(msg: nl.Message) -> tuple[IPAddress, bool] | None:
    """One ctnetlink entry: (original destination, live?), or None when it has no address."""
    d = msg.data
    top = nl.attrs(d, msg.start + 4, msg.end)             # skip the nfgenmsg
    orig = top.get(CTA_TUPLE_ORIG)
    if orig is None:
        return None
    tup = nl.attrs(d, *orig)
    ip_span = tup.get(CTA_TUPLE_IP)
    if ip_span is None:
        return None
    ips = nl.attrs(d, *ip_span)
    if CTA_IP_V4_DST in ips:
        s, e = ips[CTA_IP_V4_DST]
        if e - s != 4:
            raise ConntrackError(f"malformed IPv4 address attribute ({e - s} bytes)")
        address: IPAddress = ipaddress.IPv4Address(d[s:e])
    elif CTA_IP_V6_DST in ips:
        s, e = ips[CTA_IP_V6_DST]
        if e - s != 16:
            raise ConntrackError(f"malformed IPv6 address attribute ({e - s} bytes)")
        address = ipaddress.IPv6Address(d[s:e])
    else:
        return None
    proto = None
    if CTA_TUPLE_PROTO in tup:
        p = nl.attrs(d, *tup[CTA_TUPLE_PROTO])
        if CTA_PROTO_NUM in p:
            proto = d[p[CTA_PROTO_NUM][0]]
    if proto != IPPROTO_TCP:
        return address, True                              # UDP and others: alive while tracked
    info = top.get(CTA_PROTOINFO)
    if info is None:
        return address, True
    tcp = nl.attrs(d, *info).get(CTA_PROTOINFO_TCP)
    if tcp is None:
        return address, True
    state = nl.attrs(d, *tcp).get(CTA_PROTOINFO_TCP_STATE)
    return address, state is None or d[state[0]] in TCP_LIVE_STATES


class Conntrack:
    """Asks the kernel for the connections carrying ``mark`` (a persistent netlink socket)."""

    def __init__(self, mark: int, mask: int | None = None) -> None:
        self.mark = mark
        self._body = dump_request_body(mark, mark if mask is None else mask)
        self._sock: nl.NetlinkSocket | None = None

    def live_destinations(self) -> dict[IPAddress, int]:
        """Original destination → number of live marked connections.  Raises ConntrackError."""
        if os.environ.get(FAKE_UNAVAILABLE_ENV):
            raise ConntrackError("conntrack is not available (test fake: "
                                 f"{FAKE_UNAVAILABLE_ENV} is set)")
        live: dict[IPAddress, int] = {}

        def on_entry(msg: nl.Message) -> None:
            entry = parse_entry(msg)
            if entry is not None and entry[1]:
                live[entry[0]] = live.get(entry[0], 0) + 1

        try:
            if self._sock is None:
                self._sock = nl.NetlinkSocket(timeout=5.0)
            self._sock.dump(IPCTNL_MSG_CT_GET, 0, self._body, on_entry,
                            subsystem=NFNL_SUBSYS_CTNETLINK)
        except ConntrackError:
            self.close()
            raise
        except (NetTrustError, OSError, ValueError, IndexError, struct.error) as exc:
            self.close()                                  # a fresh socket next time
            raise ConntrackError(f"conntrack query failed: {exc}") from None
        return live

    def probe(self) -> str | None:
        """None when conntrack answers, else why not (for ``nettrust status``)."""
        try:
            self.live_destinations()
        except ConntrackError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

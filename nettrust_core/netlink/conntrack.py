"""ctnetlink: the dump request that asks for NetTrust's connections only, and its entries.

The ruleset ORs a mark bit into every connection a grant lets through (``ct mark set ct mark |
BIT``).  A ctnetlink dump request carrying ``CTA_MARK``/``CTA_MARK_MASK`` makes the kernel skip
every other entry while walking its table, so the reply holds only NetTrust's connections, never
the whole table.  All address families come in one dump (nfgenmsg family AF_UNSPEC).

Wire layout (a reply message, after the nfgenmsg)::

    CTA_TUPLE_ORIG (nest)  CTA_TUPLE_IP (nest)    CTA_IP_V4_DST 4 bytes | CTA_IP_V6_DST 16 bytes
                           CTA_TUPLE_PROTO (nest) CTA_PROTO_NUM u8
    CTA_PROTOINFO (nest)   CTA_PROTOINFO_TCP (nest) CTA_PROTOINFO_TCP_STATE u8

Netlink headers in host order as netlink defines them, every value as bytes or explicit
big-endian, nothing sized by the machine's word (the seed's MIPS64 failure).  Malformed entries
raise :class:`ConntrackError`, which callers treat as "liveness unknown".
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import NetTrustError
from .wire import NLA_TYPE_MASK, NLATTR, Message, attr, be32, nested

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


class ConntrackError(NetTrustError):
    """Conntrack could not be asked (module missing, no permission, malformed reply)."""


def dump_request_body(mark: int, mask: int) -> bytes:
    """The attributes that make the kernel return only entries with ``mark & mask == mark``."""
    return attr(CTA_MARK, be32(mark)) + attr(CTA_MARK_MASK, be32(mask))


def _find(d: bytes, p: int, end: int, wanted: int) -> tuple[int, int] | None:
    """The payload span of the first attribute of type ``wanted`` in ``d[p:end]``.

    A plain walk instead of :func:`.wire.attrs`'s dict: a dump may hold 100k entries and this
    runs a few times per entry.  Malformed lengths raise ConntrackError.
    """
    unpack = NLATTR.unpack_from
    while end - p >= 4:
        alen, atype = unpack(d, p)
        if alen < 4 or p + alen > end:
            raise ConntrackError(f"malformed conntrack attribute (length {alen} at offset {p})")
        if atype & NLA_TYPE_MASK == wanted:
            return p + 4, p + alen
        p += (alen + 3) & ~3
    return None


def _address(d: bytes, ip: tuple[int, int], v4: int, v6: int) -> tuple[int, int] | None:
    """The span of the IPv4 or IPv6 address attribute (``v4``/``v6``) inside a CTA_TUPLE_IP."""
    return _find(d, ip[0], ip[1], v4) or _find(d, ip[0], ip[1], v6)


def _tcp_live(d: bytes, top: int, end: int) -> bool:
    """A TCP entry's state is one that still carries data (no state reported: live)."""
    info = _find(d, top, end, CTA_PROTOINFO)
    tcp = _find(d, info[0], info[1], CTA_PROTOINFO_TCP) if info else None
    state = _find(d, tcp[0], tcp[1], CTA_PROTOINFO_TCP_STATE) if tcp else None
    return state is None or d[state[0]] in TCP_LIVE_STATES


def parse_entry(msg: Message) -> tuple[bytes, bool] | None:
    """One ctnetlink entry: (original destination's 4 or 16 address bytes, live?), or None."""
    d, top, end = msg.data, msg.start + 4, msg.end        # skip the nfgenmsg
    orig = _find(d, top, end, CTA_TUPLE_ORIG)
    if orig is None:
        return None
    ip_span = _find(d, orig[0], orig[1], CTA_TUPLE_IP)
    if ip_span is None:
        return None
    span = _address(d, ip_span, CTA_IP_V4_DST, CTA_IP_V6_DST)
    if span is None or span[1] - span[0] not in (4, 16):
        return None
    address = d[span[0]:span[1]]
    proto = _find(d, orig[0], orig[1], CTA_TUPLE_PROTO)
    num = _find(d, proto[0], proto[1], CTA_PROTO_NUM) if proto else None
    if num is None or d[num[0]] != IPPROTO_TCP:
        return address, True                              # UDP and others: alive while tracked
    return address, _tcp_live(d, top, end)


# -- every connection, and deleting one (the conntrack reaction, lifecycle.connections) --------
IPCTNL_MSG_CT_DELETE = 2
CTA_TUPLE_REPLY = 2
CTA_ZONE = 18
CTA_IP_V4_SRC = 1
CTA_IP_V6_SRC = 3
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10


class Connection(NamedTuple):
    """One tracked connection's original tuple, as raw bytes (addresses 4 or 16 bytes)."""

    src: bytes
    dst: bytes
    proto: int
    sport: int | None
    dport: int | None
    live: bool
    zone: bytes | None = None        # CTA_ZONE payload as the kernel sent it (be16), if any


def parse_connection(msg: Message) -> Connection | None:
    """Any ctnetlink entry as a :class:`Connection`, or None when it has no usable tuple."""
    d, top, end = msg.data, msg.start + 4, msg.end
    orig = _find(d, top, end, CTA_TUPLE_ORIG)
    if orig is None:
        return None
    ip_span = _find(d, orig[0], orig[1], CTA_TUPLE_IP)
    if ip_span is None:
        return None
    src = _address(d, ip_span, CTA_IP_V4_SRC, CTA_IP_V6_SRC)
    dst = _address(d, ip_span, CTA_IP_V4_DST, CTA_IP_V6_DST)
    if src is None or dst is None or src[1] - src[0] not in (4, 16):
        return None
    proto = _find(d, orig[0], orig[1], CTA_TUPLE_PROTO)
    num = _find(d, proto[0], proto[1], CTA_PROTO_NUM) if proto else None
    if proto is None or num is None:
        return None
    sp = _find(d, proto[0], proto[1], CTA_PROTO_SRC_PORT)
    dp = _find(d, proto[0], proto[1], CTA_PROTO_DST_PORT)
    live = d[num[0]] != IPPROTO_TCP or _tcp_live(d, top, end)
    zone = _find(d, top, end, CTA_ZONE)
    return Connection(d[src[0]:src[1]], d[dst[0]:dst[1]], d[num[0]],
                      int.from_bytes(d[sp[0]:sp[0] + 2], "big") if sp else None,
                      int.from_bytes(d[dp[0]:dp[0] + 2], "big") if dp else None,
                      live, d[zone[0]:zone[0] + 2] if zone else None)


def delete_request(conn: Connection) -> tuple[int, bytes]:
    """(nfgenmsg family, body) of an IPCTNL_MSG_CT_DELETE for this original tuple."""
    v4 = len(conn.src) == 4
    ips = (attr(CTA_IP_V4_SRC if v4 else CTA_IP_V6_SRC, conn.src)
           + attr(CTA_IP_V4_DST if v4 else CTA_IP_V6_DST, conn.dst))
    proto = attr(CTA_PROTO_NUM, bytes((conn.proto,)))
    if conn.sport is not None:
        proto += attr(CTA_PROTO_SRC_PORT, conn.sport.to_bytes(2, "big"))
    if conn.dport is not None:
        proto += attr(CTA_PROTO_DST_PORT, conn.dport.to_bytes(2, "big"))
    body = nested(CTA_TUPLE_ORIG, nested(CTA_TUPLE_IP, ips), nested(CTA_TUPLE_PROTO, proto))
    if conn.zone is not None:
        body += attr(CTA_ZONE, conn.zone)
    return (NFPROTO_IPV4 if v4 else NFPROTO_IPV6), body

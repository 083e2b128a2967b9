"""nfnetlink_log (NFLOG): the messages that bind a group, and the logged packets it delivers.

The ruleset's last rules are ``limit rate R/second log group G prefix "nettrust"`` followed by the
reject/drop; the kernel copies each logged packet's headers to whoever bound group G.  Decoding
reads the IP header of the copied packet byte by byte and the netlink attributes with
:mod:`.wire`'s helpers (big-endian values, host-order netlink headers): nothing depends on the
machine's word size or byte order.

Config message (to subsystem NFNL_SUBSYS_ULOG, nfgenmsg res_id = group, big-endian)::

    NFULA_CFG_CMD   u8 command (1 = bind)
    NFULA_CFG_MODE  be32 copy_range, u8 copy_mode (2 = packet), u8 pad

Packet message attributes used: NFULA_PACKET_HDR (be16 hw_protocol, u8 hook), NFULA_PREFIX,
NFULA_UID / NFULA_GID (be32, present for local sockets), NFULA_PAYLOAD (from the IP header).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import NamedTuple

from .wire import (HOOK_NAMES, NLM_F_ACK, NLM_F_REQUEST, Message, attr, attr_be32, attr_str, attrs,
                   nlmsg)

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_UID = 11
NFULA_GID = 14
COPY_RANGE = 64                 # IPv6 header (40) + ports: all we read
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PORTS = struct.Struct("!HH")
_MODE = struct.Struct("!IBx")   # nfulnl_msg_config_mode: 6 bytes, padded by attr() to 8


class Attempt(NamedTuple):
    """One refused packet as logged: who tried to reach what."""

    source: str
    destination: str
    protocol: str
    port: int | None
    hook: str
    prefix: str
    uid: int | None
    gid: int | None


def config_message(group: int, attributes: bytes, seq: int = 1) -> bytes:
    return nlmsg(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK,
                 seq, socket.AF_UNSPEC, attributes, res_id=group)


def bind_messages(group: int) -> list[bytes]:
    return [config_message(group, attr(NFULA_CFG_CMD, bytes((NFULNL_CFG_CMD_BIND,))), 1),
            config_message(group, attr(NFULA_CFG_MODE, _MODE.pack(COPY_RANGE, NFULNL_COPY_PACKET)
                                       + b"\0\0"), 2)]


def parse_packet(msg: Message) -> Attempt | None:
    """One NFULNL_MSG_PACKET; None when its payload is not an IPv4/IPv6 header we can read."""
    if msg.type != (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET):
        return None
    d = msg.data
    a = attrs(d, msg.start + 4, msg.end)
    span = a.get(NFULA_PAYLOAD)
    if span is None:
        return None
    pkt = d[span[0]:span[1]]
    hook = ""
    if NFULA_PACKET_HDR in a and a[NFULA_PACKET_HDR][1] - a[NFULA_PACKET_HDR][0] >= 3:
        hook = HOOK_NAMES.get(d[a[NFULA_PACKET_HDR][0] + 2], "")
    uid = attr_be32(d, a.get(NFULA_UID))
    gid = attr_be32(d, a.get(NFULA_GID))
    prefix = attr_str(d, a.get(NFULA_PREFIX)) or ""
    parsed = parse_ip(pkt)
    if parsed is None:
        return None
    src, dst, proto, port = parsed
    return Attempt(src, dst, PROTO_NAMES.get(proto, str(proto)), port, hook, prefix, uid, gid)


def parse_ip(pkt: bytes) -> tuple[str, str, int, int | None] | None:
    """(source, destination, protocol number, destination port or None) of an IP packet."""
    if len(pkt) < 1:
        return None
    version = pkt[0] >> 4
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if version == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 0x0F) * 4
        proto = pkt[9]
        src, dst = ipaddress.IPv4Address(pkt[12:16]), ipaddress.IPv4Address(pkt[16:20])
        l4 = ihl if ihl >= 20 else None
    elif version == 6 and len(pkt) >= 40:
        proto = pkt[6]
        src, dst = ipaddress.IPv6Address(pkt[8:24]), ipaddress.IPv6Address(pkt[24:40])
        l4 = 40
    else:
        return None
    port = None
    if proto in (6, 17, 132, 136) and l4 is not None and len(pkt) >= l4 + 4:
        port = _PORTS.unpack_from(pkt, l4)[1]
    return str(src), str(dst), proto, port

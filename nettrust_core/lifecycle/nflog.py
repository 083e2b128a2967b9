"""Packets the refusing rule logged: an nfnetlink_log (NFLOG) group, bound and decoded.

The ruleset's last rules are ``limit rate R/second log group G prefix "nettrust"`` followed by the
reject/drop; the kernel copies each logged packet's headers to whoever bound group G.  Decoding
reads the IP header of the copied packet byte by byte and the netlink attributes with
:mod:`..firewall.netlink`'s helpers (big-endian values, host-order netlink headers): nothing
depends on the machine's word size or byte order.

Config message (to subsystem NFNL_SUBSYS_ULOG, nfgenmsg res_id = group, big-endian)::

    NFULA_CFG_CMD   u8 command (1 = bind)
    NFULA_CFG_MODE  be32 copy_range, u8 copy_mode (2 = packet), u8 pad

Packet message attributes used: NFULA_PACKET_HDR (be16 hw_protocol, u8 hook), NFULA_PREFIX,
NFULA_UID / NFULA_GID (be32, present for local sockets), NFULA_PAYLOAD (from the IP header).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import NamedTuple

from ..errors import NetTrustError
from ..firewall import netlink as nl

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
HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PORTS = struct.Struct("!HH")
_MODE = struct.Struct("!IBx")   # nfulnl_msg_config_mode: 6 bytes, padded by attr() to 8


class NflogError(NetTrustError):
    """The NFLOG group could not be bound or read (``errno`` when the kernel said why)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


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
    return nl.nlmsg(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                    seq, socket.AF_UNSPEC, attributes, res_id=group)


def bind_messages(group: int) -> list[bytes]:
    return [config_message(group, nl.attr(NFULA_CFG_CMD, bytes((NFULNL_CFG_CMD_BIND,))), 1),
            config_message(group, nl.attr(NFULA_CFG_MODE, _MODE.pack(COPY_RANGE, NFULNL_COPY_PACKET)
                                          + b"\0\0"), 2)]


def parse_packet(msg: nl.Message) -> Attempt | None:
    """One NFULNL_MSG_PACKET; None when its payload is not an IPv4/IPv6 header we can read."""
    if msg.type != (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET):
        return None
    d = msg.data
    a = nl.attrs(d, msg.start + 4, msg.end)
    span = a.get(NFULA_PAYLOAD)
    if span is None:
        return None
    pkt = d[span[0]:span[1]]
    hook = ""
    if NFULA_PACKET_HDR in a and a[NFULA_PACKET_HDR][1] - a[NFULA_PACKET_HDR][0] >= 3:
        hook = HOOK_NAMES.get(d[a[NFULA_PACKET_HDR][0] + 2], "")
    uid = nl.attr_be32(d, a.get(NFULA_UID))
    gid = nl.attr_be32(d, a.get(NFULA_GID))
    prefix = nl.attr_str(d, a.get(NFULA_PREFIX)) or ""
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


class NflogReader:
    """A netlink socket bound to one NFLOG group; :meth:`read` waits at most ``timeout``."""

    def __init__(self, group: int, timeout: float = 0.5) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 nl.NETLINK_NETFILTER)
        except OSError as exc:
            raise NflogError(f"cannot open a netfilter netlink socket: {exc.strerror}") from None
        self._sock = sock
        self._buf = bytearray(1 << 18)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, 0))
            sock.settimeout(2.0)
            for request in bind_messages(group):
                sock.send(request)
                self._expect_ack(group)
            sock.settimeout(timeout)
        except (OSError, NetTrustError) as exc:
            sock.close()
            raise NflogError(f"cannot bind NFLOG group {group}: {exc}",
                             getattr(exc, "errno", None)) from None
        #: Logged packets the kernel could not queue for us (socket buffer full).
        self.overruns = 0

    def _expect_ack(self, group: int) -> None:
        n = self._sock.recv_into(self._buf)
        for m in nl.messages(bytes(self._buf[:n])):
            if m.type == nl.NLMSG_ERROR:
                err, _off, text = nl.parse_error(m)
                if err:
                    busy = " (another process has bound this group)" if err == errno.EPERM else ""
                    raise NflogError((text or os.strerror(err)) + busy, err)

    def read(self) -> list[Attempt]:
        """The attempts of one datagram; [] when nothing came within the timeout."""
        try:
            n = self._sock.recv_into(self._buf)
        except (socket.timeout, BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            if exc.errno == 105:                          # ENOBUFS: the kernel dropped some
                self.overruns += 1
                return []
            raise NflogError(f"NFLOG receive failed: {exc.strerror}") from None
        out = []
        for m in nl.messages(bytes(self._buf[:n])):
            attempt = parse_packet(m)
            if attempt is not None:
                out.append(attempt)
        return out

    def close(self) -> None:
        self._sock.close()

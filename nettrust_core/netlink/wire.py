"""Netlink and nfnetlink framing: headers, attributes, error messages; encode and decode.

Header fields are host byte order because netlink defines them so; every netfilter value (keys,
timeouts, priorities, counters) is explicit big-endian.  Nothing depends on the machine's word size.

Wire layout (every item padded to a multiple of 4 bytes)::

    nlmsghdr   len:u32 type:u16 flags:u16 seq:u32 portid:u32      host order
    nfgenmsg   family:u8 version:u8 res_id:be16                    every nfnetlink message
    nlattr     len:u16 type:u16 payload…                           len counts the 4-byte header;
                                                                   type | 0x8000 marks a nest

An nfnetlink message type is ``subsystem << 8 | message``.  Malformed input raises
:class:`~nettrust_core.errors.NetlinkError`, never an IndexError or struct.error.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ..errors import NetlinkError

# -- constants (linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter.h) --------------------
NETLINK_NETFILTER: Final = 12
SOL_NETLINK: Final = 270
NETLINK_CAP_ACK: Final = 10            # errors do not echo our request back
NETLINK_EXT_ACK: Final = 11            # errors carry a text and the offset of the offending attribute

NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 0x01
NLM_F_MULTI: Final = 0x02
NLM_F_ACK: Final = 0x04
NLM_F_DUMP_INTR: Final = 0x10
NLM_F_DUMP: Final = 0x300
NLM_F_CREATE: Final = 0x400
NLM_F_CAPPED: Final = 0x100            # in NLMSG_ERROR: only the request's header is echoed
NLM_F_ACK_TLVS: Final = 0x200          # in NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG: Final = 1
NLMSGERR_ATTR_OFFS: Final = 2
NLA_F_NESTED: Final = 0x8000
NLA_TYPE_MASK: Final = 0x3FFF

NFNL_SUBSYS_NFTABLES: Final = 10
NFNL_MSG_BATCH_BEGIN: Final = 0x10
NFNL_MSG_BATCH_END: Final = 0x11
NFPROTO_UNSPEC: Final = 0
NFPROTO_INET: Final = 1
FAMILY_NAMES = {1: "inet", 2: "ip", 10: "ip6"}
#: Netfilter's hooks by number (NF_INET_*), as nf_tables chains and NFLOG packets carry them.
HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}

#: One attribute's payload; its length field is 16 bits.
MAX_ATTR_PAYLOAD: Final = 0xFFFF - 4

NLMSGHDR = struct.Struct("=IHHII")      # host order: netlink's own header
NFGENMSG = struct.Struct("!BBH")        # family, version, res_id (big-endian)
NLATTR = struct.Struct("=HH")           # host order: attribute length and type
_ERRNO = struct.Struct("=i")
U32_HOST = struct.Struct("=I")
BE32 = struct.Struct("!I")
_BE32S = struct.Struct("!i")
BE64 = struct.Struct("!Q")
HDR_LEN = NLMSGHDR.size + NFGENMSG.size     # 20: where the attributes of a message start


# -- encoding ---------------------------------------------------------------------------------------
def attr(atype: int, payload: bytes) -> bytes:
    """One attribute: ``len:u16 type:u16`` (host order), the payload, zero padding to 4 bytes."""
    n = 4 + len(payload)
    return NLATTR.pack(n, atype) + payload + b"\0" * (-n & 3)


def nested(atype: int, *parts: bytes) -> bytes:
    """An attribute whose payload is other attributes (flagged NLA_F_NESTED, as nft does)."""
    return attr(atype | NLA_F_NESTED, b"".join(parts))


def strz(text: str) -> bytes:
    """A NUL-terminated string payload (names of tables, sets, chains, objects)."""
    return text.encode() + b"\0"


def be32(value: int) -> bytes:
    return BE32.pack(value)


def be64(value: int) -> bytes:
    return BE64.pack(value)


def nlmsg(mtype: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """A netlink message with an nfgenmsg header; ``mtype`` is the full 16-bit type."""
    return (NLMSGHDR.pack(HDR_LEN + len(body), mtype, flags, seq, 0)
            + NFGENMSG.pack(family, 0, res_id) + body)


# -- decoding ---------------------------------------------------------------------------------------
class Message(NamedTuple):
    """One received netlink message; ``start``/``end`` delimit its payload inside ``data``."""

    type: int
    flags: int
    seq: int
    data: bytes
    start: int
    end: int


def messages(data: bytes) -> list[Message]:
    """Split one received datagram into messages; a truncated or malformed one raises.

    A netlink datagram always holds whole messages (a receive buffer too small for one is detected
    with MSG_TRUNC), so a message cut short here means corruption, never a partial read to resume.
    """
    out = []
    off, end = 0, len(data)
    unpack = NLMSGHDR.unpack_from
    while end - off >= 16:
        mlen, mtype, flags, seq, _pid = unpack(data, off)
        if mlen < 16 or off + mlen > end:
            raise NetlinkError(f"malformed netlink message (length {mlen} at offset {off} of {end})")
        out.append(Message(mtype, flags, seq, data, off + 16, off + mlen))
        off += (mlen + 3) & ~3
    return out


def attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """The attributes in ``data[start:end]`` as ``{type: (payload start, payload end)}``."""
    out = {}
    unpack = NLATTR.unpack_from
    while end - start >= 4:
        alen, atype = unpack(data, start)
        if alen < 4 or start + alen > end:
            raise NetlinkError(f"malformed netlink attribute (length {alen} at offset {start})")
        out[atype & NLA_TYPE_MASK] = (start + 4, start + alen)
        start += (alen + 3) & ~3
    return out


def attr_str(data: bytes, span: tuple[int, int] | None) -> str | None:
    if span is None:
        return None
    return data[span[0]:span[1]].split(b"\0", 1)[0].decode("utf-8", "replace")


def attr_be32(data: bytes, span: tuple[int, int] | None) -> int | None:
    return None if span is None else BE32.unpack_from(data, span[0])[0]


def attr_be32s(data: bytes, span: tuple[int, int] | None) -> int | None:
    return None if span is None else _BE32S.unpack_from(data, span[0])[0]


def attr_be64(data: bytes, span: tuple[int, int] | None) -> int | None:
    return None if span is None else BE64.unpack_from(data, span[0])[0]


def list_items(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Payload spans of the items of a list attribute (all of type NFTA_LIST_ELEM, so no dict)."""
    out = []
    while end - start >= 4:
        alen = NLATTR.unpack_from(data, start)[0]
        if alen < 4 or start + alen > end:
            raise NetlinkError(f"malformed netlink list item (length {alen} at offset {start})")
        out.append((start + 4, start + alen))
        start += (alen + 3) & ~3
    return out


def parse_error(msg: Message) -> tuple[int, int | None, str | None]:
    """An ``NLMSG_ERROR`` payload: ``(errno, bad attribute offset, kernel text)``; errno 0 = ack.

    Layout: ``error:s32`` (negative errno), the request's nlmsghdr (the whole request unless
    NLM_F_CAPPED), then with NLM_F_ACK_TLVS the extended-ack attributes.
    """
    data, p = msg.data, msg.start
    if msg.end - p < 4 + 16:
        raise NetlinkError("malformed netlink error message")
    err = -_ERRNO.unpack_from(data, p)[0]
    offset = text = None
    if msg.flags & NLM_F_ACK_TLVS:
        echoed = 16 if msg.flags & NLM_F_CAPPED else U32_HOST.unpack_from(data, p + 4)[0]
        tlv = attrs(data, p + 4 + ((echoed + 3) & ~3), msg.end)
        text = attr_str(data, tlv.get(NLMSGERR_ATTR_MSG))
        if NLMSGERR_ATTR_OFFS in tlv:
            offset = U32_HOST.unpack_from(data, tlv[NLMSGERR_ATTR_OFFS][0])[0]
    return err, offset, text

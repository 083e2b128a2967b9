"""A minimal nf_tables netlink client: set elements in, set elements and state out.

Standard library only (``socket``, ``struct``): this module runs inside Unbound on every answer.
Header fields are host byte order because netlink defines them so; every nf_tables value (keys,
timeouts, priorities, counters) is explicit big-endian.  Nothing depends on the machine's word size.

Wire layout (every item padded to a multiple of 4 bytes)::

    nlmsghdr   len:u32 type:u16 flags:u16 seq:u32 portid:u32      host order
    nfgenmsg   family:u8 version:u8 res_id:be16                    nf_tables messages only
    nlattr     len:u16 type:u16 payload…                           len counts the 4-byte header;
                                                                   type | 0x8000 marks a nest

A write is one batch: ``BATCH_BEGIN (res_id = NFNL_SUBSYS_NFTABLES)``, the nf_tables messages,
``BATCH_END``; the kernel applies it as one transaction.  An element looks like::

    NFTA_LIST_ELEM (nest)
      NFTA_SET_ELEM_KEY (nest)  NFTA_DATA_VALUE  4 or 16 address bytes
      NFTA_SET_ELEM_TIMEOUT     be64 ms          the timeout the element is (re)added with
      NFTA_SET_ELEM_EXPIRATION  be64 ms          its remaining life: on kernel 6.18 re-adding an
                                                 element with an unchanged timeout alone does not
                                                 restart it, an explicit expiration does
      NFTA_SET_ELEM_USERDATA    nft udata TLVs   type:u8 len:u8 value; comment = type 0, NUL-ended

The kernel processes a batch synchronously inside ``send()``; its answers (an ``NLMSG_ERROR`` per
failed message, an ack for the last one, a commit failure against the batch-begin sequence number)
are queued on the socket by the time ``send()`` returns.  Replies are matched by sequence number, so
leftovers of an earlier, interrupted exchange are skipped.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
import threading
from typing import Callable, NamedTuple, Sequence

from ..errors import FirewallError
from .base import COMMENT_MAX

# -- constants (linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h) ----------
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10            # errors do not echo our request back
NETLINK_EXT_ACK = 11            # errors carry a text and the offset of the offending attribute

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100            # in NLMSG_ERROR: only the request's header is echoed
NLM_F_ACK_TLVS = 0x200          # in NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFPROTO_UNSPEC = 0
NFPROTO_INET = 1
FAMILY_NAMES = {1: "inet", 2: "ip", 10: "ip6"}

NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_DELTABLE = 2
NFT_MSG_GETCHAIN = 4
NFT_MSG_GETRULE = 7
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_DELSETELEM = 14
NFT_MSG_GETOBJ = 19
NFT_MSG_DESTROYSETELEM = 30     # like DELSETELEM, but an absent element is not an error (6.3+)

NFTA_TABLE_NAME = 1
NFTA_TABLE_FLAGS = 2
NFT_TABLE_F_DORMANT = 0x1
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3
NFTA_CHAIN_HOOK = 4
NFTA_CHAIN_POLICY = 5
NFTA_CHAIN_TYPE = 7
NFTA_HOOK_HOOKNUM = 1
NFTA_HOOK_PRIORITY = 2
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_EXPR_NAME = 1
NFTA_OBJ_TABLE = 1
NFTA_OBJ_NAME = 2
NFTA_OBJ_TYPE = 3
NFTA_OBJ_DATA = 4
NFT_OBJECT_COUNTER = 1
NFTA_COUNTER_BYTES = 1
NFTA_COUNTER_PACKETS = 2

NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_FLAGS = 3
NFTA_SET_ELEM_TIMEOUT = 4
NFTA_SET_ELEM_EXPIRATION = 5
NFTA_SET_ELEM_USERDATA = 6
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 0x1
NFTNL_UDATA_SET_ELEM_COMMENT = 0

#: One message's element list is a single attribute, whose length field is 16 bits.
MAX_ATTR_PAYLOAD = 0xFFFF - 4

_NLMSGHDR = struct.Struct("=IHHII")     # host order: netlink's own header
_NFGENMSG = struct.Struct("!BBH")       # family, version, res_id (big-endian)
_NLATTR = struct.Struct("=HH")          # host order: attribute length and type
_ERRNO = struct.Struct("=i")
_U32_HOST = struct.Struct("=I")
_BE32 = struct.Struct("!I")
_BE32S = struct.Struct("!i")
_BE64 = struct.Struct("!Q")
_HDR_LEN = _NLMSGHDR.size + _NFGENMSG.size    # 20: where the attributes of a message start


# -- encoding ---------------------------------------------------------------------------------------
def attr(atype: int, payload: bytes) -> bytes:
    """One attribute: ``len:u16 type:u16`` (host order), the payload, zero padding to 4 bytes."""
    n = 4 + len(payload)
    return _NLATTR.pack(n, atype) + payload + b"\0" * (-n & 3)


def nested(atype: int, *parts: bytes) -> bytes:
    """An attribute whose payload is other attributes (flagged NLA_F_NESTED, as nft does)."""
    return attr(atype | NLA_F_NESTED, b"".join(parts))


def strz(text: str) -> bytes:
    """A NUL-terminated string payload (names of tables, sets, chains, objects)."""
    return text.encode() + b"\0"


def be32(value: int) -> bytes:
    return _BE32.pack(value)


def be64(value: int) -> bytes:
    return _BE64.pack(value)


def nlmsg(mtype: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """A netlink message with an nfgenmsg header; ``mtype`` is the full 16-bit type."""
    return (_NLMSGHDR.pack(_HDR_LEN + len(body), mtype, flags, seq, 0)
            + _NFGENMSG.pack(family, 0, res_id) + body)


def nft_type(msg: int) -> int:
    """The netlink message type of an nf_tables message: subsystem in the high byte."""
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def comment_udata(comment: str) -> bytes:
    """nft's userdata TLV for an element comment: ``type=0 len value\\0``; b"" when empty.

    Cut to ``COMMENT_MAX`` bytes at a UTF-8 character boundary, NULs removed (nft stops at one).
    """
    raw = comment.encode("utf-8", "replace").replace(b"\0", b"")
    if len(raw) > COMMENT_MAX:
        raw = raw[:COMMENT_MAX].decode("utf-8", "ignore").encode("utf-8")
    if not raw:
        return b""
    return bytes((NFTNL_UDATA_SET_ELEM_COMMENT, len(raw) + 1)) + raw + b"\0"


_KEY4_HDR = _NLATTR.pack(12, NFTA_SET_ELEM_KEY | NLA_F_NESTED) + _NLATTR.pack(8, NFTA_DATA_VALUE)
_KEY16_HDR = _NLATTR.pack(24, NFTA_SET_ELEM_KEY | NLA_F_NESTED) + _NLATTR.pack(20, NFTA_DATA_VALUE)
_TIMEOUTS = struct.Struct("=HH8sHH8s")


def element(key: bytes, timeout_ms: int | None = None, udata: bytes = b"") -> bytes:
    """One ``NFTA_LIST_ELEM``: key, and with ``timeout_ms`` both timeout and expiration.

    ``udata`` is ready-made userdata (see :func:`comment_udata`).  Keys of 4 and 16 bytes (IPv4,
    IPv6) take a prebuilt header; any other length is encoded generically.
    """
    if len(key) == 4:
        body = _KEY4_HDR + key
    elif len(key) == 16:
        body = _KEY16_HDR + key
    else:
        body = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
    if timeout_ms is not None:
        ms = _BE64.pack(timeout_ms)
        body += _TIMEOUTS.pack(12, NFTA_SET_ELEM_TIMEOUT, ms, 12, NFTA_SET_ELEM_EXPIRATION, ms)
    if udata:
        body += attr(NFTA_SET_ELEM_USERDATA, udata)
    return _NLATTR.pack(4 + len(body), NFTA_LIST_ELEM | NLA_F_NESTED) + body


def setelem_head(table: str, set_name: str) -> bytes:
    """The attributes naming the set, which precede the element list in NEW/DEL/GETSETELEM."""
    return attr(NFTA_SET_ELEM_LIST_TABLE, strz(table)) + attr(NFTA_SET_ELEM_LIST_SET, strz(set_name))


def setelem_bodies(head: bytes, elements: Sequence[bytes]) -> list[tuple[bytes, int, int]]:
    """The bodies of NEW/DELSETELEM messages carrying ``elements`` (encoded by :func:`element`).

    ``head`` comes from :func:`setelem_head`.  Returns ``(body, first, stop)``: the message holds
    ``elements[first:stop]``.  An element list is one attribute with a 16-bit length, so a long
    list is spread over several messages (of the same batch).
    """
    out = []
    i, n = 0, len(elements)
    while i < n:
        first, size = i, 0
        while i < n and (size + len(elements[i]) <= MAX_ATTR_PAYLOAD or i == first):
            size += len(elements[i])
            i += 1
        out.append((head + _NLATTR.pack(4 + size, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED)
                    + b"".join(elements[first:i]), first, i))
    return out


def element_at(head: bytes, elements: Sequence[bytes], offset: int) -> int | None:
    """Which of ``elements`` (one message's, in order) sits at byte ``offset`` of the message.

    The kernel's extended ack names the refused element by this offset (from the nlmsghdr).
    """
    pos = _HDR_LEN + len(head) + 4
    for i, elem in enumerate(elements):
        if pos <= offset < pos + len(elem):
            return i
        pos += len(elem)
    return None


# -- decoding ---------------------------------------------------------------------------------------
class Message(NamedTuple):
    """One received netlink message; ``start``/``end`` delimit its payload inside ``data``."""

    type: int
    flags: int
    seq: int
    data: bytes
    start: int
    end: int


class Element(NamedTuple):
    """One set element as dumped by the kernel (times in milliseconds, ``None`` when absent)."""

    key: bytes
    timeout_ms: int | None
    expiration_ms: int | None
    comment: str
    flags: int


def messages(data: bytes) -> list[Message]:
    """Split one received datagram into messages; a truncated or malformed one raises.

    A netlink datagram always holds whole messages (a receive buffer too small for one is detected
    with MSG_TRUNC), so a message cut short here means corruption, never a partial read to resume.
    """
    out = []
    off, end = 0, len(data)
    unpack = _NLMSGHDR.unpack_from
    while end - off >= 16:
        mlen, mtype, flags, seq, _pid = unpack(data, off)
        if mlen < 16 or off + mlen > end:
            raise FirewallError(f"malformed netlink message (length {mlen} at offset {off} of {end})")
        out.append(Message(mtype, flags, seq, data, off + 16, off + mlen))
        off += (mlen + 3) & ~3
    return out


def attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """The attributes in ``data[start:end]`` as ``{type: (payload start, payload end)}``."""
    out = {}
    unpack = _NLATTR.unpack_from
    while end - start >= 4:
        alen, atype = unpack(data, start)
        if alen < 4 or start + alen > end:
            raise FirewallError(f"malformed netlink attribute (length {alen} at offset {start})")
        out[atype & NLA_TYPE_MASK] = (start + 4, start + alen)
        start += (alen + 3) & ~3
    return out


def attr_str(data: bytes, span: tuple[int, int] | None) -> str | None:
    if span is None:
        return None
    return data[span[0]:span[1]].split(b"\0", 1)[0].decode("utf-8", "replace")


def attr_be32(data: bytes, span: tuple[int, int] | None) -> int | None:
    return None if span is None else _BE32.unpack_from(data, span[0])[0]


def attr_be32s(data: bytes, span: tuple[int, int] | None) -> int | None:
    return None if span is None else _BE32S.unpack_from(data, span[0])[0]


def attr_be64(data: bytes, span: tuple[int, int] | None) -> int | None:
    return None if span is None else _BE64.unpack_from(data, span[0])[0]


def list_items(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Payload spans of the items of a list attribute (all of type NFTA_LIST_ELEM, so no dict)."""
    out = []
    while end - start >= 4:
        alen = _NLATTR.unpack_from(data, start)[0]
        if alen < 4 or start + alen > end:
            raise FirewallError(f"malformed netlink list item (length {alen} at offset {start})")
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
        raise FirewallError("malformed netlink error message")
    err = -_ERRNO.unpack_from(data, p)[0]
    offset = text = None
    if msg.flags & NLM_F_ACK_TLVS:
        echoed = 16 if msg.flags & NLM_F_CAPPED else _U32_HOST.unpack_from(data, p + 4)[0]
        tlv = attrs(data, p + 4 + ((echoed + 3) & ~3), msg.end)
        text = attr_str(data, tlv.get(NLMSGERR_ATTR_MSG))
        if NLMSGERR_ATTR_OFFS in tlv:
            offset = _U32_HOST.unpack_from(data, tlv[NLMSGERR_ATTR_OFFS][0])[0]
    return err, offset, text


def parse_comment(udata: bytes) -> str:
    """The comment in nft's element userdata TLVs (type 0), or ""."""
    off = 0
    while off + 2 <= len(udata):
        utype, ulen = udata[off], udata[off + 1]
        if utype == NFTNL_UDATA_SET_ELEM_COMMENT:
            return udata[off + 2:off + 2 + ulen].split(b"\0", 1)[0].decode("utf-8", "replace")
        off += 2 + ulen
    return ""


def parse_elements(msg: Message, out: list[Element] | None = None) -> list[Element]:
    """The elements of one NEWSETELEM message (a GETSETELEM dump part), appended to ``out``."""
    out = [] if out is None else out
    data = msg.data
    top = attrs(data, msg.start + 4, msg.end)          # skip nfgenmsg
    span = top.get(NFTA_SET_ELEM_LIST_ELEMENTS)
    if span is None:
        return out
    unpack, be64_at = _NLATTR.unpack_from, _BE64.unpack_from
    off, end = span
    while end - off >= 4:
        elen = unpack(data, off)[0]
        if elen < 4 or off + elen > end:
            raise FirewallError(f"malformed set element (length {elen} at offset {off})")
        key = b""
        timeout = expiration = None
        comment, flags = "", 0
        p, e = off + 4, off + elen
        while e - p >= 4:
            alen, atype = unpack(data, p)
            if alen < 4 or p + alen > e:
                raise FirewallError(f"malformed set element attribute (length {alen} at offset {p})")
            atype &= NLA_TYPE_MASK
            if atype == NFTA_SET_ELEM_KEY:        # nest holding NFTA_DATA_VALUE
                vlen = min(unpack(data, p + 4)[0], alen - 4)
                key = data[p + 8:p + 4 + vlen]
            elif atype == NFTA_SET_ELEM_TIMEOUT:
                timeout = be64_at(data, p + 4)[0]
            elif atype == NFTA_SET_ELEM_EXPIRATION:
                expiration = be64_at(data, p + 4)[0]
            elif atype == NFTA_SET_ELEM_USERDATA:
                comment = parse_comment(data[p + 4:p + alen])
            elif atype == NFTA_SET_ELEM_FLAGS:
                flags = _BE32.unpack_from(data, p + 4)[0]
            p += (alen + 3) & ~3
        out.append(Element(key, timeout, expiration, comment, flags))
        off += (elen + 3) & ~3
    return out


def _set_rcvtimeo(sock: socket.socket, timeout: float) -> None:
    """SO_RCVTIMEO takes a C ``struct timeval``: two longs, or two 64-bit fields on 32-bit
    systems built with a 64-bit time_t; the kernel refuses the wrong size, so try both."""
    sec, usec = int(timeout), int((timeout - int(timeout)) * 1e6)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", sec, usec))
    except OSError as exc:
        if exc.errno != errno_mod.EINVAL:
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@qq", sec, usec))


# -- the socket -------------------------------------------------------------------------------------
class Failure(NamedTuple):
    """One message of a batch the kernel refused: its index (-1: the batch itself), errno, where."""

    index: int
    errno: int
    offset: int | None
    text: str | None

    def __str__(self) -> str:
        return self.text or os.strerror(self.errno)


_MSG_TRUNC = int(socket.MSG_TRUNC)
_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_ACK = struct.Struct("=IHHIIi")         # an NLMSG_ERROR header and its error field
_BATCH_NFGEN = _NFGENMSG.pack(NFPROTO_UNSPEC, 0, NFNL_SUBSYS_NFTABLES)


class NetlinkSocket:
    """A persistent NETLINK_NETFILTER socket; one exchange at a time (a lock spans send+receive).

    ``timeout`` bounds a wait for the kernel's answer (it never takes long: batches are processed
    inside ``send()``), so a lost reply surfaces as an error instead of a hang.
    """

    def __init__(self, timeout: float = 5.0, bufsize: int = 1 << 20, *, sock=None) -> None:
        if sock is None:
            sock = self._open(timeout, bufsize)
        self._sock = sock                   # tests pass a stand-in with send/recv_into/getsockopt
        self._lock = threading.Lock()
        self._seq = 0
        self._buf = bytearray(1 << 16)      # a dump part is at most 32 KiB
        self._heads: dict[tuple[str, str], bytes] = {}
        #: The largest batch the socket accepts (the kernel refuses datagrams above sndbuf - 32).
        self.max_batch = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 64

    @staticmethod
    def _open(timeout: float, bufsize: int) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_NETFILTER)
        except OSError as exc:
            raise FirewallError(f"cannot open an nf_tables netlink socket: {exc.strerror}",
                                errno=exc.errno) from None
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, bufsize)   # capped by net.core.*mem_max
            _set_rcvtimeo(sock, timeout)
            sock.bind((0, 0))
        except OSError as exc:
            sock.close()
            raise FirewallError(f"cannot set up the netlink socket: {exc.strerror}",
                                errno=exc.errno) from None
        return sock

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self, count: int) -> int:
        """Reserve ``count`` consecutive sequence numbers (never 0, wrapping at 2**32)."""
        if self._seq + count >= 0xFFFFFFFF:
            self._seq = 0
        first = self._seq + 1
        self._seq += count
        return first

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise FirewallError(f"netlink send failed: {exc.strerror}", errno=exc.errno) from None

    def _recv_into(self, flags: int = 0) -> int:
        """Receive one datagram into the buffer; its length.  BlockingIOError: nothing came."""
        try:
            n = self._sock.recv_into(self._buf, len(self._buf), flags | _MSG_TRUNC)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise FirewallError(f"netlink receive failed: {exc.strerror}", errno=exc.errno) from None
        if n > len(self._buf):
            raise FirewallError(f"netlink datagram of {n} bytes truncated")
        return n

    def _recv(self, what: str, flags: int = 0) -> list[Message]:
        try:
            n = self._recv_into(flags)
        except BlockingIOError:
            if flags:
                return []
            raise FirewallError(f"no answer from the kernel to a netlink {what}",
                                errno=errno_mod.ETIMEDOUT) from None
        return messages(bytes(self._buf[:n]))

    # -- writes -------------------------------------------------------------------------------
    def transact(self, requests: Sequence[tuple[int, int, int, bytes]]) -> list[Failure]:
        """Send ``(msg type, nlmsg flags, family, body)`` requests as one batch; return failures.

        The last request asks for an ack; any other request is answered only when it fails, and
        a failed commit is answered against the batch-begin message (``index`` -1).
        """
        n = len(requests)
        if n == 0:
            return []
        pack = _NLMSGHDR.pack
        with self._lock:
            first = self._next_seq(n + 2)
            last = first + n                   # sequence number of the last request
            parts = [pack(_HDR_LEN, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, 0), _BATCH_NFGEN]
            seq = first
            for mtype, flags, family, body in requests:
                seq += 1
                flags |= NLM_F_REQUEST | NLM_F_ACK if seq == last else NLM_F_REQUEST
                parts += (pack(_HDR_LEN + len(body), mtype, flags, seq, 0),
                          _NFGENMSG.pack(family, 0, 0), body)
            parts += (pack(_HDR_LEN, NFNL_MSG_BATCH_END, NLM_F_REQUEST, last + 1, 0), _BATCH_NFGEN)
            self._send(b"".join(parts))
            # The usual answer: one datagram holding just the ack of the last request.
            try:
                size = self._recv_into()
            except BlockingIOError:
                raise FirewallError("no answer from the kernel to a netlink batch",
                                    errno=errno_mod.ETIMEDOUT) from None
            if size >= _ACK.size:
                mlen, mtype, _fl, seq, _pid, err = _ACK.unpack_from(self._buf)
                if mlen == size and mtype == NLMSG_ERROR and seq == last and err == 0:
                    return []
            return self._collect(first, last, messages(bytes(self._buf[:size])))

    def _collect(self, first: int, last: int, received: list[Message]) -> list[Failure]:
        """Read replies to the batch ``first..last+1`` until the last request's answer."""
        failures: list[Failure] = []
        flags = 0
        while True:
            for msg in received:
                if msg.type != NLMSG_ERROR or not first <= msg.seq <= last + 1:
                    continue                    # not ours (a leftover of an earlier exchange)
                err, offset, text = parse_error(msg)
                if err:
                    index = msg.seq - first - 1 if msg.seq <= last else -1
                    failures.append(Failure(index, err, offset, text))
                if msg.seq == last:
                    return failures
                if err and (msg.seq == first or msg.seq == last + 1):
                    flags = _MSG_DONTWAIT       # refused as a whole: take what is queued, stop
            received = self._recv("batch", flags)
            if not received:
                return failures

    def write_elements(self, msg: int, table: str,
                       groups: Sequence[tuple[str, Sequence[bytes], Sequence[object]]],
                       family: int = NFPROTO_INET) -> None:
        """Add (NEWSETELEM) or delete (DELSETELEM) elements of several sets in one batch.

        ``groups`` holds ``(set name, encoded elements, addresses)``; the addresses only name the
        culprit in a :class:`FirewallError` (the kernel points at the element it refused).
        A batch larger than the socket accepts is sent as several consecutive batches.
        """
        mtype = nft_type(msg)
        flags = NLM_F_CREATE if msg == NFT_MSG_NEWSETELEM else 0
        requests, where = [], []
        for set_name, elements, addresses in groups:
            head = self._heads.get((table, set_name))
            if head is None:
                head = self._heads[table, set_name] = setelem_head(table, set_name)
            for body, first, stop in setelem_bodies(head, elements):
                requests.append((mtype, flags, family, body))
                where.append((set_name, head, elements[first:stop], addresses[first:stop]))
        start, size = 0, 0
        for i, req in enumerate(requests):
            size += _HDR_LEN + len(req[3])
            if i > start and size + 2 * _HDR_LEN > self.max_batch:
                self._raise_first(self.transact(requests[start:i]), table, family, where[start:i])
                start, size = i, _HDR_LEN + len(req[3])
        self._raise_first(self.transact(requests[start:]), table, family, where[start:])

    @staticmethod
    def _raise_first(failures: list[Failure], table: str, family: int, where: list) -> None:
        """Turn the first refusal into a FirewallError naming the set and element."""
        if not failures:
            return
        fail = failures[0]
        # A refusal of the batch as a whole (index -1: no permission, failed commit) is reported
        # against the first message; the kernel's offset, when given, names the exact element.
        set_name, head, elements, addresses = where[max(fail.index, 0)]
        pos = None if fail.offset is None else element_at(head, elements, fail.offset)
        address = str(addresses[pos or 0]) if addresses else None
        raise FirewallError(f"nf_tables refused the set update: {fail}", table=table, set=set_name,
                            family=FAMILY_NAMES.get(family, str(family)), address=address,
                            errno=fail.errno)

    # -- reads --------------------------------------------------------------------------------
    def dump(self, msg: int, family: int, body: bytes, on_message: Callable[[Message], None],
             subsystem: int = NFNL_SUBSYS_NFTABLES) -> bool:
        """Run a GET…/NLM_F_DUMP request, handing each reply message to ``on_message``.

        ``subsystem`` is the nfnetlink subsystem (nf_tables by default; conntrack uses 1).

        Returns False when the kernel flagged the dump as interrupted (the object changed while it
        was read: each message is consistent, the whole may mix before and after).
        """
        with self._lock:
            seq = self._next_seq(1)
            self._send(nlmsg(subsystem << 8 | msg, NLM_F_REQUEST | NLM_F_DUMP, seq, family, body))
            consistent = True
            while True:
                for m in self._recv("dump"):
                    if m.seq != seq:
                        continue
                    if m.flags & NLM_F_DUMP_INTR:
                        consistent = False
                    if m.type == NLMSG_DONE:
                        return consistent
                    if m.type == NLMSG_ERROR:
                        err, _offset, text = parse_error(m)
                        if err:
                            raise FirewallError(f"netlink dump failed: {text or os.strerror(err)}",
                                                errno=err)
                        return consistent
                    on_message(m)

    def request(self, msg: int, family: int, body: bytes) -> Message:
        """A non-dump GET…: the kernel's one reply, or FirewallError with its errno."""
        with self._lock:
            seq = self._next_seq(1)
            self._send(nlmsg(nft_type(msg), NLM_F_REQUEST, seq, family, body))
            while True:
                for m in self._recv("request"):
                    if m.seq != seq:
                        continue
                    if m.type == NLMSG_ERROR:
                        err, _offset, text = parse_error(m)
                        raise FirewallError(f"netlink request failed: {text or os.strerror(err)}",
                                            errno=err)
                    return m

    def dump_elements(self, table: str, set_name: str, family: int = NFPROTO_INET
                      ) -> list[Element]:
        """Every element of one set (GETSETELEM dump)."""
        out: list[Element] = []
        self.scan_elements(table, set_name, out.extend, family)
        return out

    def scan_elements(self, table: str, set_name: str, on_batch: Callable[[list[Element]], None],
                      family: int = NFPROTO_INET) -> None:
        """Hand the elements of one set to ``on_batch`` one dump part (≤ 32 KiB) at a time.

        For big sets: nothing but the current part is held in memory, and ``on_batch`` may raise
        to abandon the dump (the socket then holds the rest of it: close it).
        """
        try:
            self.dump(NFT_MSG_GETSETELEM, family, setelem_head(table, set_name),
                      lambda m: on_batch(parse_elements(m)))
        except FirewallError as exc:
            raise FirewallError(f"cannot list set: {exc.message}", table=table, set=set_name,
                                family=FAMILY_NAMES.get(family), errno=exc.errno) from None

    def get_element(self, table: str, set_name: str, key: bytes,
                    family: int = NFPROTO_INET) -> Element | None:
        """One element by its key (a GETSETELEM request, not a dump), or None when absent.

        The kernel answers from its hash in microseconds whatever the set's size, where a dump
        of a million elements takes tens of seconds.  A missing set also answers None.
        """
        body = setelem_head(table, set_name) + nested(NFTA_SET_ELEM_LIST_ELEMENTS, element(key))
        try:
            msg = self.request(NFT_MSG_GETSETELEM, family, body)
        except FirewallError as exc:
            if exc.errno == errno_mod.ENOENT:
                return None
            raise FirewallError(f"cannot look up a set element: {exc.message}", table=table,
                                set=set_name, family=FAMILY_NAMES.get(family),
                                errno=exc.errno) from None
        found = parse_elements(msg)
        return found[0] if found else None

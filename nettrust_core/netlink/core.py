"""One persistent NETLINK_NETFILTER socket: batches and their acks, dumps, single requests.

A write is one batch: ``BATCH_BEGIN (res_id = NFNL_SUBSYS_NFTABLES)``, the messages,
``BATCH_END``; the kernel applies it as one transaction.  It processes a batch synchronously inside
``send()``; its answers (an ``NLMSG_ERROR`` per failed message, an ack for the last one, a commit
failure against the batch-begin sequence number) are queued on the socket by the time ``send()``
returns.  Replies are matched by sequence number, so leftovers of an earlier, interrupted exchange
are skipped.  Kernel refusals come back as :class:`Failure` (batches) or
:class:`~nettrust_core.errors.NetlinkError` with the kernel's errno (dumps, requests).
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
import threading
from typing import Callable, NamedTuple, Sequence

from ..errors import NetlinkError
from .wire import (HDR_LEN, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_NETFILTER, NFGENMSG,
                   NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFPROTO_UNSPEC,
                   NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
                   NLMSGHDR, SOL_NETLINK, Message, messages, nlmsg, parse_error)


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


class Failure(NamedTuple):
    """One message of a batch the kernel refused: its index (-1: the batch itself), errno, where."""

    index: int  # type: ignore[assignment]  # the message's index in its batch; shadows tuple.index
    errno: int
    offset: int | None
    text: str | None

    def __str__(self) -> str:
        return self.text or os.strerror(self.errno)


_MSG_TRUNC = int(socket.MSG_TRUNC)
_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_ACK = struct.Struct("=IHHIIi")         # an NLMSG_ERROR header and its error field
_BATCH_NFGEN = NFGENMSG.pack(NFPROTO_UNSPEC, 0, NFNL_SUBSYS_NFTABLES)


class NetlinkSocket:
    """A persistent NETLINK_NETFILTER socket; one exchange at a time (a lock spans send+receive).

    ``timeout`` bounds a wait for the kernel's answer (it never takes long: batches are processed
    inside ``send()``), so a lost reply surfaces as an error instead of a hang.
    """

    def __init__(self, timeout: float = 5.0, bufsize: int = 1 << 20, *,
                 sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = self._open(timeout, bufsize)
        self._sock = sock                   # tests pass a stand-in with send/recv_into/getsockopt
        self._lock = threading.Lock()
        self._seq = 0
        self._buf = bytearray(1 << 16)      # a dump part is at most 32 KiB
        #: The largest batch the socket accepts (the kernel refuses datagrams above sndbuf - 32).
        self.max_batch = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 64

    @staticmethod
    def _open(timeout: float, bufsize: int) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_NETFILTER)
        except OSError as exc:
            raise NetlinkError(f"cannot open an nf_tables netlink socket: {exc.strerror}",
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
            raise NetlinkError(f"cannot set up the netlink socket: {exc.strerror}",
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
            raise NetlinkError(f"netlink send failed: {exc.strerror}", errno=exc.errno) from None

    def _recv_into(self, flags: int = 0) -> int:
        """Receive one datagram into the buffer; its length.  BlockingIOError: nothing came."""
        try:
            n = self._sock.recv_into(self._buf, len(self._buf), flags | _MSG_TRUNC)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise NetlinkError(f"netlink receive failed: {exc.strerror}", errno=exc.errno) from None
        if n > len(self._buf):
            raise NetlinkError(f"netlink datagram of {n} bytes truncated")
        return n

    def _recv(self, what: str, flags: int = 0) -> list[Message]:
        try:
            n = self._recv_into(flags)
        except BlockingIOError:
            if flags:
                return []
            raise NetlinkError(f"no answer from the kernel to a netlink {what}",
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
        pack = NLMSGHDR.pack
        with self._lock:
            first = self._next_seq(n + 2)
            last = first + n                   # sequence number of the last request
            parts = [pack(HDR_LEN, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, 0), _BATCH_NFGEN]
            seq = first
            for mtype, flags, family, body in requests:
                seq += 1
                flags |= NLM_F_REQUEST | NLM_F_ACK if seq == last else NLM_F_REQUEST
                parts += (pack(HDR_LEN + len(body), mtype, flags, seq, 0),
                          NFGENMSG.pack(family, 0, 0), body)
            parts += (pack(HDR_LEN, NFNL_MSG_BATCH_END, NLM_F_REQUEST, last + 1, 0), _BATCH_NFGEN)
            self._send(b"".join(parts))
            # The usual answer: one datagram holding just the ack of the last request.
            try:
                size = self._recv_into()
            except BlockingIOError:
                raise NetlinkError("no answer from the kernel to a netlink batch",
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
                            raise NetlinkError(f"netlink dump failed: {text or os.strerror(err)}",
                                                errno=err)
                        return consistent
                    on_message(m)

    def request(self, msg: int, family: int, body: bytes,
                subsystem: int = NFNL_SUBSYS_NFTABLES) -> Message:
        """A non-dump GET…: the kernel's one reply, or NetlinkError with its errno."""
        with self._lock:
            seq = self._next_seq(1)
            self._send(nlmsg(subsystem << 8 | msg, NLM_F_REQUEST, seq, family, body))
            while True:
                for m in self._recv("request"):
                    if m.seq != seq:
                        continue
                    if m.type == NLMSG_ERROR:
                        err, _offset, text = parse_error(m)
                        raise NetlinkError(f"netlink request failed: {text or os.strerror(err)}",
                                            errno=err)
                    return m

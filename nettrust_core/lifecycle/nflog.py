"""Packets the refusing rule logged: a socket bound to one nfnetlink_log (NFLOG) group.

The messages (bind, logged packets) are :mod:`nettrust_core.netlink.nflog`'s; this module owns
the socket the unauthorized-attempts thread reads, and counts what the kernel could not queue.
"""

from __future__ import annotations

import errno
import os
import socket

from ..errors import NetTrustError
from ..netlink.nflog import Attempt, bind_messages, parse_packet
from ..netlink.wire import NETLINK_NETFILTER, NLMSG_ERROR, messages, parse_error


class NflogError(NetTrustError):
    """The NFLOG group could not be bound or read (``errno`` when the kernel said why)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NflogReader:
    """A netlink socket bound to one NFLOG group; :meth:`read` waits at most ``timeout``."""

    def __init__(self, group: int, timeout: float = 0.5) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_NETFILTER)
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
        for m in messages(bytes(self._buf[:n])):
            if m.type == NLMSG_ERROR:
                err, _off, text = parse_error(m)
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
        for m in messages(bytes(self._buf[:n])):
            attempt = parse_packet(m)
            if attempt is not None:
                out.append(attempt)
        return out

    def close(self) -> None:
        self._sock.close()

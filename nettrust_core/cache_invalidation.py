"""Removing names from Unbound's cache when their grants go away for other reasons.

When the core revokes a grant before its answer's TTL ends (eviction under the set cap, a cap,
``nettrust flush``), Unbound still holds the answer and would serve it from cache: the client
gets an address it can no longer reach.  The core hands the names to a :class:`CacheInvalidator`;
the next lookup then misses the cache, reaches the module again and is granted afresh.

The answer path calls :meth:`CacheInvalidator.invalidate` and must never wait: implementations
queue the names and drop (and count) what does not fit.

:class:`UnboundControlInvalidator` is the real one: a background thread speaks Unbound's remote
control protocol over its local (unix) control socket, one ``flush <name>`` per name (A, AAAA,
CNAME, DNAME and the other common types, message cache and RRset cache alike; see
``daemon/remote.c:do_flush_name``).  A unix control socket needs no certificates: the first
six bytes ``UBCT1 `` then the command line, and Unbound answers ``ok`` and closes.
"""

from __future__ import annotations

import logging
import queue
import socket
from typing import Iterable, Protocol

from .ratelimit import RateLimiter
from .worker import Worker

log = logging.getLogger("nettrust.cache")

#: Names waiting for the worker at most; beyond this they are dropped and counted.
QUEUE_SIZE = 4096
#: Seconds one control connection may take (connect, command, answer).
CONTROL_TIMEOUT = 2.0
_MAGIC = b"UBCT1 "


class CacheInvalidator(Protocol):
    def invalidate(self, names: Iterable[str]) -> None:
        """Remove ``names`` (their A and AAAA answers) from the resolver's cache, soon, off the
        answer path; never blocks, never raises."""


class NoInvalidation:
    """Does nothing: for tools and tests that run no resolver."""

    def invalidate(self, names: Iterable[str]) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def control_command(path: str, command: str, timeout: float = CONTROL_TIMEOUT) -> str:
    """Send one command to Unbound's unix control socket and return its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(_MAGIC + command.encode("ascii") + b"\n")
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class UnboundControlInvalidator(Worker):
    """Flushes names through Unbound's control socket from one background thread."""

    name = "nettrust-cache-flush"

    def __init__(self, socket_path: str, *, queue_size: int = QUEUE_SIZE,
                 timeout: float = CONTROL_TIMEOUT) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.timeout = timeout
        self._queue: queue.Queue[str | None] = queue.Queue(queue_size)
        self._errors = RateLimiter(interval=30.0, burst=2)
        #: Counters (read by status and tests): queued, flushed, dropped (queue full), failed.
        self.counts = {"queued": 0, "flushed": 0, "dropped": 0, "failed": 0}

    def invalidate(self, names: Iterable[str]) -> None:
        for name in names:
            if not _plain_name(name):
                self.counts["dropped"] += 1
                continue
            try:
                self._queue.put_nowait(name)
                self.counts["queued"] += 1
            except queue.Full:
                self.counts["dropped"] += 1

    def wake(self) -> None:
        """The stop marker, after the names already queued; pending flushes beyond the queue's
        room are dropped so the marker always fits."""
        if not self.alive:
            return
        while True:                      # make room for the stop marker: pending flushes go
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def run(self) -> None:
        while (name := self._queue.get()) is not None:
            try:
                reply = control_command(self.socket_path, f"flush {name or '.'}", self.timeout)
                if not reply.startswith("ok"):
                    raise OSError(f"unbound-control answered {reply.strip()[:120]!r}")
                self.counts["flushed"] += 1
            except OSError as exc:
                self.counts["failed"] += 1
                ok, suppressed = self._errors.allow("flush")
                if ok:
                    more = f" ({suppressed} more since the last report)" if suppressed else ""
                    log.warning("cannot remove %s from Unbound's cache via %s: %s%s",
                                name, self.socket_path, exc, more)


def _plain_name(name: str) -> bool:
    """Only canonical names go into a control command (no spaces, no newlines, ASCII)."""
    return isinstance(name, str) and len(name) <= 253 and name.isascii() and \
        all(c.isalnum() or c in "-_." for c in name)

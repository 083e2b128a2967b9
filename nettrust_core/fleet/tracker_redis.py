"""The shared host tracker (``fleet.tracker = "redis"``): the never-shorten tracker kept in Redis
as well as in memory, so a restarted resolver is exact within seconds.

Written from a background thread (:class:`TrackerWriter`, fed by a bounded queue: the answer
path only enqueues; a full queue drops and counts), as one hash per host, ``address ->
"<expiry, wall clock> <question name>"``, shared by every resolver instance of the host.  At start,
:class:`RedisAdoption` (in place of the kernel read-back of
:mod:`nettrust_core.lifecycle.adoption`, about 48 s for 1M grants) reads the hash once and merges
it ("the later expiry wins") before marking the tracker complete; when Redis cannot be read it
falls back to reading the kernel.  Expired fields are deleted as the read meets them.

The hash lags the kernel by at most one write interval (50 ms); a clean stop drains the queue.
A crash can lose that last interval: those few grants are then treated as new, as the kernel
lookups of an incomplete tracker would not be.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from ipaddress import IPv4Address, IPv6Address
from collections import Counter
from typing import Any, Callable, Sequence

from ..firewall.base import Grant
from ..grants.tracker import GrantTracker, Owner
from ..lifecycle.adoption import GrantAdoption
from ..worker import Worker

log = logging.getLogger("nettrust.fleet")


class TrackerWriter(Worker):
    name = "nettrust-tracker-redis"
    INTERVAL = 0.05

    def __init__(self, connect: Callable[[], Any], key: str, *, queue_size: int,
                 counters: Counter[str]) -> None:
        super().__init__(counters)
        self.connect = connect
        self.key = key
        self.counters = counters
        self.queue: queue.Queue[tuple] = queue.Queue(maxsize=queue_size)
        self._client: Any = None

    def granted(self, grants: Sequence[Grant], owner: Owner) -> None:
        """The answer path: enqueue only."""
        try:
            self.queue.put_nowait((time.time(), grants, owner.names))
        except queue.Full:
            self.counters["tracker_redis_dropped"] += 1

    def run(self) -> None:
        from .connect import redis_errors
        errors = redis_errors()
        pending: dict[str, str] = {}
        while True:
            stopping = self.stopping.is_set()
            self._drain(pending)
            if pending:
                try:
                    if self._client is None:
                        self._client = self.connect()
                    self._client.hset(self.key, mapping=pending)
                    self.counters["tracker_redis_written"] += len(pending)
                    pending = {}
                except errors as exc:
                    self._client = None
                    self.counters["tracker_redis_errors"] += 1
                    log.debug("shared tracker: %s", exc)
                    if len(pending) > self.queue.maxsize:
                        self.counters["tracker_redis_dropped"] += len(pending)
                        pending = {}
            if stopping:
                return
            self.stopping.wait(self.INTERVAL)

    def _drain(self, pending: dict[str, str]) -> None:
        while True:
            try:
                sent, grants, names = self.queue.get_nowait()
            except queue.Empty:
                return
            name = names if isinstance(names, str) else names[0]
            for g in grants:
                pending[str(g.address)] = f"{sent + g.timeout:.3f} {name}"


def read_hosts(client: Any, key: str, wall: float, clock: float,
               owner_of: Callable[[str], Owner]) -> tuple[list[tuple], list[bytes]]:
    """The live grants in the hash as ``(address, expiry on the tracker's clock, owner)`` (one
    owner per name), and the fields that expired or do not parse."""
    live, dead = [], []
    owners: dict[bytes, Owner] = {}
    v4, v6, pton = IPv4Address, IPv6Address, socket.inet_pton
    inet, inet6 = socket.AF_INET, socket.AF_INET6
    shift = clock - wall
    for field, value in client.hgetall(key).items():
        try:
            at, _, name = value.partition(b" ")
            expires = float(at)
            address = (v6(pton(inet6, field.decode())) if b":" in field
                       else v4(pton(inet, field.decode())))
        except (ValueError, OSError, UnicodeDecodeError):
            dead.append(field)
            continue
        if expires <= wall:
            dead.append(field)
            continue
        owner = owners.get(name)
        if owner is None:
            owner = owners[name] = owner_of(name.decode(errors="replace"))
            owner.answered = clock
        live.append((address, expires + shift, owner))
    return live, dead


class RedisAdoption(GrantAdoption):
    """The start-up adoption from the shared tracker; the kernel's when Redis cannot answer."""

    name = "nettrust-adoption-redis"

    def __init__(self, backend, tracker: GrantTracker, connect: Callable[[], Any],
                 key: str) -> None:
        super().__init__(backend, tracker)
        self.connect = connect
        self.key = key
        self.source = "redis"

    def run(self) -> None:
        from .connect import redis_errors
        started = time.monotonic()
        try:
            client = self.connect()
            tracker = self.tracker
            live, dead = read_hosts(client, self.key, time.time(), tracker.clock(),
                                    tracker.owner_for)
        except redis_errors() as exc:
            log.warning("shared tracker unreadable (%s): adopting from the kernel", exc)
            self.source = "kernel"
            super().run()
            return
        try:
            for i in range(0, len(live), 20000):        # the answer path waits a batch at most
                with self.tracker.lock:
                    if self.stopping.is_set():
                        return
                    self.adopted += self.tracker.load(live[i:i + 20000])
            with self.tracker.lock:
                if not self.stopping.is_set():
                    self.tracker.complete = True
            self.seconds = time.monotonic() - started
            log.info("%d live grants adopted from the shared tracker in %.1f s", self.adopted,
                     self.seconds)
            for i in range(0, len(dead), 10000):
                client.hdel(self.key, *dead[i:i + 10000])
        except redis_errors() as exc:
            log.warning("shared tracker: expired fields not deleted (%s)", exc)
        finally:
            self._done.set()

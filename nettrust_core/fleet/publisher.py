"""The master's publisher: one background thread, fed by a bounded queue.

The answer path only calls :meth:`Publisher.offer` (a ``put_nowait``: when the queue is full
the grant is dropped and counted, never waited for).  The thread drains the queue in batches
and writes each batch in one pipeline: ``XADD`` per answer (``MINID`` trimming at now - the
longest grant, so every trimmed entry has expired), and the snapshot's ``ZADD GT`` (an address's
score only grows; the pairs snapshot likewise per "client address", for gateway followers).  When Redis is down the thread keeps its batch, retries with a back-off and
the queue fills and drops; the resolver keeps answering and enforcing locally.  On every
(re)connect it publishes the configuration document (:mod:`.config_doc`).
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from typing import Any, Callable

from ..worker import Worker
from . import config_doc
from .entries import GrantEntry, encode
from .keys import Keys

log = logging.getLogger("nettrust.fleet")

#: One answer's grants as the answer path hands them over: (wall time, grants, name, client,
#: sequence, follower to wait for).  Strings are made in the thread, not on the answer path.
Item = tuple


class Publisher(Worker):
    name = "nettrust-fleet-publisher"
    #: Entries written per pipeline at most.
    BATCH = 512

    def __init__(self, connect: Callable[[], Any], keys: Keys, origin: str, *, queue_size: int,
                 retention: float, counters: Counter[str], config=None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(counters)
        self.connect = connect
        self.keys = keys
        self.origin = origin
        self.retention = retention
        self.counters = counters
        self.config = config
        self.clock = clock
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=queue_size)
        #: False while Redis is unreachable (the hold then does not wait).
        self.connected = False
        self.config_version = 0
        self._client: Any = None
        self._trimmed_at = 0.0
        self._pinged = 0.0

    # -- the answer path ---------------------------------------------------------------
    def offer(self, item: Item) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            self.counters["fleet_dropped"] += 1
            return False

    # -- the thread ----------------------------------------------------------------------
    def wake(self) -> None:
        try:
            self.queue.put_nowait(())
        except queue.Full:
            pass

    def run(self) -> None:
        from .connect import redis_errors
        errors = redis_errors()
        batch: list[Item] = []
        backoff = 0.1
        while not self.stopping.is_set():
            if not batch:
                batch = self._take()
            try:
                if self._client is None:
                    self._open()
                if batch:
                    self._write(batch)
                    self.counters["fleet_published"] += len(batch)
                    batch = []
                elif self.clock() - self._pinged > 1.0:     # notice an outage while idle
                    self._pinged = self.clock()
                    self._client.ping()
                backoff = 0.1
            except errors as exc:
                if self.connected:
                    log.warning("fleet: Redis unreachable (%s); answering locally, queueing "
                                "grants (fleet.queue_size, then dropped and counted)", exc)
                self.connected = False
                self._client = None
                self.counters["fleet_publish_errors"] += 1
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _take(self) -> list[Item]:
        try:
            first = self.queue.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first] if first else []
        while len(batch) < self.BATCH:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item:
                batch.append(item)
        return batch

    def _open(self) -> None:
        client = self.connect()
        client.ping()
        if self.config is not None:
            self.config_version = config_doc.publish(client, self.keys, self.config)
        self._client = client
        if not self.connected:
            log.info("fleet: publishing to %s (config version %d)", self.keys.stream,
                     self.config_version)
        self.connected = True

    def _write(self, batch: list[Item]) -> None:
        now = self.clock()
        minid = f"{int((now - self.retention) * 1000)}-0"
        snapshot: dict[str, float] = {}
        pairs: dict[str, float] = {}
        pipe = self._client.pipeline(transaction=False)
        for sent, grants, name, client, seq, ack_by in batch:
            expires = tuple(sent + g.timeout for g in grants)
            name = name if isinstance(name, str) else name[0]
            entry = GrantEntry(tuple(g.address for g in grants), expires, name, client,
                               self.origin, seq, ack_by, sent)
            pipe.xadd(self.keys.stream, encode(entry), minid=minid, approximate=True)
            for g, t in zip(grants, expires, strict=True):
                a = str(g.address)
                if snapshot.get(a, 0.0) < t:
                    snapshot[a] = t
                if client:
                    p = f"{client} {a}"
                    if pairs.get(p, 0.0) < t:
                        pairs[p] = t
        pipe.zadd(self.keys.snapshot, snapshot, gt=True)
        if pairs:
            pipe.zadd(self.keys.pairs, pairs, gt=True)
        if now - self._trimmed_at > 10:
            pipe.zremrangebyscore(self.keys.snapshot, "-inf", now)
            pipe.zremrangebyscore(self.keys.pairs, "-inf", now)
            self._trimmed_at = now
        pipe.execute()

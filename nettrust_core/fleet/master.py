"""The master's fleet parts, wired into a resolver: one grant sink on the answer path.

:meth:`FleetMaster.granted` is what :meth:`nettrust_core.authorizer.Authorizer.authorize`
calls after a kernel write (outside the tracker's lock): it enqueues the answer's grants for
the publisher and, when the client connects through a follower (``fleet.followers``), waits at
most ``fleet.hold`` for that follower's confirmation (:mod:`.hold`).  Nothing else of the
fleet runs on the answer path.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..worker import Worker
from .connect import connect
from .hold import AckReader
from .keys import Keys
from .publisher import Publisher

if TYPE_CHECKING:
    from ..config import Config
    from ..firewall.base import Grant
    from ..grants.tracker import Owner

log = logging.getLogger("nettrust.fleet")


def node_of(config: Config) -> str:
    return config.fleet.node or socket.gethostname()


class FleetMaster:
    def __init__(self, config: Config, counters: Counter[str]) -> None:
        fleet = config.fleet
        self.fleet = fleet
        self.counters = counters
        self.node = node_of(config)
        keys = Keys(fleet.prefix)
        # Every grant has expired once it is older than this: the stream keeps no more.
        retention = config.grants.max_ttl + config.grants.grace + 60

        def factory(role: str) -> Callable[[], Any]:
            return lambda: connect(fleet, name=f"{self.node}-{role}")

        self.publisher = Publisher(factory("publisher"), keys, self.node, queue_size=fleet.queue_size,
                                   retention=retention, counters=counters, config=config)
        self.acks = AckReader(factory("acks"), keys.acks(self.node), counters)
        self.hold = fleet.hold
        self.follower_of = fleet.follower_of if fleet.followers else None
        self._seq = itertools.count(1)

    def granted(self, grants: Sequence[Grant], owner: Owner) -> None:
        """The answer path: enqueue, and hold for the client's follower (bounded)."""
        seq = next(self._seq)
        follower = None
        if self.follower_of is not None and self.hold:
            follower = self.follower_of(owner.client)
        if follower is None:
            self.publisher.offer((time.time(), grants, owner.names, owner.client, seq, ""))
            return
        if not (self.publisher.connected and self.acks.connected):
            self.counters["fleet_hold_skipped"] += 1
            self.publisher.offer((time.time(), grants, owner.names, owner.client, seq, ""))
            return
        event = self.acks.expect(seq)
        try:
            if not self.publisher.offer((time.time(), grants, owner.names, owner.client, seq,
                                         follower)):
                return
            if event.wait(self.hold):
                self.counters["fleet_held"] += 1
            else:
                self.counters["fleet_hold_timeouts"] += 1
        finally:
            self.acks.done(seq)

    def workers(self) -> list[Worker]:
        return [self.publisher, self.acks]

    def start(self) -> None:
        self.publisher.start()
        self.acks.start()

    def stop(self) -> None:
        self.acks.stop()
        self.publisher.stop()


class FleetNode:
    """What a resolver runs of the fleet: the master's publisher and hold, and the shared
    tracker's writer and start-up adoption, as configured (:func:`fleet_for`)."""

    def __init__(self, config: Config, authorizer) -> None:
        from .tracker_redis import RedisAdoption, TrackerWriter
        fleet = config.fleet
        self.parts: list[Any] = []

        def factory() -> Any:
            return connect(fleet)

        if fleet.tracker == "redis":
            keys = Keys(fleet.prefix)
            key, legacy = keys.hosts(node_of(config)), keys.hosts_text(node_of(config))
            writer = TrackerWriter(factory, key, queue_size=fleet.queue_size,
                                   counters=authorizer.counters)
            authorizer.sinks.append(writer)
            authorizer.tracker.on_forget = writer.forgot
            authorizer.first_adoption = (
                lambda backend, tracker: RedisAdoption(backend, tracker, factory, key, legacy,
                                                       authorizer.counters))
            self.parts.append(writer)
        if fleet.role == "master":
            master = FleetMaster(config, authorizer.counters)
            authorizer.sinks.append(master)
            authorizer.pair_sinks.append(master)        # gateway mode: per-client grants
            self.parts.append(master)

    def workers(self) -> list[Worker]:
        out: list[Worker] = []
        for part in self.parts:
            out += part.workers() if isinstance(part, FleetMaster) else [part]
        return out

    def start(self) -> None:
        for part in self.parts:
            part.start()

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()


def fleet_for(config: Config, authorizer) -> FleetNode | None:
    """The fleet parts this resolver runs (None: standalone with the in-memory tracker)."""
    if config.fleet.role == "standalone" and config.fleet.tracker == "memory":
        return None
    return FleetNode(config, authorizer)

"""The bounded hold: a master waits for the client's follower before releasing an answer.

A client asks a master and connects through a follower, so the follower must hold the grant
before the answer leaves.  The master maps client networks to followers (``fleet.followers``);
for such a client the answer path registers an event under the entry's sequence number, hands
the entry to the publisher and waits at most ``fleet.hold``.  The follower, after its kernel
write, appends ``(sequence)`` to this master's ack stream; :class:`AckReader` (a background
thread, ``XREAD BLOCK``) sets the event.  A timeout releases the answer anyway and is counted
(``fleet_hold_timeouts``); while Redis is unreachable nothing waits (``fleet_hold_skipped``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable

from ..worker import Worker

log = logging.getLogger("nettrust.fleet")


class AckReader(Worker):
    name = "nettrust-fleet-acks"

    def __init__(self, connect: Callable[[], Any], stream: str, counters: Counter[str]) -> None:
        super().__init__(counters)
        self.connect = connect
        self.stream = stream
        self.counters = counters
        #: sequence -> event, for the answers waiting now.
        self.pending: dict[int, threading.Event] = {}
        self.connected = False

    def expect(self, seq: int) -> threading.Event:
        event = threading.Event()
        self.pending[seq] = event
        return event

    def done(self, seq: int) -> None:
        self.pending.pop(seq, None)

    def run(self) -> None:
        from .connect import redis_errors
        errors = redis_errors()
        client = None
        last = "$"
        while not self.stopping.is_set():
            try:
                if client is None:
                    client = self.connect()
                    if last == "$":             # "$" between two reads would miss acks
                        newest = client.xrevrange(self.stream, count=1)
                        last = newest[0][0] if newest else "0-0"
                    self.connected = True
                got = client.xread({self.stream: last}, block=500, count=1024)
            except errors as exc:
                if self.connected:
                    log.warning("fleet: ack stream unreachable (%s)", exc)
                self.connected = False
                client = None
                self.stopping.wait(0.2)
                continue
            for _name, messages in got or ():
                for msg_id, fields in messages:
                    last = msg_id
                    try:
                        seq = int(fields.get(b"s", b"0"))
                    except ValueError:
                        self.counters["fleet_bad_acks"] += 1
                        continue
                    event = self.pending.get(seq)
                    if event is not None:
                        event.set()

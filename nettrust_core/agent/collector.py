"""One record per client query: dnstap responses joined with the module's decisions.

Unbound's dnstap stream has every client response — cache hits and local data included — but
not why; the module's decision records have the why, but only for answers that went through the
module (cache misses, local data, names it blocked).  The join key is (client, name, type):

- a response with a matching decision was resolved (or local, or blocked) and carries it;
- a response with none within ``join_delay`` came from Unbound's cache; it inherits the verdict
  of the last decision for that name and type (the grant made when it was fetched covers it);
- a decision with no response within ``decision_wait`` is recorded alone, as without dnstap:
  its response was dropped (the agent lagged or, past ``stats.responses_per_second``, paused
  reading, and Unbound's dnstap queue was full), but the query was answered.

The decision is sent before the answer is released and the response after, so a response
rarely waits; a decision waits longer (``decision_wait``) because Unbound's dnstap I/O thread
sends its frames in batches, up to about a second late.
Clients that joined another client's in-flight query share its decision and count as cache.
Cache hits settled together for the same client, name, type, rcode and second become one record
with a ``count``: the store and the metrics then cost per distinct question, not per query.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable

from .dnstap import DnsAnswer

JOIN_DELAY = 1.0
DECISION_WAIT = 5.0
#: Decisions remembered per (name, type) to label later cache hits.
LAST_DECISIONS = 100_000


class Collector:
    def __init__(self, *, emit_query: Callable[[dict], None], join_delay: float = JOIN_DELAY,
                 decision_wait: float = DECISION_WAIT, direct: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit_query = emit_query
        #: ``stats.cache_hits = false``: no dnstap; every decision is the query record itself.
        self.direct = direct
        self.join_delay = join_delay
        self.decision_wait = decision_wait
        self.clock = clock
        self._lock = threading.Lock()
        self._decisions: dict[tuple, deque] = {}
        self._responses: dict[tuple, deque] = {}
        self._order_r: deque = deque()        # (arrival, key) of waiting responses
        self._order_d: deque = deque()        # (arrival, key) of waiting decisions
        self._last: OrderedDict[tuple, dict] = OrderedDict()

    def response(self, client: str | None, ts: float, answer: DnsAnswer) -> None:
        key = (client, answer.qname, answer.qtype)
        now = self.clock()
        with self._lock:
            pending = self._decisions.get(key)
            decision = pending.popleft() if pending else None
            if pending is not None and not pending:
                del self._decisions[key]
            if decision is None:
                self._responses.setdefault(key, deque()).append((now, ts, answer))
                self._order_r.append((now, key))
                return
        self.emit_query(_record(client, ts, answer, decision[1], cached=False))

    def decision(self, record: dict) -> None:
        client = record.get("client")
        key = (client, record.get("qname"), record.get("qtype"))
        now = self.clock()
        with self._lock:
            self._remember(key[1:], record)
            if client is None:
                return          # prefetch: no client waits for this answer
            if self.direct:
                response = None
            else:
                pending = self._responses.get(key)
                response = pending.popleft() if pending else None
                if pending is not None and not pending:
                    del self._responses[key]
                if response is None:
                    self._decisions.setdefault(key, deque()).append((now, record))
                    self._order_d.append((now, key))
                    return
        if response is None:
            self.emit_query(_from_decision(record))
        else:
            _, ts, answer = response
            self.emit_query(_record(client, ts, answer, record, cached=False))

    def tick(self) -> int:
        """Settle what waited long enough: lone responses are cache hits; lone decisions
        (their response was dropped) are query records of their own."""
        now = self.clock()
        settled, alone = [], []
        with self._lock:
            for order, table, wait in ((self._order_r, self._responses, self.join_delay),
                                       (self._order_d, self._decisions, self.decision_wait)):
                cutoff = now - wait
                while order and order[0][0] <= cutoff:
                    _, key = order.popleft()
                    pending = table.get(key)
                    if not pending or pending[0][0] > cutoff:
                        continue        # this entry was matched already; a newer one waits
                    item = pending.popleft()
                    if not pending:
                        del table[key]
                    if table is self._responses:
                        settled.append((key, item, self._last.get(key[1:])))
                    else:
                        alone.append(item[1])
        merged: dict[tuple, dict] = {}
        for (client, _, _), (_, ts, answer), last in settled:
            key = (client, answer, int(ts), id(last))
            record = merged.get(key)
            if record is None:
                merged[key] = _record(client, ts, answer, last, cached=True)
            else:
                record["count"] += 1
        for record in merged.values():
            self.emit_query(record)
        for decision in alone:
            self.emit_query(_from_decision(decision))
        return len(settled) + len(alone)

    def _remember(self, key: tuple, record: dict) -> None:
        self._last[key] = record
        self._last.move_to_end(key)
        if len(self._last) > LAST_DECISIONS:
            self._last.popitem(last=False)


def _from_decision(d: dict) -> dict:
    """The query record of a decision alone (no dnstap): addresses are the granted ones."""
    return {"ts": d.get("ts"), "client": d.get("client"), "qname": d.get("qname"),
            "qtype": d.get("qtype"), "rcode": d.get("rcode"),
            "outcome": d.get("outcome") or "unknown", "reason": d.get("reason"),
            "rule": d.get("rule"), "security": d.get("security"),
            "source": d.get("source") or "resolved", "chain": d.get("chain"),
            "addresses": [a for a, _ in d.get("grants") or ()], "ttl": None, "count": 1}


def _record(client, ts: float, answer: DnsAnswer, decision: dict | None, *, cached: bool) -> dict:
    d = decision or {}
    if cached:
        source = "cache"
    else:
        source = d.get("source") or "resolved"
    return {"ts": ts, "client": client, "qname": answer.qname, "qtype": answer.qtype,
            "rcode": answer.rcode, "outcome": d.get("outcome") or "unknown",
            "reason": d.get("reason"), "rule": d.get("rule"), "security": d.get("security"),
            "source": source, "chain": d.get("chain"), "addresses": answer.addresses,
            "ttl": answer.min_ttl, "count": 1}

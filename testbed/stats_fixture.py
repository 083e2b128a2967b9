"""A statistics database with known contents, written by the real store (tests and demos).

Times are relative to ``now``: most rows within the last hour, one blocked query ten days old
(outside "this week").  What it holds, and what the README's example queries return on it:

- blocked queries: ``ads.example`` 3 times from 192.0.2.10 (one row counting two cache hits),
  ``tracker.example`` once from 192.0.2.10, ``ads.example`` once from 192.0.2.20, and
  ``old.example`` from 192.0.2.10 ten days ago;
- ``c1.fw.test`` (chain c1.fw.test > c2.fw.test > www.fw.test) asked by 192.0.2.10 and
  ``www.fw.test`` by 192.0.2.20, both answered and granted ``198.51.100.10`` for 300 s;
- refused attempts: three by user alice (uid 1000) to 203.0.113.5 port 443, one by bob
  (uid 1001) to 198.51.100.10 port 22, one forwarded from client 192.0.2.20 to 203.0.113.7
  port 80, and one "would refuse" (audit) by alice;
- one ``alert`` event.
"""

from __future__ import annotations

import time

from nettrust_core.agent.store import StatsStore

GRANTED = "198.51.100.10"
REFUSED_ONLY = "203.0.113.5"
CHAIN = ["c1.fw.test", "c2.fw.test", "www.fw.test"]


def _query(ts: float, client: str, qname: str, *, outcome: str = "granted",
           source: str = "resolved", addresses=(), chain=None, count: int = 1,
           qtype: int = 1, rcode: int = 0) -> dict:
    blocked = outcome == "blocked"
    return {"ts": ts, "client": client, "qname": qname, "qtype": qtype, "rcode": rcode,
            "outcome": outcome, "reason": "denied by **.example" if blocked else "allowed",
            "rule": "**.example" if blocked else None,
            "security": None if blocked else "insecure",
            "source": "blocked" if blocked and source == "resolved" else source,
            "chain": chain or [qname], "addresses": list(addresses),
            "ttl": None if blocked else 300, "count": count}


def _attempt(ts: float, destination: str, port: int, *, user: str | None = None,
             uid: int | None = None, source: str = "192.0.2.1", hook: str = "output",
             verdict: str = "refused") -> dict:
    event = {"ts": ts, "kind": "unauthorized", "subject": destination, "source": source,
             "destination": destination, "protocol": "tcp", "port": port, "hook": hook,
             "verdict": verdict}
    if uid is not None:
        event.update(uid=uid, user=user)
    return event


def build(path: str, now: float | None = None) -> str:
    """Write the fixture database at ``path`` (through StatsStore); returns ``path``."""
    now = time.time() if now is None else now
    t = now - 1800
    store = StatsStore(path, retention=3650 * 86400.0, clock=lambda: now)
    store.open()
    records = [
        ("query", _query(t, "192.0.2.10", "ads.example", outcome="blocked")),
        ("query", _query(t + 1, "192.0.2.10", "ads.example", outcome="blocked",
                         source="cache", count=2)),
        ("query", _query(t + 2, "192.0.2.10", "tracker.example", outcome="blocked",
                         qtype=28, rcode=3)),
        ("query", _query(t + 3, "192.0.2.20", "ads.example", outcome="blocked", qtype=65)),
        ("query", _query(now - 10 * 86400, "192.0.2.10", "old.example", outcome="blocked")),
        ("query", _query(t + 10, "192.0.2.10", "c1.fw.test", addresses=[GRANTED], chain=CHAIN)),
        ("query", _query(t + 11, "192.0.2.10", "c1.fw.test", source="cache",
                         addresses=[GRANTED], chain=CHAIN)),
        ("query", _query(t + 12, "192.0.2.20", "www.fw.test", addresses=[GRANTED])),
        ("query", _query(t + 13, "192.0.2.20", "nosuch.fw.test", outcome="no_address",
                         rcode=3)),
        ("grant", {"ts": t + 10, "address": GRANTED, "timeout": 300.0, "qname": "c1.fw.test",
                   "client": "192.0.2.10", "chain": CHAIN, "rule": None, "written": 1}),
        ("grant", {"ts": t + 12, "address": GRANTED, "timeout": 300.0, "qname": "www.fw.test",
                   "client": "192.0.2.20", "chain": ["www.fw.test"], "rule": None,
                   "written": 0}),
        ("event", _attempt(t + 20, REFUSED_ONLY, 443, user="alice", uid=1000)),
        ("event", _attempt(t + 21, REFUSED_ONLY, 443, user="alice", uid=1000)),
        ("event", _attempt(t + 22, REFUSED_ONLY, 443, user="alice", uid=1000)),
        ("event", _attempt(t + 23, GRANTED, 22, user="bob", uid=1001)),
        ("event", _attempt(t + 24, "203.0.113.7", 80, source="192.0.2.20", hook="forward")),
        ("event", _attempt(t + 25, "203.0.113.8", 443, user="alice", uid=1000,
                           verdict="would refuse")),
        ("event", {"ts": t + 30, "kind": "alert", "rule": "unauthorized",
                   "subject": REFUSED_ONLY, "message": "unauthorized tcp attempt"}),
    ]
    for kind, record in records:
        store.put(kind, record)
    store.flush()
    return path

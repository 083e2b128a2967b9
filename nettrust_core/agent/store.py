"""The statistics store: a background writer that puts batches of records into SQLite.

Receivers hand records over with :meth:`StatsStore.put`, which never blocks: when the queue is
full the record is dropped and counted.  The writer thread stores what accumulated once per
``flush_interval`` in one transaction.  It opens the database for each batch, as Pi-hole's FTL
does per storing interval: a database that was locked, read-only, full, moved or replaced is
picked up again on the next batch without restarting anything.  A batch that cannot be written
is dropped and counted by reason (``locked``, ``readonly``, ``full``, ``error``); the agent and
DNS carry on.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from typing import Callable


from ..worker import Worker
from .schema import ensure_schema

log = logging.getLogger("nettrust.agent.store")

#: How long a write waits for a lock held by a reader (``nettrust stats``, Datasette).
BUSY_TIMEOUT_MS = 200
RETENTION_EVERY = 60.0
_CHUNK = 500


def open_db(path: str, *, timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    return conn


def drop_reason(exc: Exception) -> str:
    """Why SQLite refused a write, as the label of the drop counter."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if "readonly" in text or "read-only" in text or "read only" in text:
        return "readonly"
    if "full" in text:
        return "full"
    return "error"


class StatsStore(Worker):
    name = "nettrust-stats-writer"

    def __init__(self, path: str, *, flush_interval: float = 1.0, queue_size: int = 100_000,
                 retention: float = 30 * 86400.0, retention_rows: int = 1_000_000,
                 on_new_domain: Callable[[str], None] | None = None,
                 on_event: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.path = path
        self.flush_interval = flush_interval
        self.retention = retention
        self.retention_rows = retention_rows
        self.on_new_domain = on_new_domain
        #: Told the kind of each event the store records of its own (``stats_dropped``).
        self.on_event = on_event
        self.clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        #: Records dropped, by reason; read by the metrics.
        self.dropped: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        self.batches = 0
        self._unreported_drops = 0
        self._last_retention = 0.0
        self._failing: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> int:
        """Create or migrate the database (WAL); returns the schema version found."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        conn = open_db(self.path, timeout_ms=5000)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            found = ensure_schema(conn)
        finally:
            conn.close()
        if found and found < 2:
            log.info("statistics database %s migrated from schema version %d", self.path, found)
        return found

    def stop(self, timeout: float = 10.0) -> None:
        """End the writer after one last flush (at most ``timeout`` seconds)."""
        super().stop(timeout)

    # -- the receiving side ----------------------------------------------------------------
    def put(self, kind: str, record: dict) -> bool:
        """Queue ``record`` (kind ``query``, ``grant`` or ``event``); never blocks."""
        try:
            self._queue.put_nowait((kind, record))
            return True
        except queue.Full:
            with self._lock:
                self.dropped["queue_full"] += 1
                self._unreported_drops += 1
            return False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- the writer ------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping.wait(self.flush_interval):
            self.flush()
        self.flush()

    def _drain(self) -> list[tuple[str, dict]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def flush(self) -> int:
        """Write everything queued now in one transaction; returns how many records."""
        batch = self._drain()
        now = self.clock()
        due = now - self._last_retention >= RETENTION_EVERY
        if not batch and not due:
            return 0
        try:
            conn = open_db(self.path)
        except sqlite3.Error as exc:
            self._failed(batch, exc)
            return 0
        try:
            new_domains: list[str] = []
            if batch:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    with self._lock:
                        drops, self._unreported_drops = self._unreported_drops, 0
                    if drops:
                        batch.append(("event", {"ts": now, "kind": "stats_dropped",
                                                "subject": None, "dropped": drops}))
                    new_domains = self._write(conn, batch)
                    conn.execute("COMMIT")
                    if drops and self.on_event is not None:
                        self.on_event("stats_dropped")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    with self._lock:
                        self._unreported_drops += drops
                    raise
            if due:
                self._last_retention = now
                self.prune(conn, now)
        except sqlite3.Error as exc:
            self._failed(batch, exc)
            return 0
        finally:
            conn.close()
        self.batches += 1
        if self._failing is not None:
            log.warning("statistics database %s writable again", self.path)
            self._failing = None
        for kind, _ in batch:
            self.written[kind] += 1
        if self.on_new_domain is not None:
            for name in new_domains:
                self.on_new_domain(name)
        return len(batch)

    def _failed(self, batch: list, exc: Exception) -> None:
        reason = drop_reason(exc)
        with self._lock:
            self.dropped[reason] += len(batch)
            self._unreported_drops += len(batch)
        if self._failing != reason:
            log.warning("statistics database %s: %s; dropping records (counted) until it "
                        "recovers", self.path, exc)
            self._failing = reason

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[str, dict]]) -> list[str]:
        queries = [r for k, r in batch if k == "query"]
        grants = [r for k, r in batch if k == "grant"]
        events = [r for k, r in batch if k == "event"]
        names = {r["qname"] for r in queries} | {r["qname"] for r in grants}
        clients = {r["client"] for r in queries + grants if r.get("client")}
        before = {n for n in _existing(conn, "domains", "name", names)}
        now = self.clock()
        conn.executemany("INSERT OR IGNORE INTO domains(name, first_seen) VALUES (?, ?)",
                         [(n, now) for n in names])
        conn.executemany("INSERT OR IGNORE INTO clients(address, first_seen) VALUES (?, ?)",
                         [(c, now) for c in clients])
        domain_ids = dict(_existing(conn, "domains", "name", names, with_id=True))
        client_ids = dict(_existing(conn, "clients", "address", clients, with_id=True))
        if queries:
            first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM queries").fetchone()[0]
            rows, answers = [], []
            for i, r in enumerate(queries):
                qid = first + i
                rows.append({"id": qid, "ts": r["ts"], "client_id": client_ids.get(r.get("client")),
                             "domain_id": domain_ids[r["qname"]], "qtype": r.get("qtype"),
                             "rcode": r.get("rcode"), "outcome": r.get("outcome"),
                             "reason": r.get("reason"), "rule": r.get("rule"),
                             "security": r.get("security"), "source": r.get("source"),
                             "chain": " > ".join(r.get("chain") or ()) or None,
                             "ttl": r.get("ttl"), "count": r.get("count", 1)})
                answers += [{"query_id": qid, "address": a} for a in r.get("addresses", ())]
            _insert(conn, "queries", rows)
            if answers:
                _insert(conn, "answers", answers)
        if grants:
            _insert(conn, "grants", [{
                "ts": r["ts"], "address": r["address"], "family": 6 if ":" in r["address"] else 4,
                "domain_id": domain_ids[r["qname"]], "client_id": client_ids.get(r.get("client")),
                "chain": " > ".join(r.get("chain") or ()) or None, "rule": r.get("rule"),
                "timeout": r.get("timeout"), "expires": r["ts"] + (r.get("timeout") or 0),
                "written": r.get("written")} for r in grants])
        if events:
            _insert(conn, "events", [{
                "ts": r.get("ts") or now, "kind": str(r.get("kind")), "subject": r.get("subject"),
                "data": json.dumps({k: v for k, v in r.items()
                                    if k not in ("t", "ts", "kind", "subject")}, default=str)}
                for r in events])
        return sorted(names - before)

    def prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Retention: rows older than ``retention``, and queries beyond ``retention_rows``."""
        cutoff = now - self.retention
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM queries WHERE ts < ?", (cutoff,))
            conn.execute("DELETE FROM queries WHERE id <= (SELECT MAX(id) FROM queries) - ?",
                         (self.retention_rows,))
            conn.execute("DELETE FROM answers WHERE query_id < "
                         "(SELECT COALESCE(MIN(id), 1 << 62) FROM queries)")
            conn.execute("DELETE FROM grants WHERE ts < ?", (cutoff,))
            conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _existing(conn, table: str, column: str, values, *, with_id: bool = False):
    """Rows of ``table`` whose ``column`` is one of ``values`` (looked up in chunks)."""
    values = list(values)
    select = f"id, {column}" if with_id else column
    for i in range(0, len(values), _CHUNK):
        chunk = values[i:i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT {select} FROM {table} WHERE {column} IN ({marks})", chunk):
            yield (row[1], row[0]) if with_id else row[0]


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict]) -> None:
    """Plain executemany inside the caller's transaction: sqlite-utils' ``insert_all`` commits
    on its own in some versions (Debian 12 ships 3.30), which would end our BEGIN IMMEDIATE."""
    if rows:
        columns = list(rows[0])
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                         f"VALUES ({', '.join(':' + c for c in columns)})", rows)

"""The statistics store: schema and migration, batches, drops instead of blocking, retention,
and the views ``nettrust stats`` prints (on a fresh database per test, as sqlite-utils' own
tests do)."""

import sqlite3
import threading
import time

import pytest

from nettrust_core.agent import stats_view as view
from nettrust_core.agent.schema import SCHEMA_V1, VERSION, SchemaError
from nettrust_core.agent.store import StatsStore


@pytest.fixture
def store(tmp_path):
    s = StatsStore(str(tmp_path / "stats.db"))
    s.open()
    return s


def query(qname, *, client="192.0.2.1", ts=None, outcome="granted", source="resolved",
          addresses=("198.51.100.1",), chain=None):
    return {"ts": ts or time.time(), "client": client, "qname": qname, "qtype": 1, "rcode": 0,
            "outcome": outcome, "reason": "allowed", "rule": None, "security": "insecure",
            "source": source, "chain": chain or [qname], "addresses": list(addresses), "ttl": 300}


def ro(store):
    return view.connect(store.path)


def test_new_database_has_the_current_schema_in_wal_mode(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"domains", "clients", "queries", "answers", "grants", "events"} <= tables


def test_batch_is_normalized_and_the_views_read_it(store):
    store.put("query", query("a.example"))
    store.put("query", query("a.example", source="cache"))
    store.put("query", query("b.example", client="192.0.2.2", outcome="blocked",
                             source="blocked", addresses=()))
    store.put("grant", {"ts": time.time(), "address": "198.51.100.1", "timeout": 310.0,
                        "qname": "a.example", "client": "192.0.2.1", "chain": ["a.example"],
                        "rule": "**.example", "written": 1})
    store.put("event", {"ts": time.time(), "kind": "unauthorized", "subject": "203.0.113.9"})
    assert store.flush() == 5
    conn = ro(store)
    s = view.summary(conn)
    assert s["queries"] == 3 and s["clients"] == 2 and s["domains"] == 2
    assert s["by_source"] == {"resolved": 1, "cache": 1, "blocked": 1}
    assert s["events"] == {"unauthorized": 1} and s["active_addresses"] == 1
    assert view.top(conn, "domains")[0] == {"domain": "a.example", "queries": 2, "cached": 1,
                                            "blocked": 0}
    assert view.top(conn, "blocked")[0]["domain"] == "b.example"
    host = view.hosts(conn)[0]
    assert (host["address"], host["queried"], host["names"]) == ("198.51.100.1", 2, ["a.example"])
    why = view.why(conn, "198.51.100.1")
    assert why["open"] and why["grants"][0]["rule"] == "**.example"
    assert why["answers"][0] == {"name": "a.example", "times": 2, "cached": 1,
                                 "clients": "192.0.2.1", "last": why["answers"][0]["last"]}
    assert view.summary(conn, time.time() + 10)["queries"] == 0        # --since


def test_new_domains_are_reported_once(tmp_path):
    seen = []
    s = StatsStore(str(tmp_path / "s.db"), on_new_domain=seen.append)
    s.open()
    s.put("query", query("a.example"))
    s.flush()
    s.put("query", query("a.example"))
    s.put("query", query("b.example"))
    s.flush()
    assert seen == ["a.example", "b.example"]


def test_locked_database_drops_and_counts_without_blocking(store):
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store.put("query", query("a.example"))
    started = time.monotonic()
    assert store.flush() == 0
    assert time.monotonic() - started < 2
    assert store.dropped["locked"] == 1
    holder.execute("ROLLBACK")
    store.put("query", query("b.example"))
    store.flush()
    conn = ro(store)
    assert view.summary(conn)["events"] == {"stats_dropped": 1}
    assert [r["domain"] for r in view.top(conn, "domains")] == ["b.example"]


def test_full_queue_drops_instead_of_waiting(tmp_path):
    s = StatsStore(str(tmp_path / "s.db"), queue_size=2)
    assert [s.put("query", query("x")) for _ in range(3)] == [True, True, False]
    assert s.dropped["queue_full"] == 1


def test_retention_by_age_and_rows(tmp_path):
    s = StatsStore(str(tmp_path / "s.db"), retention=3600, retention_rows=5)
    s.open()
    now = time.time()
    s.put("query", query("old.example", ts=now - 7200))
    for i in range(8):
        s.put("query", query(f"n{i}.example", ts=now))
    s.flush()
    conn = sqlite3.connect(s.path, isolation_level=None)
    s.prune(conn, now)
    names = [r[0] for r in conn.execute("SELECT d.name FROM queries q JOIN domains d "
                                        "ON d.id = q.domain_id ORDER BY q.id")]
    assert names == [f"n{i}.example" for i in range(3, 8)]
    assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 5


def test_old_schema_is_migrated_not_discarded(tmp_path):
    path = str(tmp_path / "v1.db")
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1)
    conn.execute("INSERT INTO queries(ts, client, domain, qtype, rcode, outcome, source) "
                 "VALUES (1e9, '10.0.0.5', 'old.example', 1, 0, 'granted', 'cache')")
    conn.execute("INSERT INTO grants(ts, address, name, client, expires) VALUES "
                 "(1e9, '2001:db8::7', 'old.example', '10.0.0.5', 1e9 + 60)")
    conn.commit()
    conn.close()
    s = StatsStore(path, retention=1e10)
    assert s.open() == 1
    c = ro(s)
    assert view.summary(c)["by_source"] == {"cache": 1}
    g = view.why(c, "2001:db8::7")["grants"][0]
    assert (g["name"], g["client"]) == ("old.example", "10.0.0.5")
    assert sqlite3.connect(path).execute("SELECT family FROM grants").fetchone()[0] == 6
    assert s.open() == VERSION                      # idempotent


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "new.db")
    sqlite3.connect(path).execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(SchemaError, match="newer"):
        StatsStore(path).open()


def test_views_work_while_the_writer_writes(store):
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            store.put("query", query(f"w{i}.example"))
            store.flush()
            i += 1
    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20):
            view.summary(ro(store))
    finally:
        stop.set()
        t.join()
    assert not store.dropped


def test_since_accepts_durations_and_dates():
    assert view.since("1h", now=10_000.0) == 10_000.0 - 3600
    assert view.since("2026-01-31") > 0
    with pytest.raises(view.StatsError, match="--since"):
        view.since("yesterday")


def test_datasette_canned_queries_run_on_the_schema(store):
    """conf/datasette-metadata.json's queries stay in step with the schema."""
    import json
    import pathlib
    meta = json.loads((pathlib.Path(__file__).parents[2] / "conf" /
                       "datasette-metadata.json").read_text())
    store.put("query", query("a.example"))
    store.put("grant", {"ts": time.time(), "address": "198.51.100.1", "timeout": 30.0,
                        "qname": "a.example", "client": "192.0.2.1"})
    store.flush()
    conn = sqlite3.connect(store.path)
    queries = meta["databases"]["stats"]["queries"]
    assert {"summary", "top_domains", "top_blocked", "clients", "hosts", "why"} <= set(queries)
    for name, q in queries.items():
        rows = conn.execute(q["sql"], {"hours": 24, "address": "198.51.100.1"}).fetchall()
        # nothing blocked or refused here (test_stats_schema runs those on a fuller database)
        assert name in ("top_blocked", "events", "blocked_per_client", "why_refused",
                        "refused_per_user") or rows, name

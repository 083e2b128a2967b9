"""``nettrust stats``: the statistics database's views, read-only, while the agent writes.

Each view is one function returning plain rows (the ``--json`` output); :func:`table` prints
them for a terminal.  They read the database's readable SQL views (nettrust_core.agent.views:
``query_log``, ``answer_log``, ``grant_log``, ``event_log``, ``refused_attempts``), the same ones
the dashboard and the canned queries in conf/datasette-metadata.json use.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime

from ..durations import parse_duration
from ..errors import NetTrustError

VIEWS = ("summary", "top", "hosts", "clients", "why")


class StatsError(NetTrustError):
    pass


def connect(path: str) -> sqlite3.Connection:
    """Open the database read-only (WAL readers never block the agent's writer)."""
    if not os.path.exists(path):
        raise StatsError(f"no statistics database at {path}: is [stats] enabled and "
                         "`nettrust agent` running?")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StatsError(f"{path}: not a statistics database ({exc})") from None
    from .schema import VERSION
    if version != VERSION:
        raise StatsError(f"{path} has schema version {version}, this NetTrust reads {VERSION}; "
                         "start `nettrust agent` once to migrate it")
    from .views import ensure_readable
    ensure_readable(conn)
    return conn


def since(text: str | None, now: float | None = None) -> float:
    """``--since``: a duration back from now ("1h", "30m", "7d") or an ISO date/time."""
    if not text:
        return 0.0
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise StatsError(f"--since {text!r}: expected a duration like \"1h\" or \"7d\", or a "
                         "date/time like 2026-01-31 or 2026-01-31T08:00") from None


def _rows(conn, sql: str, *args) -> list[dict]:
    return [dict(r) for r in conn.execute(sql, args)]


def summary(conn, start: float = 0.0) -> dict:
    one = lambda sql, *a: conn.execute(sql, a).fetchone()[0]  # noqa: E731
    now = time.time()
    return {
        "since": start or one("SELECT MIN(ts) FROM query_log"),
        "queries": one("SELECT COALESCE(SUM(count), 0) FROM query_log WHERE ts >= ?", start),
        "by_source": {r["source"]: r["n"] for r in _rows(conn, "SELECT source, SUM(count) AS n "
                      "FROM query_log WHERE ts >= ? GROUP BY source ORDER BY n DESC", start)},
        "by_outcome": {r["verdict"]: r["n"] for r in _rows(conn, "SELECT verdict, SUM(count) AS n "
                       "FROM query_log WHERE ts >= ? GROUP BY verdict ORDER BY n DESC", start)},
        "clients": one("SELECT COUNT(DISTINCT client) FROM query_log WHERE ts >= ?", start),
        "domains": one("SELECT COUNT(DISTINCT name) FROM query_log WHERE ts >= ?", start),
        "grants": one("SELECT COUNT(*) FROM grant_log WHERE ts >= ?", start),
        "granted_addresses": one("SELECT COUNT(DISTINCT address) FROM grant_log WHERE ts >= ?",
                                 start),
        "active_addresses": one("SELECT COUNT(DISTINCT address) FROM grant_log WHERE expires > ?",
                                now),
        "events": {r["kind"]: r["n"] for r in _rows(conn, "SELECT kind, COUNT(*) AS n FROM "
                   "event_log WHERE ts >= ? GROUP BY kind ORDER BY n DESC", start)},
    }


def top(conn, what: str, start: float = 0.0, limit: int = 10) -> list[dict]:
    if what == "domains":
        return _rows(conn, "SELECT name AS domain, SUM(count) AS queries, "
                     "SUM((source = 'cache') * count) AS cached, "
                     "SUM((verdict = 'blocked') * count) AS blocked FROM query_log "
                     "WHERE ts >= ? GROUP BY name ORDER BY queries DESC, domain LIMIT ?",
                     start, limit)
    if what == "clients":
        return clients(conn, start, limit)
    if what == "blocked":
        return _rows(conn, "SELECT name AS domain, SUM(count) AS queries, "
                     "COUNT(DISTINCT client) AS clients, MAX(reason) AS reason, MAX(rule) AS rule "
                     "FROM query_log WHERE ts >= ? AND verdict = 'blocked' GROUP BY name "
                     "ORDER BY queries DESC, domain LIMIT ?", start, limit)
    raise StatsError(f"top {what!r}: expected domains, clients or blocked")


def clients(conn, start: float = 0.0, limit: int = 100) -> list[dict]:
    return _rows(conn, "SELECT client, SUM(count) AS queries, "
                 "SUM((verdict = 'blocked') * count) AS blocked, COUNT(DISTINCT name) AS domains, "
                 "MAX(ts) AS last_seen FROM query_log WHERE ts >= ? AND client IS NOT NULL "
                 "GROUP BY client ORDER BY queries DESC, client LIMIT ?", start, limit)


def hosts(conn, start: float = 0.0, limit: int = 100) -> list[dict]:
    """Per answered address: how many answers named it, for which names, its last grant."""
    rows = _rows(conn, "SELECT address, SUM(count) AS queried, GROUP_CONCAT(DISTINCT name) AS "
                 "names, MAX(ts) AS last_queried FROM answer_log WHERE ts >= ? "
                 "GROUP BY address ORDER BY queried DESC, address LIMIT ?", start, limit)
    for r in rows:
        r["names"] = sorted((r["names"] or "").split(","))
        g = conn.execute("SELECT MAX(ts), MAX(expires) FROM grant_log WHERE address = ?",
                         (r["address"],)).fetchone()
        r["last_grant"], r["expires"] = g[0], g[1]
    return rows


def why(conn, address: str, start: float = 0.0) -> dict:
    """The whole story of ``address``: the grants that opened it (name, chain, client, rule,
    until when), the answers that named it, and the connection attempts refused to it."""
    grants = _rows(conn, "SELECT ts AS granted, expires, timeout, name, chain, client, rule "
                   "FROM grant_log WHERE address = ? AND ts >= ? ORDER BY ts", address, start)
    answers = _rows(conn, "SELECT name, SUM(count) AS times, SUM((source = 'cache') * count) AS "
                    "cached, GROUP_CONCAT(DISTINCT client) AS clients, MAX(ts) AS last "
                    "FROM answer_log WHERE address = ? AND ts >= ? GROUP BY name "
                    "ORDER BY times DESC, name", address, start)
    refused = _rows(conn, "SELECT ts AS attempted, verdict, source, user, uid, protocol, port, "
                    "hook FROM refused_attempts WHERE destination = ? AND ts >= ? ORDER BY ts",
                    address, start)
    expires = max((g["expires"] or 0 for g in grants), default=None)
    return {"address": address, "open": bool(expires and expires > time.time()),
            "expires": expires, "grants": grants, "answers": answers, "refused": refused}


def log(conn, after: int = 0, limit: int = 100, start: float = 0.0) -> list[dict]:
    """The query log, newest first: rows with an id above ``after`` (a follower passes the
    highest id it has), each with the addresses its answer granted."""
    rows = _rows(conn, "SELECT id, ts, name, client, qtype, verdict, reason, rule, source, "
                 "dnssec AS security, count FROM query_log WHERE id > ? AND ts >= ? "
                 "ORDER BY id DESC LIMIT ?", after, start, limit)
    for r in rows:          # a grant belongs to the decision that wrote it: same name, client, time
        r["grants"] = [g[0] for g in conn.execute(
            "SELECT DISTINCT address FROM grant_log WHERE name = ? AND client IS ? "
            "AND ts BETWEEN ? - 1 AND ? + 1 ORDER BY address",
            (r["name"], r["client"], r["ts"], r["ts"]))] if r["verdict"] == "granted" else []
    return rows


def timeline(conn, start: float, step: float, now: float | None = None) -> dict:
    """Queries, blocked queries, grants and refused attempts per ``step`` seconds from
    ``start`` to now: equal-length series over the same bucket starts."""
    now = time.time() if now is None else now
    first = int(start // step)
    n = max(1, int(now // step) - first + 1)
    out: dict[str, list] = {"t": [(first + i) * step for i in range(n)], "queries": [0] * n,
                            "blocked": [0] * n, "grants": [0] * n, "refused": [0] * n}
    series = (("queries", "SELECT CAST(ts / ? AS INTEGER), SUM(count) FROM query_log "
                          "WHERE ts >= ? GROUP BY 1"),
              ("blocked", "SELECT CAST(ts / ? AS INTEGER), SUM(count) FROM query_log "
                          "WHERE ts >= ? AND verdict = 'blocked' GROUP BY 1"),
              ("grants", "SELECT CAST(ts / ? AS INTEGER), COUNT(*) FROM grant_log WHERE ts >= ? "
                         "GROUP BY 1"),
              ("refused", "SELECT CAST(ts / ? AS INTEGER), COUNT(*) FROM refused_attempts "
                          "WHERE ts >= ? GROUP BY 1"))
    for key, sql in series:
        for bucket, value in conn.execute(sql, (step, first * step)):
            if 0 <= bucket - first < n:
                out[key][bucket - first] = value
    return out


def granted(conn, now: float | None = None, limit: int = 500) -> list[dict]:
    """Addresses whose last recorded grant is still open, soonest to close last."""
    now = time.time() if now is None else now
    rows = _rows(conn, "SELECT address, MAX(expires) AS expires, GROUP_CONCAT(DISTINCT name) "
                 "AS names, GROUP_CONCAT(DISTINCT client) AS clients FROM grant_log "
                 "WHERE expires > ? GROUP BY address ORDER BY expires DESC, address LIMIT ?",
                 now, limit)
    for r in rows:
        r["left"] = round(r["expires"] - now, 1)
        r["names"] = sorted((r["names"] or "").split(","))
        r["clients"] = sorted((r["clients"] or "").split(",")) if r["clients"] else []
    return rows


def refused(conn, start: float = 0.0, limit: int = 200) -> list[dict]:
    """Refused connection attempts (``unauthorized`` events), newest first; in audit mode
    their verdict is "would refuse"."""
    return _rows(conn, "SELECT id, ts, verdict, source, destination, protocol, port, hook, user, "
                 "uid FROM refused_attempts WHERE ts >= ? ORDER BY id DESC LIMIT ?", start, limit)


# -- terminal output ------------------------------------------------------------------------

def when(ts) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[dict], columns: list[str], formats: dict | None = None) -> str:
    """A plain aligned table; numbers right-aligned."""
    formats = formats or {}
    cells = [[str(formats.get(c, _plain)(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [c not in formats
               and any(isinstance(r.get(c), (int, float)) for r in rows)
               and all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
               for c in columns]
    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()
    out = [line([c.upper() for c in columns])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _plain(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)

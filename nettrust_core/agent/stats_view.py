"""``nettrust stats``: the statistics database's views, read-only, while the agent writes.

Each view is one function returning plain rows (the ``--json`` output); :func:`table` prints
them for a terminal.  The same queries are canned in conf/datasette-metadata.json.
"""

from __future__ import annotations

import json
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
        "since": start or one("SELECT MIN(ts) FROM queries"),
        "queries": one("SELECT COALESCE(SUM(count), 0) FROM queries WHERE ts >= ?", start),
        "by_source": {r["source"]: r["n"] for r in _rows(conn, "SELECT source, SUM(count) AS n "
                      "FROM queries WHERE ts >= ? GROUP BY source ORDER BY n DESC", start)},
        "by_outcome": {r["outcome"]: r["n"] for r in _rows(conn, "SELECT outcome, SUM(count) AS n "
                       "FROM queries WHERE ts >= ? GROUP BY outcome ORDER BY n DESC", start)},
        "clients": one("SELECT COUNT(DISTINCT client_id) FROM queries WHERE ts >= ?", start),
        "domains": one("SELECT COUNT(DISTINCT domain_id) FROM queries WHERE ts >= ?", start),
        "grants": one("SELECT COUNT(*) FROM grants WHERE ts >= ?", start),
        "granted_addresses": one("SELECT COUNT(DISTINCT address) FROM grants WHERE ts >= ?", start),
        "active_addresses": one("SELECT COUNT(DISTINCT address) FROM grants WHERE expires > ?", now),
        "events": {r["kind"]: r["n"] for r in _rows(conn, "SELECT kind, COUNT(*) AS n FROM events "
                   "WHERE ts >= ? GROUP BY kind ORDER BY n DESC", start)},
    }


def top(conn, what: str, start: float = 0.0, limit: int = 10) -> list[dict]:
    if what == "domains":
        return _rows(conn, "SELECT d.name AS domain, SUM(q.count) AS queries, "
                     "SUM((q.source = 'cache') * q.count) AS cached, "
                     "SUM((q.outcome = 'blocked') * q.count) AS blocked "
                     "FROM queries q JOIN domains d ON d.id = q.domain_id WHERE q.ts >= ? "
                     "GROUP BY q.domain_id ORDER BY queries DESC, domain LIMIT ?", start, limit)
    if what == "clients":
        return clients(conn, start, limit)
    if what == "blocked":
        return _rows(conn, "SELECT d.name AS domain, SUM(q.count) AS queries, "
                     "COUNT(DISTINCT q.client_id) AS clients, MAX(q.reason) AS reason, "
                     "MAX(q.rule) AS rule FROM queries q JOIN domains d ON d.id = q.domain_id "
                     "WHERE q.ts >= ? AND q.outcome = 'blocked' GROUP BY q.domain_id "
                     "ORDER BY queries DESC, domain LIMIT ?", start, limit)
    raise StatsError(f"top {what!r}: expected domains, clients or blocked")


def clients(conn, start: float = 0.0, limit: int = 100) -> list[dict]:
    return _rows(conn, "SELECT c.address AS client, SUM(q.count) AS queries, "
                 "SUM((q.outcome = 'blocked') * q.count) AS blocked, COUNT(DISTINCT q.domain_id) AS domains, "
                 "MAX(q.ts) AS last_seen FROM queries q JOIN clients c ON c.id = q.client_id "
                 "WHERE q.ts >= ? GROUP BY q.client_id ORDER BY queries DESC, client LIMIT ?",
                 start, limit)


def hosts(conn, start: float = 0.0, limit: int = 100) -> list[dict]:
    """Per answered address: how many answers named it, for which names, its last grant."""
    rows = _rows(conn, "SELECT a.address AS address, SUM(q.count) AS queried, "
                 "GROUP_CONCAT(DISTINCT d.name) AS names, MAX(q.ts) AS last_queried "
                 "FROM answers a JOIN queries q ON q.id = a.query_id "
                 "JOIN domains d ON d.id = q.domain_id WHERE q.ts >= ? "
                 "GROUP BY a.address ORDER BY queried DESC, address LIMIT ?", start, limit)
    for r in rows:
        r["names"] = sorted((r["names"] or "").split(","))
        g = conn.execute("SELECT MAX(ts), MAX(expires) FROM grants WHERE address = ?",
                         (r["address"],)).fetchone()
        r["last_grant"], r["expires"] = g[0], g[1]
    return rows


def why(conn, address: str, start: float = 0.0) -> dict:
    """Which names, answers, clients and rules opened ``address``, and until when."""
    grants = _rows(conn, "SELECT g.ts AS granted, g.expires AS expires, g.timeout AS timeout, "
                   "d.name AS name, g.chain AS chain, c.address AS client, g.rule AS rule "
                   "FROM grants g LEFT JOIN domains d ON d.id = g.domain_id "
                   "LEFT JOIN clients c ON c.id = g.client_id "
                   "WHERE g.address = ? AND g.ts >= ? ORDER BY g.ts", address, start)
    answers = _rows(conn, "SELECT d.name AS name, SUM(q.count) AS times, "
                    "SUM((q.source = 'cache') * q.count) AS cached, GROUP_CONCAT(DISTINCT c.address) AS clients, "
                    "MAX(q.ts) AS last FROM answers a JOIN queries q ON q.id = a.query_id "
                    "JOIN domains d ON d.id = q.domain_id LEFT JOIN clients c ON c.id = q.client_id "
                    "WHERE a.address = ? AND q.ts >= ? GROUP BY q.domain_id ORDER BY times DESC",
                    address, start)
    expires = max((g["expires"] or 0 for g in grants), default=None)
    return {"address": address, "open": bool(expires and expires > time.time()),
            "expires": expires, "grants": grants, "answers": answers}


def log(conn, after: int = 0, limit: int = 100, start: float = 0.0) -> list[dict]:
    """The query log, newest first: rows with an id above ``after`` (a follower passes the
    highest id it has), each with the addresses its answer granted."""
    rows = _rows(conn, "SELECT q.id AS id, q.ts AS ts, d.name AS name, c.address AS client, "
                 "q.qtype AS qtype, q.outcome AS verdict, q.reason AS reason, q.rule AS rule, "
                 "q.source AS source, q.security AS security, q.count AS count "
                 "FROM queries q JOIN domains d ON d.id = q.domain_id "
                 "LEFT JOIN clients c ON c.id = q.client_id WHERE q.id > ? AND q.ts >= ? "
                 "ORDER BY q.id DESC LIMIT ?", after, start, limit)
    for r in rows:          # a grant belongs to the decision that wrote it: same name, client, time
        r["grants"] = [g[0] for g in conn.execute(
            "SELECT DISTINCT g.address FROM grants g JOIN domains d ON d.id = g.domain_id "
            "LEFT JOIN clients c ON c.id = g.client_id WHERE d.name = ? "
            "AND c.address IS ? AND g.ts BETWEEN ? - 1 AND ? + 1 ORDER BY g.address",
            (r["name"], r["client"], r["ts"], r["ts"]))] if r["verdict"] == "granted" else []
    return rows


def timeline(conn, start: float, step: float, now: float | None = None) -> dict:
    """Queries, blocked queries, grants and refused attempts per ``step`` seconds from
    ``start`` to now: equal-length series over the same bucket starts."""
    now = time.time() if now is None else now
    first = int(start // step)
    n = max(1, int(now // step) - first + 1)
    out: dict[str, list] = {"t": [(first + i) * step for i in range(n)], "queries": [0] * n, "blocked": [0] * n,
           "grants": [0] * n, "refused": [0] * n}
    series = (("queries", "SELECT CAST(ts / ? AS INTEGER), SUM(count) FROM queries "
                          "WHERE ts >= ? GROUP BY 1"),
              ("blocked", "SELECT CAST(ts / ? AS INTEGER), SUM(count) FROM queries "
                          "WHERE ts >= ? AND outcome = 'blocked' GROUP BY 1"),
              ("grants", "SELECT CAST(ts / ? AS INTEGER), COUNT(*) FROM grants WHERE ts >= ? "
                         "GROUP BY 1"),
              ("refused", "SELECT CAST(ts / ? AS INTEGER), COUNT(*) FROM events "
                          "WHERE ts >= ? AND kind = 'unauthorized' GROUP BY 1"))
    for key, sql in series:
        for bucket, value in conn.execute(sql, (step, first * step)):
            if 0 <= bucket - first < n:
                out[key][bucket - first] = value
    return out


def granted(conn, now: float | None = None, limit: int = 500) -> list[dict]:
    """Addresses whose last recorded grant is still open, soonest to close last."""
    now = time.time() if now is None else now
    rows = _rows(conn, "SELECT g.address AS address, MAX(g.expires) AS expires, "
                 "GROUP_CONCAT(DISTINCT d.name) AS names, GROUP_CONCAT(DISTINCT c.address) AS "
                 "clients FROM grants g LEFT JOIN domains d ON d.id = g.domain_id "
                 "LEFT JOIN clients c ON c.id = g.client_id WHERE g.expires > ? "
                 "GROUP BY g.address ORDER BY expires DESC, address LIMIT ?", now, limit)
    for r in rows:
        r["left"] = round(r["expires"] - now, 1)
        r["names"] = sorted((r["names"] or "").split(","))
        r["clients"] = sorted((r["clients"] or "").split(",")) if r["clients"] else []
    return rows


def refused(conn, start: float = 0.0, limit: int = 200) -> list[dict]:
    """Refused connection attempts (``unauthorized`` events), newest first; in audit mode
    their verdict is "would refuse"."""
    out = []
    for r in _rows(conn, "SELECT id, ts, data FROM events WHERE kind = 'unauthorized' "
                   "AND ts >= ? ORDER BY id DESC LIMIT ?", start, limit):
        try:
            data = json.loads(r["data"] or "{}")
        except ValueError:
            data = {}
        out.append({"id": r["id"], "ts": r["ts"], "verdict": data.get("verdict", "refused"),
                    **{k: data.get(k) for k in ("source", "destination", "protocol", "port",
                                                "hook", "user", "uid")}})
    return out


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

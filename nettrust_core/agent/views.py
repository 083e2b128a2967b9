"""The statistics database's readable views: what people query (the CLI, the dashboard, Datasette's
canned queries, and their own SQL).

The tables (nettrust_core.agent.schema) store numbers and ids: Unix times, qtype and rcode codes,
domain and client ids.  Each view joins them back into words: ISO 8601 times in UTC beside the
raw ``ts`` (kept for range filters, which then use the tables' indexes), record type and rcode
names, the verdict, names and client addresses.  The views are plain (no aggregates), so SQLite
flattens them into the caller's query.

The agent (re)creates them whenever it opens the database; a reader of a database an older agent
wrote, whose views are missing or different, gets the current ones as TEMP views of its own
connection (they shadow the stored ones; read-only connections may create them).
"""

from __future__ import annotations

import sqlite3

#: Record type codes and names (the rest are written TYPEnnn, RFC 3597).
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 43: "DS", 46: "RRSIG", 47: "NSEC",
          48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF",
          255: "ANY", 257: "CAA"}
#: Response codes and names (the rest are written RCODEnn).
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


def _names(column: str, names: dict[int, str], prefix: str) -> str:
    cases = " ".join(f"WHEN {code} THEN '{name}'" for code, name in sorted(names.items()))
    return f"CASE {column} {cases} ELSE '{prefix}' || {column} END"


def _iso(column: str) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%SZ', {column}, 'unixepoch')"


def _json(field: str) -> str:
    return f"json_extract(e.data, '$.{field}')"


#: view name -> its SELECT.  Columns are documented in the README ("The statistics database"),
#: and tests/unit/test_stats_schema.py holds the two in agreement.
VIEWS: dict[str, str] = {
    "query_log": f"""
        SELECT q.id AS id, q.ts AS ts, {_iso('q.ts')} AS time, c.address AS client,
               d.name AS name, {_names('q.qtype', QTYPES, 'TYPE')} AS qtype,
               {_names('q.rcode', RCODES, 'RCODE')} AS rcode, q.outcome AS verdict,
               q.reason AS reason, q.rule AS rule, q.security AS dnssec, q.source AS source,
               q.chain AS chain, q.ttl AS ttl, q.count AS count
        FROM queries q JOIN domains d ON d.id = q.domain_id
        LEFT JOIN clients c ON c.id = q.client_id""",
    "answer_log": f"""
        SELECT a.query_id AS query_id, q.ts AS ts, {_iso('q.ts')} AS time,
               c.address AS client, d.name AS name, {_names('q.qtype', QTYPES, 'TYPE')} AS qtype,
               a.address AS address, q.source AS source, q.count AS count
        FROM answers a JOIN queries q ON q.id = a.query_id
        JOIN domains d ON d.id = q.domain_id LEFT JOIN clients c ON c.id = q.client_id""",
    "grant_log": f"""
        SELECT g.id AS id, g.ts AS ts, {_iso('g.ts')} AS time, g.address AS address,
               CASE g.family WHEN 6 THEN 'ipv6' WHEN 4 THEN 'ipv4' END AS family,
               d.name AS name, g.chain AS chain, c.address AS client, g.rule AS rule,
               g.timeout AS timeout, g.expires AS expires, {_iso('g.expires')} AS until,
               g.written AS written
        FROM grants g LEFT JOIN domains d ON d.id = g.domain_id
        LEFT JOIN clients c ON c.id = g.client_id""",
    "event_log": f"""
        SELECT e.id AS id, e.ts AS ts, {_iso('e.ts')} AS time, e.kind AS kind,
               e.subject AS subject, e.data AS data
        FROM events e""",
    "refused_attempts": f"""
        SELECT e.id AS id, e.ts AS ts, {_iso('e.ts')} AS time,
               COALESCE({_json('verdict')}, 'refused') AS verdict, {_json('source')} AS source,
               {_json('destination')} AS destination, {_json('protocol')} AS protocol,
               {_json('port')} AS port, {_json('hook')} AS hook, {_json('user')} AS user,
               {_json('uid')} AS uid, {_json('bypass')} AS bypass
        FROM events e WHERE e.kind = 'unauthorized'""",
}


def _sql(name: str, temp: bool = False) -> str:
    return f"CREATE {'TEMP ' if temp else ''}VIEW {name} AS" + VIEWS[name]


def install(conn: sqlite3.Connection) -> None:
    """Create the views, replacing any whose definition changed (the agent, at open)."""
    stored = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
    for name in VIEWS:
        if stored.get(name) == _sql(name):
            continue
        conn.execute(f"DROP VIEW IF EXISTS {name}")
        conn.execute(_sql(name))


def ensure_readable(conn: sqlite3.Connection) -> None:
    """On a reader's connection: TEMP copies of views missing or outdated in the database."""
    stored = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
    for name in VIEWS:
        if stored.get(name) != _sql(name):
            conn.execute(_sql(name, temp=True))

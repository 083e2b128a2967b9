"""The statistics database's schema, its version, and the migrations from older versions.

Normalized in the spirit of Pi-hole's query database — queries reference ``domains`` and
``clients`` — plus what no resolver records: the ``answers`` each query got (so "how many times
was this host queried" is one index lookup), the ``grants`` they opened, and typed ``events``.
The version lives in ``PRAGMA user_version``; an older database is migrated in one transaction,
never discarded.
"""

from __future__ import annotations

import sqlite3

from ..errors import NetTrustError
from .views import install as install_views

VERSION = 2

#: The current schema (version 2).
SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, first_seen REAL);
CREATE TABLE IF NOT EXISTS clients (
    id INTEGER PRIMARY KEY, address TEXT NOT NULL UNIQUE, first_seen REAL);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL,
    client_id INTEGER REFERENCES clients(id), domain_id INTEGER NOT NULL REFERENCES domains(id),
    qtype INTEGER, rcode INTEGER,
    outcome TEXT, reason TEXT, rule TEXT, security TEXT,
    source TEXT,              -- resolved | cache | local | blocked
    chain TEXT,               -- CNAME chain, names joined by ' > '
    ttl INTEGER,
    count INTEGER NOT NULL DEFAULT 1);  -- identical cache hits within one second share a row
CREATE INDEX IF NOT EXISTS queries_ts ON queries(ts);
CREATE INDEX IF NOT EXISTS queries_domain ON queries(domain_id);
CREATE INDEX IF NOT EXISTS queries_client ON queries(client_id);
CREATE TABLE IF NOT EXISTS answers (
    query_id INTEGER NOT NULL REFERENCES queries(id), address TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS answers_address ON answers(address);
CREATE INDEX IF NOT EXISTS answers_query ON answers(query_id);
CREATE TABLE IF NOT EXISTS grants (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, address TEXT NOT NULL, family INTEGER,
    domain_id INTEGER REFERENCES domains(id), client_id INTEGER REFERENCES clients(id),
    chain TEXT, rule TEXT, timeout REAL, expires REAL, written INTEGER);
CREATE INDEX IF NOT EXISTS grants_address ON grants(address);
CREATE INDEX IF NOT EXISTS grants_ts ON grants(ts);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, subject TEXT, data TEXT);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
"""

#: Version 1 (the first prototype's flat tables), kept so tests can build one and migrate it.
SCHEMA_V1 = """
CREATE TABLE queries (id INTEGER PRIMARY KEY, ts REAL NOT NULL, client TEXT, domain TEXT NOT NULL,
                      qtype INTEGER, rcode INTEGER, outcome TEXT, source TEXT);
CREATE TABLE grants (id INTEGER PRIMARY KEY, ts REAL NOT NULL, address TEXT NOT NULL,
                     name TEXT, client TEXT, expires REAL);
PRAGMA user_version = 1;
"""


class SchemaError(NetTrustError):
    pass


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` inside the caller's transaction (``executescript`` would
    commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Flat v1 rows into the normalized tables: names and clients become rows of their own."""
    conn.execute("ALTER TABLE queries RENAME TO queries_v1")
    conn.execute("ALTER TABLE grants RENAME TO grants_v1")
    run_script(conn, SCHEMA)
    conn.execute("""INSERT OR IGNORE INTO domains(name, first_seen)
                    SELECT name, MIN(ts) FROM (SELECT domain AS name, ts FROM queries_v1
                                               UNION ALL SELECT name, ts FROM grants_v1
                                               WHERE name IS NOT NULL) GROUP BY name""")
    conn.execute("""INSERT OR IGNORE INTO clients(address, first_seen)
                    SELECT client, MIN(ts) FROM (SELECT client, ts FROM queries_v1
                                                 UNION ALL SELECT client, ts FROM grants_v1)
                    WHERE client IS NOT NULL GROUP BY client""")
    conn.execute("""INSERT INTO queries(id, ts, client_id, domain_id, qtype, rcode, outcome, source)
                    SELECT q.id, q.ts, c.id, d.id, q.qtype, q.rcode, q.outcome, q.source
                    FROM queries_v1 q JOIN domains d ON d.name = q.domain
                    LEFT JOIN clients c ON c.address = q.client""")
    conn.execute("""INSERT INTO grants(id, ts, address, family, domain_id, client_id, chain, expires)
                    SELECT g.id, g.ts, g.address, CASE WHEN instr(g.address, ':') THEN 6 ELSE 4 END,
                           d.id, c.id, g.name, g.expires
                    FROM grants_v1 g LEFT JOIN domains d ON d.name = g.name
                    LEFT JOIN clients c ON c.address = g.client""")
    conn.execute("DROP TABLE queries_v1")
    conn.execute("DROP TABLE grants_v1")


#: version → the step that brings a database of that version to the next one.
MIGRATIONS = {1: _v1_to_v2}


def _views(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        install_views(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def ensure_schema(conn: sqlite3.Connection) -> int:
    """Create or migrate the schema and (re)create the readable views (nettrust_core.agent.views);
    returns the version found (0: new database)."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > VERSION:
        raise SchemaError(f"the database has schema version {found}, newer than this "
                          f"NetTrust's {VERSION}; upgrade NetTrust or use another database")
    if found == VERSION:
        _views(conn)
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        if found == 0:
            run_script(conn, SCHEMA)
        version = found
        while 0 < version < VERSION:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {VERSION}")
        install_views(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found

"""The statistics database is an interface: the README documents every table, view and column
(a column added without its documentation fails here), its enumerated values are the code's,
and its three example queries return what they say on a fixture database."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from nettrust_core.agent import stats_view as view
from nettrust_core.agent.schema import ensure_schema
from nettrust_core.agent.views import VIEWS
from nettrust_core.answer import Security, Source
from nettrust_core.policy import Outcome
from testbed import stats_fixture

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### The statistics database"


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n### ", start + len(SECTION))
    return text[start:end if end != -1 else None]


def documented(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """(``table``|``view``, name) -> {column: type} from the section's #### headings and rows."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    current = None
    for line in section(text).splitlines():
        heading = re.match(r"#### (Table|View) `(\w+)`$", line)
        if heading:
            current = out.setdefault((heading[1].lower(), heading[2]), {})
            continue
        row = re.match(r"\| `(\w+)` \| (\w+) \| (.+) \|$", line)
        if row and current is not None:
            current[row[1]] = row[2]
    return out


def actual(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, str]]:
    out = {}
    for kind, name in conn.execute("SELECT type, name FROM sqlite_master WHERE type IN "
                                   "('table', 'view') AND name NOT LIKE 'sqlite_%'"):
        out[(kind, name)] = {c[1]: c[2] for c in conn.execute(f"PRAGMA table_info({name})")}
    return out


def differences(docs, real) -> list[str]:
    problems = []
    for key in sorted(set(real) | set(docs)):
        if key not in docs:
            problems.append(f"{key[0]} {key[1]} is not documented in the README")
            continue
        if key not in real:
            problems.append(f"{key[0]} {key[1]} is documented but does not exist")
            continue
        for column in sorted(set(real[key]) | set(docs[key])):
            if column not in docs[key]:
                problems.append(f"{key[1]}.{column} is not documented")
            elif column not in real[key]:
                problems.append(f"{key[1]}.{column} is documented but does not exist")
            elif key[0] == "table" and docs[key][column] != real[key][column]:
                problems.append(f"{key[1]}.{column}: documented {docs[key][column]}, "
                                f"declared {real[key][column]}")
    return problems


@pytest.fixture
def fresh(tmp_path):
    conn = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    ensure_schema(conn)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory):
    return stats_fixture.build(str(tmp_path_factory.mktemp("stats") / "stats.db"))


def test_every_table_view_and_column_is_documented(fresh):
    docs = documented(README.read_text())
    assert {name for kind, name in docs if kind == "view"} == set(VIEWS)
    assert differences(docs, actual(fresh)) == []


def test_an_undocumented_column_fails_the_comparison(fresh):
    """Control: the check sees a column added to a table, a new view, and a column gone."""
    docs = documented(README.read_text())
    fresh.execute("ALTER TABLE queries ADD COLUMN upstream TEXT")
    fresh.execute("CREATE VIEW extra AS SELECT 1 AS one")
    real = actual(fresh)
    del real[("view", "query_log")]["dnssec"]
    assert sorted(differences(docs, real)) == [
        "queries.upstream is not documented",
        "query_log.dnssec is documented but does not exist",
        "view extra is not documented in the README"]


def test_enumerated_values_are_the_codes(fresh):
    text = section(README.read_text())
    values = (*(o.value for o in Outcome), "unknown", *(s.value for s in Source), "blocked",
              *(s.name.lower() for s in Security))
    for value in values:
        assert f"`{value}`" in text, value
    for kind in ("unauthorized", "unauthorized_connection", "strike", "alert", "stats_dropped"):
        assert f"`{kind}`" in text, kind


def test_views_spell_codes_and_times(fixture_db):
    conn = view.connect(fixture_db)
    rows = {r["name"]: dict(r) for r in conn.execute("SELECT * FROM query_log")}
    assert rows["tracker.example"]["qtype"] == "AAAA"
    assert rows["tracker.example"]["rcode"] == "NXDOMAIN"
    assert rows["ads.example"]["verdict"] == "blocked"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows["www.fw.test"]["time"])
    grant = conn.execute("SELECT * FROM grant_log WHERE name = 'c1.fw.test'").fetchone()
    assert grant["family"] == "ipv4" and grant["chain"] == "c1.fw.test > c2.fw.test > www.fw.test"
    assert grant["until"] > grant["time"]


def test_a_reader_gets_the_views_of_an_older_database(tmp_path):
    """An agent of an earlier release wrote no views: a read-only reader adds TEMP ones."""
    path = stats_fixture.build(str(tmp_path / "old.db"))
    conn = sqlite3.connect(path)
    for name in VIEWS:
        conn.execute(f"DROP VIEW {name}")
    conn.commit()
    conn.close()
    ro = view.connect(path)
    assert view.summary(ro)["queries"] == 10
    assert ro.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'view'").fetchone()[0] == 0


def example_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", section(README.read_text()), re.S)


def test_the_three_example_queries_answer_their_questions(fixture_db):
    conn = sqlite3.connect(f"file:{fixture_db}?mode=ro", uri=True)
    blocked, opened, refused = example_queries()
    assert conn.execute(blocked).fetchall() == [("192.0.2.10", "ads.example", 3),
                                                ("192.0.2.10", "tracker.example", 1),
                                                ("192.0.2.20", "ads.example", 1)]
    rows = conn.execute(opened).fetchall()
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        ("c1.fw.test", "c1.fw.test > c2.fw.test > www.fw.test", "192.0.2.10", 1),
        ("www.fw.test", "www.fw.test", "192.0.2.20", 1)]
    assert [r[:3] for r in conn.execute(refused)] == [("alice", 3, 1), ("bob", 1, 1),
                                                      ("client 192.0.2.20", 1, 1)]


def test_datasette_canned_queries_read_the_views(fixture_db):
    metadata = json.loads((README.parent / "conf" / "datasette-metadata.json").read_text())
    db = metadata["databases"]["stats"]
    conn = sqlite3.connect(f"file:{fixture_db}?mode=ro", uri=True)
    params = {"hours": 24 * 30, "address": stats_fixture.GRANTED}
    results = {}
    for name, canned in db["queries"].items():
        sql = canned["sql"]
        tables = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", sql, re.I))
        assert tables and tables <= set(VIEWS), (name, tables)
        results[name] = conn.execute(sql, {k: v for k, v in params.items()
                                           if f":{k}" in sql}).fetchall()
    assert results["why"][0][3:6] == ("www.fw.test", "www.fw.test", "192.0.2.20")
    assert results["why_refused"][0][1:4] == ("refused", "192.0.2.1", "bob")
    assert results["refused_per_user"][0][:2] == ("alice", 3)
    assert sum(r[2] for r in results["summary"]) == 10
    assert set(db["tables"]) >= set(VIEWS)

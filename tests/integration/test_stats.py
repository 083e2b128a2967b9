"""Statistics, metrics and alerts end to end: real Unbound with the module streaming dnstap and
decision records to a real ``nettrust agent``, real dig clients, the real ``nettrust stats`` CLI,
a Prometheus scrape with curl and a real HTTP server receiving the webhook.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lab_util import direct, wait_for

from nettrust_core.agent.schema import SCHEMA_V1
from testbed.lab import Lab
from testbed.product import NetTrustHost, stats_section
from testbed.zones import h_address

pytestmark = pytest.mark.integration

WEBHOOK_PORT = 8931
WINDOW = 4.0
CONFIG = """
[policy]
deny = ["**.blocked.fw.test"]
[grants]
min_ttl = "1s"
max_ttl = "1h"
grace = "2s"
[lifecycle]
report_interval = "1s"
[alerts]
webhook = "http://127.0.0.1:{port}/hook"
blocked_per_minute = 3
window = "{window}s"
"""


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def webhook(lab):
    """A real HTTP server listening in the lab's host namespace."""
    sock = lab.socket("host")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", WEBHOOK_PORT))
    sock.listen(8)
    server = http.server.HTTPServer(("127.0.0.1", WEBHOOK_PORT), Hook, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Hook.received
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def nt(lab, webhook):
    host = NetTrustHost(lab, CONFIG.format(port=WEBHOOK_PORT, window=WINDOW) + stats_section(lab))
    host.start_agent()              # first, so Unbound's dnstap connects at once
    host.start()
    wait_for(lambda: "dnstap stream connected" in host.agent.log_text(), "dnstap connection")
    yield host
    lab.stop_unbound()
    host.stop_agent()



def dig_batch(lab, queries: list[str]) -> list[str]:
    """Send each 'name [type]' with one dig process; returns the +short answers."""
    batch = Path(lab.work_dir) / f"queries-{time.monotonic_ns()}.txt"
    batch.write_text("\n".join(queries) + "\n")
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=3", "+short", "-f",
                           str(batch)], timeout=120).stdout
    return out.splitlines()


def stats(nt, *args):
    return json.loads(nt.nettrust("stats", "--json", *args).stdout)


def scrape(lab) -> dict[str, float]:
    return scrape_port(lab, 9531)


def scrape_port(lab, port: int) -> dict[str, float]:
    out = lab.run("host", ["curl", "-sS", "--max-time", "3", f"http://127.0.0.1:{port}/metrics"]).stdout
    values = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def settled(nt, expected_total):
    """Wait until the agent has stored ``expected_total`` queries (join delay + flush)."""
    return wait_for(lambda: (s := stats(nt, "summary"))["queries"] >= expected_total and s,
                    f"{expected_total} queries in the database")


def quiet(nt):
    """The summary once nothing is pending any more (the lab's readiness probes included)."""
    previous = None
    while (current := stats(nt, "summary")) != previous:
        previous = current
        time.sleep(1.5)
    return current


def test_counts_equal_the_queries_sent_cache_hits_included(nt, lab):
    before = quiet(nt)
    names = [f"n{i}.fw.test" for i in range(20)]
    queries = names + names + names[:10] + ["x.blocked.fw.test", "y.blocked.fw.test",
                                             "nosuch.fw.test", "www.fw.test AAAA"]
    dig_batch(lab, queries)
    after = settled(nt, before["queries"] + len(queries))
    assert after["queries"] - before["queries"] == len(queries)
    top = {r["domain"]: r for r in stats(nt, "top", "domains", "-n", "1000")}
    for name in names[:10]:
        assert (top[name]["queries"], top[name]["cached"]) == (3, 2)
    for name in names[10:]:
        assert (top[name]["queries"], top[name]["cached"]) == (2, 1)
    blocked = {r["domain"]: r for r in stats(nt, "top", "blocked")}
    assert blocked["x.blocked.fw.test"]["queries"] == 1
    assert blocked["x.blocked.fw.test"]["rule"] == "**.blocked.fw.test"
    by_source = after["by_source"]
    assert by_source.get("cache", 0) - before["by_source"].get("cache", 0) == 30
    assert by_source.get("blocked", 0) - before["by_source"].get("blocked", 0) == 2
    clients = {r["client"]: r for r in stats(nt, "clients")}
    assert clients["127.0.0.1"]["blocked"] >= 2
    text = nt.nettrust("stats", "top", "domains").stdout
    assert text.splitlines()[0].split() == ["DOMAIN", "QUERIES", "CACHED", "BLOCKED"]


def test_why_explains_a_granted_address(nt, lab):
    dig_batch(lab, ["c1.fw.test", "c1.fw.test", "www.fw.test"])
    address = "198.51.100.10"                      # c1 -> c2 -> www.fw.test
    why = wait_for(lambda: (w := stats(nt, "why", address))["answers"] and
                   sum(a["times"] for a in w["answers"]) >= 3 and w, "why")
    assert why["open"] and why["expires"] > time.time()
    grant = next(g for g in why["grants"] if g["name"] == "c1.fw.test")
    assert grant["chain"] == "c1.fw.test > c2.fw.test > www.fw.test"
    assert grant["client"] == "127.0.0.1"
    assert 280 < grant["expires"] - grant["granted"] <= 302    # TTL (<= 300) + grace 2
    answers = {a["name"]: a for a in why["answers"]}
    assert answers["c1.fw.test"]["times"] >= 2 and answers["c1.fw.test"]["cached"] >= 1
    hosts = {h["address"]: h for h in stats(nt, "hosts")}
    assert hosts[address]["queried"] >= 3
    assert {"c1.fw.test", "www.fw.test"} <= set(hosts[address]["names"])
    text = nt.nettrust("stats", "why", address).stdout
    assert text.startswith(f"{address}: open until") and "c1.fw.test" in text


def test_metrics_match_the_traffic(nt, lab):
    before = scrape(lab)
    hit = 'nettrust_queries_total{cache="hit",qtype="A",verdict="granted"}'
    miss = 'nettrust_queries_total{cache="miss",qtype="A",verdict="granted"}'
    miss6 = 'nettrust_queries_total{cache="miss",qtype="AAAA",verdict="granted"}'
    names = [f"h{i}.fw.test" for i in range(101, 106)]
    dig_batch(lab, names * 3 + ["h101.fw.test AAAA"])
    after = wait_for(lambda: (m := scrape(lab)).get(hit, 0) - before.get(hit, 0) >= 10 and m,
                     "metrics")
    assert after[hit] - before.get(hit, 0) == 10
    assert after[miss] - before.get(miss, 0) == 5
    assert after[miss6] - before.get(miss6, 0) == 1
    v4 = 'nettrust_grants_total{family="ipv4"}'
    assert after[v4] - before.get(v4, 0) == 5
    assert after['nettrust_granted_addresses{family="ipv4"}'] >= 5
    assert after['nettrust_granted_addresses{family="ipv6"}'] >= 1
    assert after["nettrust_firewall_write_seconds_count"] - \
        before.get("nettrust_firewall_write_seconds_count", 0) == 6
    assert after['nettrust_answer_ttl_seconds_bucket{le="300.0"}'] - \
        before.get('nettrust_answer_ttl_seconds_bucket{le="300.0"}', 0) == 6
    for series in ("nettrust_backend_errors_total", "nettrust_stats_dropped_total"):
        assert any(k.startswith(series) for k in after) or series == "nettrust_stats_dropped_total"


def test_alert_reaches_the_webhook_once_per_window(nt, lab, webhook):
    webhook.clear()
    burst = [f"a{i}.blocked.fw.test" for i in range(6)]
    dig_batch(lab, burst)
    wait_for(lambda: webhook, "the first alert")
    dig_batch(lab, [f"b{i}.blocked.fw.test" for i in range(6)])
    time.sleep(1.0)
    alerts = [a for a in webhook if a["rule"] == "blocked_per_minute"]
    assert len(alerts) == 1, webhook
    assert alerts[0]["subject"] == "127.0.0.1" and "blocked names" in alerts[0]["message"]
    time.sleep(WINDOW)
    dig_batch(lab, [f"c{i}.blocked.fw.test" for i in range(2)])
    wait_for(lambda: len(webhook) >= 2, "the alert of the next window")
    assert len([a for a in webhook if a["rule"] == "blocked_per_minute"]) == 2
    events = wait_for(lambda: stats(nt, "summary")["events"].get("alert", 0) >= 2, "alert events")
    assert events


def test_readonly_database_drops_and_counts_while_dns_answers(nt, lab):
    db = nt.config.stats.database
    dropped = 'nettrust_stats_dropped_total{reason="readonly"}'
    settled(nt, 1)
    subprocess.run(["chattr", "+i", db], check=True)
    try:
        answers = dig_batch(lab, [f"h{i}.fw.test" for i in range(201, 211)])
        assert len(answers) == 10 and all(a.startswith("198.") for a in answers)
        metrics = wait_for(lambda: (m := scrape(lab)).get(dropped, 0) >= 10 and m, "drops")
        assert metrics[dropped] >= 10
        stored = {r["domain"] for r in stats(nt, "top", "domains", "-n", "1000")}
        assert not stored & {f"h{i}.fw.test" for i in range(201, 211)}
    finally:
        subprocess.run(["chattr", "-i", db], check=True)
    dig_batch(lab, ["h220.fw.test"])
    wait_for(lambda: any(r["domain"] == "h220.fw.test"
                         for r in stats(nt, "top", "domains", "-n", "1000")), "recovery")
    assert wait_for(lambda: stats(nt, "summary")["events"].get("stats_dropped"), "drop event")
    assert "writable again" in nt.agent.log_text()


def test_old_schema_database_is_migrated(nt, lab):
    """An agent started on a version-1 database keeps its rows, normalized."""
    import sqlite3
    base = Path(lab.work_dir) / "old"
    base.mkdir()
    db = base / "stats.db"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA_V1)
    conn.executemany("INSERT INTO queries(ts, client, domain, qtype, rcode, outcome, source) "
                     "VALUES (?, ?, ?, 1, 0, ?, ?)",
                     [(1e9, "10.0.0.5", "old.example", "granted", "resolved"),
                      (1e9 + 1, "10.0.0.5", "old.example", "granted", "cache"),
                      (1e9 + 2, "10.0.0.6", "bad.example", "blocked", "blocked")])
    conn.execute("INSERT INTO grants(ts, address, name, client, expires) VALUES "
                 "(1e9, '192.0.2.77', 'old.example', '10.0.0.5', 1e9 + 60)")
    conn.commit()
    conn.close()
    config = stats_section(lab, database=str(db), report_socket=str(base / "a.sock"),
                           dnstap_socket=str(base / "d.sock"), retention="36500d")
    old = NetTrustHost(lab, config + "[metrics]\nenabled = false\n", name="old")
    old.start_agent()
    try:
        summary = json.loads(old.nettrust("stats", "--json", "summary").stdout)
        assert summary["queries"] == 3 and summary["clients"] == 2
        assert summary["by_source"] == {"resolved": 1, "cache": 1, "blocked": 1}
        why = json.loads(old.nettrust("stats", "--json", "why", "192.0.2.77").stdout)
        assert why["grants"][0]["name"] == "old.example"
        assert why["grants"][0]["client"] == "10.0.0.5"
    finally:
        old.stop_agent()


def test_unauthorized_attempt_becomes_an_event_a_metric_and_an_alert(nt, lab, webhook):
    """The resolver process reports a refused connection (NFLOG); the agent counts, stores and
    notifies it."""
    webhook.clear()
    target = "198.51.100.250"                    # never answered: not granted
    assert direct(lab, target) != True           # noqa: E712 - refused by the firewall
    alert = wait_for(lambda: [a for a in webhook if a["rule"] == "unauthorized"], "the alert")
    assert alert[0]["subject"] == target and "port 80" in alert[0]["message"]
    assert scrape(lab).get('nettrust_events_total{kind="unauthorized"}', 0) >= 1
    assert wait_for(lambda: stats(nt, "summary")["events"].get("unauthorized"), "stored event")
    # why tells the refused address's story: never granted, the attempt, its port and source
    story = wait_for(lambda: (w := stats(nt, "why", target))["refused"] and w, "why")
    assert story["grants"] == [] and story["answers"] == []
    attempt = story["refused"][0]
    assert (attempt["verdict"], attempt["protocol"], attempt["port"]) == ("refused", "tcp", 80)
    text = nt.nettrust("why", target).stdout
    assert text.startswith(f"{target}: never granted, never answered; ")
    assert "refused connection attempts:" in text and " 80 " in text
    # every alert is an event, and the metric counts what the summary lists
    summary = stats(nt, "summary")["events"]
    metrics = scrape(lab)
    assert metrics.get('nettrust_events_total{kind="alert"}', 0) >= summary.get("alert", 0) >= 1




def test_without_cache_hits_only_judged_answers_are_recorded(nt, lab):
    """stats.cache_hits = false: no dnstap in Unbound; misses, local data and blocked names are
    still recorded from the module's decisions."""
    base = Path(lab.work_dir) / "nohits"
    base.mkdir()
    section = stats_section(lab, database=str(base / "s.db"), report_socket=str(base / "a.sock"),
                            dnstap_socket=str(base / "d.sock"), cache_hits=False)
    lab.stop_unbound()
    host = NetTrustHost(lab, '[policy]\ndeny = ["**.blocked.fw.test"]\n' + section
                        + "[metrics]\nenabled = false\n", name="nohits")
    assert "dnstap" not in host.unbound_conf()
    host.start_agent()
    host.start()
    try:
        dig_batch(lab, ["h301.fw.test", "h301.fw.test", "h302.fw.test", "z.blocked.fw.test"])
        top = wait_for(lambda: (t := {r["domain"]: r for r in stats(host, "top", "domains")})
                       and "z.blocked.fw.test" in t and t, "records")
        assert top["h301.fw.test"]["queries"] == 1          # the cache hit is not seen
        assert top["h302.fw.test"]["queries"] == 1 and top["z.blocked.fw.test"]["blocked"] == 1
        why = stats(host, "why", h_address(301)[0])
        assert [g["name"] for g in why["grants"]] == ["h301.fw.test"]
    finally:
        lab.stop_unbound()
        host.stop_agent()
        nt.start()


def test_past_the_response_budget_decisions_stay_and_unbound_gives_the_totals(nt, lab):
    """stats.responses_per_second: past it, to the end of the second, the agent stops reading
    client responses (a responses_sampled event); every decision is still stored, and the exact
    totals come from Unbound's own counters, relayed to the metrics."""
    base = Path(lab.work_dir) / "budget"
    base.mkdir()
    budget = 20
    section = stats_section(lab, database=str(base / "s.db"), report_socket=str(base / "a.sock"),
                            dnstap_socket=str(base / "d.sock"), responses_per_second=budget)
    lab.stop_unbound()
    host = NetTrustHost(lab, section + '[metrics]\nlisten = "127.0.0.1:9532"\n'
                        '[lifecycle]\nreport_interval = "1s"\n', name="budget")
    host.start_agent()
    host.start()
    try:
        wait_for(lambda: "dnstap stream connected" in host.agent.log_text(), "dnstap connection")
        names = [f"h{i}.fw.test" for i in range(320, 330)]
        dig_batch(lab, names)               # 10 misses
        started = time.monotonic()
        dig_batch(lab, names * 30)          # 300 cache hits, as fast as one dig sends them
        seconds = int(time.monotonic()) - int(started) + 1

        def stored():
            top = {r["domain"]: r for r in stats(host, "top", "domains", "-n", "100")}
            with sqlite3.connect(base / "s.db") as db:
                sampled = db.execute("SELECT count(*) FROM events "
                                     "WHERE kind = 'responses_sampled'").fetchone()[0]
            return all(n in top for n in names) and sampled and top

        top = wait_for(stored, "every miss and a responses_sampled event stored", timeout=20)
        assert all(top[n]["queries"] - top[n]["cached"] == 1 for n in names)   # every miss
        assert sum(top[n]["cached"] for n in names) <= budget * (seconds + 1) < 300

        def totals():
            values = scrape_port(lab, 9532)
            hits = [v for k, v in values.items()
                    if k.startswith('nettrust_resolver_counter{name="unbound.total.num.cachehits"')]
            return hits and hits[0] >= 300 and values

        values = wait_for(totals, "Unbound's cache hits among the resolver's counters")
        assert values['nettrust_agent_sampled_seconds_total'] >= 1
    finally:
        lab.stop_unbound()
        host.stop_agent()
        nt.start()


def resolver_series(lab) -> dict[str, set[str]]:
    """pid -> the names of the resolver series the agent serves now."""
    out: dict[str, set[str]] = {}
    for key in scrape(lab):
        m = re.match(r'nettrust_resolver_(?:counter|level)\{name="([^"]+)",pid="(\d+)"\}', key)
        if m:
            out.setdefault(m[2], set()).add(m[1])
    return out


def test_only_the_running_resolver_has_metric_series(nt, lab):
    """unbound-checkconf (which loads the module) reports nothing and leaves no series; a
    stopped resolver's series go; the restarted one reports under its own pid."""
    first = wait_for(lambda: resolver_series(lab), "the resolver's counters")
    assert len(first) == 1 and "names_granted" in next(iter(first.values()))
    old_pid = next(iter(first))
    lab.stop_unbound()
    try:
        wait_for(lambda: not resolver_series(lab), "the stopped resolver's series to go")
        received = 'nettrust_agent_records_total{stream="report"}'
        before = scrape(lab).get(received, 0)
        conf = Path(lab.work_dir) / "unbound" / "unbound.conf"
        res = lab.run("host", ["unbound-checkconf", str(conf)], env=nt.env())
        assert "no errors" in res.stdout
        time.sleep(2.5)                              # > report_interval (1 s)
        after = scrape(lab)
        assert after.get(received, 0) == before and resolver_series(lab) == {}
    finally:
        nt.start()
    now = wait_for(lambda: resolver_series(lab), "the restarted resolver's counters")
    assert list(now) == [str(nt.process.pid)] != [old_pid]

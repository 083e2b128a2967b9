"""The agent's metrics say what they count: resolver series belong to running processes (the
kernel's word for the sender's pid, dropped when it disconnects), counts and levels apart, and
``nettrust_events_total`` counts every kind of event the summary lists, the agent's own too.

A real agent on real Unix sockets in a temporary directory; the senders are real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nettrust_core.agent.agent import Agent
from nettrust_core.config import parse_config
from nettrust_core.lifecycle.supervisor import LEVELS, Lifecycle
from nettrust_core.report import Reporter

SENDER = """
import sys, time
from nettrust_core.report import Reporter
r = Reporter(sys.argv[1])
r.send({"t": "counters", "pid": 1, "values": {"renewals": 7}, "levels": {"names_granted": 3}})
print("sent", flush=True)
sys.stdin.readline()          # stay connected until told to exit
"""


def sample(agent: Agent, name: str, labels: dict) -> float | None:
    return agent.metrics.registry.get_sample_value(name, labels)


def wait_for(predicate, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def agent(tmp_path):
    config = parse_config(f'[stats]\nenabled = true\ndatabase = "{tmp_path}/s.db"\n'
                          f'report_socket = "{tmp_path}/a.sock"\n'
                          f'dnstap_socket = "{tmp_path}/d.sock"\nflush_interval = "50ms"\n'
                          "[metrics]\nenabled = false\n")
    a = Agent(config)
    a.start()
    yield a
    a.stop()


def test_a_resolvers_series_carry_its_real_pid_and_go_when_it_exits(agent, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(tmp_path / "a.sock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert sender.stdout.readline().strip() == "sent"
        pid = str(sender.pid)
        wait_for(lambda: pid in agent.metrics.resolver_pids, "the counters")
        assert sample(agent, "nettrust_resolver_counter", {"name": "renewals", "pid": pid}) == 7
        assert sample(agent, "nettrust_resolver_level",
                      {"name": "names_granted", "pid": pid}) == 3
        # the pid the record claims (1) is not believed
        assert sample(agent, "nettrust_resolver_counter", {"name": "renewals", "pid": "1"}) \
            is None
    finally:
        sender.communicate("exit\n", timeout=10)
    wait_for(lambda: not agent.metrics.resolver_pids, "the series of the exited process to go")
    assert sample(agent, "nettrust_resolver_counter", {"name": "renewals", "pid": pid}) is None
    assert sample(agent, "nettrust_resolver_level", {"name": "names_granted", "pid": pid}) is None


def test_events_total_counts_alerts_and_stats_dropped_like_the_summary(agent):
    agent.report({"t": "event", "kind": "unauthorized", "destination": "203.0.113.9",
                  "port": 80})
    agent.alerts.fire("first_seen_domain", "x.example", "first time seen: x.example")
    agent.store._unreported_drops = 2           # as after a write failure that is over now
    from nettrust_core.agent import stats_view
    conn = stats_view.connect(agent.config.stats.database)
    # the unauthorized attempt fired an alert of its own: two alerts
    expected = {"unauthorized": 1, "alert": 2, "stats_dropped": 1}
    wait_for(lambda: stats_view.summary(conn)["events"] == expected, "the stored events")
    for kind, n in expected.items():
        assert sample(agent, "nettrust_events_total", {"kind": kind}) == n, kind


def test_only_a_started_lifecycle_reports_counters(tmp_path):
    """A process that loads the module without starting the resolver (a check, a tool)
    sends nothing; a started one sends counts and levels apart."""
    import socket as s
    listener = s.socket(s.AF_UNIX, s.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "r.sock"))
    listener.listen(1)
    config = parse_config("[lifecycle]\nunauthorized = false\nliveness = false\n")
    from nettrust_core.authorizer import Authorizer
    from nettrust_core.firewall.recording import RecordingBackend
    reporter = Reporter(str(tmp_path / "r.sock"))
    life = Lifecycle(config, Authorizer(config, RecordingBackend()), reporter)
    life.stop()
    assert reporter.sent == 0
    life.start()
    life.stop()
    assert reporter.sent == 1
    conn, _ = listener.accept()
    import json
    record = json.loads(conn.recv(65536))
    assert "names_granted" in record["levels"] and "names_capped" not in record["values"]
    assert set(record["levels"]) <= LEVELS and not set(record["values"]) & LEVELS
    conn.close()
    listener.close()


def test_remaining_time_buckets_count_each_live_grant_under_every_bound_it_is_within():
    """The counters' grant buckets (``grants_remaining_le_<bound>s``, cumulative), counted in
    turns over more grants than one turn holds; expired grants are in none."""
    import ipaddress

    from nettrust_core.authorizer import Authorizer
    from nettrust_core.firewall.recording import RecordingBackend
    from nettrust_core.grants.tracker import Owner
    from nettrust_core.lifecycle.turns import TURN

    config = parse_config("[lifecycle]\nunauthorized = false\nliveness = false\n")
    authorizer = Authorizer(config, RecordingBackend())
    life = Lifecycle(config, authorizer, None)
    tracker, owner = authorizer.tracker, Owner("a.example", "a.example")
    now = tracker.clock()
    lefts = [-5, 5, 10, 10.5, 59, 299, 3600, 7200]          # seconds left; -5: expired
    per = TURN // 3 + 1                                       # 8 kinds: more than two turns
    for i in range(per * len(lefts)):
        tracker.record(ipaddress.IPv4Address(0x0A000000 + i), now + lefts[i % len(lefts)], owner=owner)
    values = life.snapshot()
    assert values["grants"] == 7 * per
    assert [values[f"grants_remaining_le_{b}s"] for b in (10, 30, 60, 300, 900, 3600)] == \
        [2 * per, 3 * per, 4 * per, 5 * per, 5 * per, 6 * per]


def test_a_scan_in_turns_lets_another_thread_run_between_its_slices():
    """in_turns gives the interpreter lock up after each slice: a thread that wants it gets it
    during a scan, not after (without turns, not before the scan's 5 ms switch interval)."""
    import sys
    import threading
    import time

    from nettrust_core.lifecycle.turns import in_turns

    ran: list[int] = []
    scanned = []
    stop = threading.Event()

    def watch() -> None:            # as an answer would: runs when it gets the lock, then yields
        while not stop.is_set():
            ran.append(len(scanned))
            time.sleep(0)

    other = threading.Thread(target=watch)
    old = sys.getswitchinterval()
    sys.setswitchinterval(10.0)               # only giving the lock up lets the other thread in
    try:
        other.start()
        for chunk in in_turns(range(40_000), 1000):
            scanned.append(sum(chunk))
    finally:
        stop.set()
        sys.setswitchinterval(old)
        other.join()
    assert len(scanned) == 40 and sum(scanned) == sum(range(40_000))
    assert len({n for n in ran if 0 < n < 40}) >= 10, ran[:50]

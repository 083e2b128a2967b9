"""The resolv.conf guard inside the real resolver: Unbound with the module watches a TEST
resolv.conf (a file in the lab's work directory, never the host's /etc/resolv.conf), and the
statistics agent receives its event and counters (SQLite row, Prometheus metric).

tests/unit/test_resolv_guard_inotify.py covers each way a manager changes the file; here: the alert
reaches the agent and the log from inside Unbound, and a revert done by Unbound's own user."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from lab_util import resolving_lab, wait_for

from testbed.product import NetTrustHost, stats_section

pytestmark = pytest.mark.integration

GOOD = "nameserver 127.0.0.1\n"
BAD = "nameserver 192.0.2.53\n"


@pytest.fixture(scope="module")
def lab():
    with resolving_lab() as lab:
        yield lab


def guarded(lab, name: str, revert: bool) -> tuple[NetTrustHost, Path]:
    d = Path(lab.work_dir) / f"etc-{name}"
    d.mkdir(mode=0o777)
    d.chmod(0o777)                 # Unbound runs as `unbound`: the revert renames in here
    path = d / "resolv.conf"
    path.write_text(GOOD)
    path.chmod(0o644)
    config = (stats_section(lab) + '[lifecycle]\nreport_interval = "1s"\n'
              f'[resolv_conf]\nwatch = true\npath = "{path}"\nrevert = {str(revert).lower()}\n'
              'check_interval = "1h"\n')
    host = NetTrustHost(lab, config, name=name)
    host.start_agent()
    host.start()
    return host, path


def atomic_write(path: Path, text: str) -> None:
    tmp = path.parent / "resolv.conf.dhcp-new"
    tmp.write_text(text)
    os.replace(tmp, path)


def events(host, path: Path) -> list[dict]:
    """The resolv_conf events about ``path`` (the tests share the lab's database)."""
    db = sqlite3.connect(host.config.stats.database)
    try:
        rows = db.execute("SELECT subject, data FROM events WHERE kind = 'resolv_conf' "
                          "AND subject = ? ORDER BY id", (str(path),)).fetchall()
    finally:
        db.close()
    return [{"subject": s, **json.loads(d)} for s, d in rows]


def counter(lab, name: str) -> float | None:
    out = lab.run("host", ["curl", "-sS", "--max-time", "3",
                           "http://127.0.0.1:9531/metrics"]).stdout
    m = re.search(rf'nettrust_resolver_counter\{{name="{name}",pid="\d+"\}} (\S+)', out)
    return float(m.group(1)) if m else None


def test_a_diverted_resolv_conf_is_an_event_a_metric_and_a_log_line(lab):
    host, path = guarded(lab, "alert", revert=False)
    try:
        wait_for(lambda: counter(lab, "resolv_conf_ok") == 1.0, "the guard's first counters")
        assert counter(lab, "resolv_conf_diverted") == 0.0 and events(host, path) == []
        atomic_write(path, BAD)
        rows = wait_for(lambda: events(host, path), "the resolv_conf event", timeout=10)
        assert rows[0]["subject"] == str(path) and rows[0]["state"] == "diverted"
        assert rows[0]["servers"] == ["192.0.2.53"]
        wait_for(lambda: counter(lab, "resolv_conf_diverted") == 1.0, "the metric")
        assert counter(lab, "resolv_conf_ok") == 0.0
        assert re.search(rf"{re.escape(str(path))} no longer points at the local resolver",
                         host.log())
        assert path.read_text() == BAD                       # alert only
        atomic_write(path, GOOD)
        wait_for(lambda: [e["state"] for e in events(host, path)] == ["diverted", "restored"],
                 "the restored event", timeout=10)
    finally:
        host.stop()
        host.stop_agent()


def test_revert_rewrites_it_from_inside_unbound(lab):
    host, path = guarded(lab, "revert", revert=True)
    try:
        atomic_write(path, BAD)
        wait_for(lambda: path.read_text() == GOOD, "the file restored", timeout=10)
        wait_for(lambda: [e["state"] for e in events(host, path)][:2] == ["diverted", "reverted"],
                 "the reverted event", timeout=10)
        assert "resolv.conf rewritten: its last good contents restored" in host.log()
    finally:
        host.stop()
        host.stop_agent()
    assert "Traceback" not in host.log()

"""Alert rules, the per-window rate limit, and a real command notifier."""

import json
import sys

from nettrust_core.agent.alerts import Alerts
from nettrust_core.config import parse_config


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def make(text):
    events, clock = [], Clock()
    alerts = Alerts(parse_config("[alerts]\n" + text).alerts, record_event=events.append,
                    clock=clock)
    return alerts, events, clock


def blocked(client="192.0.2.1", name="x.example"):
    return {"client": client, "qname": name, "outcome": "blocked"}


def test_blocked_burst_fires_once_per_window_per_client():
    alerts, events, clock = make('blocked_per_minute = 2\nwindow = "5m"\n')
    for _ in range(10):
        alerts.query(blocked())
    alerts.query(blocked("192.0.2.2"))
    assert [(e["rule"], e["subject"]) for e in events] == [("blocked_per_minute", "192.0.2.1")]
    clock.now += 301
    for _ in range(3):
        alerts.query(blocked())
    assert len(events) == 2 and events[1]["kind"] == "alert"


def test_blocked_counts_only_the_last_minute():
    alerts, events, clock = make("blocked_per_minute = 2\n")
    for _ in range(2):
        alerts.query(blocked())
        clock.now += 40
    alerts.query(blocked())
    assert events == []


def test_rules_are_off_unless_configured():
    alerts, events, _ = make("unauthorized = false\nbackend_errors = false\n")
    alerts.query(blocked())
    alerts.new_domain("new.example")
    alerts.event({"kind": "unauthorized", "address": "203.0.113.5"})
    alerts.backend_error("ENOBUFS")
    assert events == []


def test_first_seen_unauthorized_and_backend_errors():
    alerts, events, _ = make("first_seen_domain = true\n")
    alerts.new_domain("new.example")
    alerts.event({"kind": "unauthorized", "source": "192.0.2.1", "destination": "203.0.113.5",
                  "protocol": "tcp", "port": 443, "hook": "output", "uid": 1000, "user": "alice"})
    alerts.event({"kind": "backend_error", "error": "netlink: ENOBUFS"})
    assert [e["rule"] for e in events] == ["first_seen_domain", "unauthorized", "backend_errors"]
    assert events[1]["message"] == "unauthorized tcp attempt to 203.0.113.5 port 443 by alice"


def test_command_notifier_gets_the_alert_as_json(tmp_path):
    out = tmp_path / "alert.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    cmd = f"{sys.executable} -c \"{script}\""
    alerts, _, _ = make(f"first_seen_domain = true\ncommand = {json.dumps(cmd)}\n")
    alerts.start()
    alerts.new_domain("new.example")
    alerts.stop()
    data = json.loads(out.read_text())
    assert data["rule"] == "first_seen_domain" and data["subject"] == "new.example"

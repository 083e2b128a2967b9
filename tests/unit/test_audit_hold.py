"""The start's connection audit waits for the start-up adoption (nettrust_core.lifecycle.connections:
its dump of every grant set took the interpreter lock from a 1M-grant read-back half the time),
bounded, and a stop during the wait is prompt.  The audit itself is replaced by a recorder."""

from __future__ import annotations

import threading
import time
from collections import Counter

from nettrust_core.lifecycle import connections as cx


class Cfg:
    class lifecycle:
        terminate_unauthorized = False

    class firewall:
        hooks = ("output",)
        lan_networks = ()


class RecordedAudit(cx.ConnectionAudit):
    """The audit thread with audit() recording when it ran (no kernel)."""

    def __init__(self, hold) -> None:
        super().__init__(Cfg, backend=None, counters=Counter(), static=[], hold=hold)
        self.ran = threading.Event()
        self.at: float | None = None

    def audit(self):
        self.at = time.monotonic()
        self.ran.set()
        return []


def test_the_first_audit_waits_until_adoption_completes():
    adopting = threading.Event()
    adopting.set()
    audit = RecordedAudit(adopting.is_set)
    audit.start()
    try:
        assert not audit.ran.wait(0.3)          # still adopting: no audit yet
        cleared = time.monotonic()
        adopting.clear()
        assert audit.ran.wait(2)
        assert audit.at is not None and audit.at - cleared < 0.5
    finally:
        audit.stop()


def test_without_a_hold_the_audit_runs_at_once_and_a_hold_is_bounded(monkeypatch):
    audit = RecordedAudit(None)                 # the control: nothing to wait for
    started = time.monotonic()
    audit.start()
    try:
        assert audit.ran.wait(2) and audit.at is not None and audit.at - started < 0.5
    finally:
        audit.stop()
    monkeypatch.setattr(cx, "HOLD_LIMIT", 0.4)
    audit = RecordedAudit(lambda: True)         # an adoption that never completes (failed)
    started = time.monotonic()
    audit.start()
    try:
        assert audit.ran.wait(3) and audit.at is not None and 0.35 < audit.at - started < 1.5
    finally:
        audit.stop()


def test_a_stop_while_holding_is_prompt():
    audit = RecordedAudit(lambda: True)
    audit.start()
    time.sleep(0.1)
    started = time.monotonic()
    audit.stop()
    assert time.monotonic() - started < 1 and not audit.ran.is_set() and not audit.alive

"""Alert rules on the statistics, rate-limited, and the notifiers they go to.

Rules are checked as records arrive (cheap, in memory).  A firing that passes the rate limit —
one notification per rule and subject per ``window`` — is recorded as an ``alert`` event and
handed to the notifier thread, so a slow webhook or command never holds up the receivers.
"""

from __future__ import annotations

import json
import logging
import queue
import shlex
import subprocess
import syslog
import threading
import time
import urllib.request
from collections import deque
from typing import TYPE_CHECKING, Callable

from ..worker import Worker

if TYPE_CHECKING:
    from ..config import AlertsConfig
    from .metrics import Metrics

log = logging.getLogger("nettrust.agent.alerts")

RULES = ("blocked_per_minute", "first_seen_domain", "unauthorized", "backend_errors")
NOTIFY_TIMEOUT = 5.0


class Alerts(Worker):
    name = "nettrust-alerts"

    def __init__(self, config: AlertsConfig, *, record_event: Callable[[dict], None],
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self.record_event = record_event
        self.metrics = metrics
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._blocked: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._notify: queue.Queue = queue.Queue(maxsize=1000)
        self.notifiers = _notifiers(config)

    # -- rules -----------------------------------------------------------------------------
    def query(self, record: dict) -> None:
        limit = self.config.blocked_per_minute
        client = record.get("client")
        if not limit or record.get("outcome") != "blocked" or not client:
            return
        now = self.clock()
        with self._lock:
            times = self._blocked.setdefault(client, deque())
            times.extend([now] * record.get("count", 1))
            while times and times[0] <= now - 60:
                times.popleft()
            count = len(times)
        if count > limit:
            self.fire("blocked_per_minute", client,
                      f"client {client} asked {count} blocked names within a minute "
                      f"(limit {limit}); last: {record.get('qname')}",
                      count=count, last=record.get("qname"))

    def new_domain(self, name: str) -> None:
        if self.config.first_seen_domain:
            self.fire("first_seen_domain", name, f"first time seen: {name}")

    def event(self, record: dict) -> None:
        kind = record.get("kind")
        if kind == "unauthorized" and self.config.unauthorized:
            # Fields as nettrust_core.lifecycle.unauthorized reports them.
            subject = str(record.get("destination") or record.get("address") or "")
            port = f" port {record['port']}" if record.get("port") else ""
            who = record.get("user") or record.get("source")
            would = "would refuse: " if record.get("verdict") == "would refuse" else ""
            self.fire("unauthorized", subject,
                      f"{would}unauthorized {record.get('protocol') or 'connection'} attempt to "
                      f"{subject or 'an address'}{port}" + (f" by {who}" if who else ""),
                      event=record)
        elif kind == "backend_error" and self.config.backend_errors:
            self.backend_error(str(record.get("error") or record.get("message") or ""))

    def backend_error(self, error: str) -> None:
        if self.config.backend_errors:
            self.fire("backend_errors", "", f"firewall backend error: {error}", error=error)

    # -- rate limit and delivery -------------------------------------------------------------
    def fire(self, rule: str, subject: str, message: str, **details: object) -> bool:
        """Notify unless the same rule and subject notified within the window."""
        now = self.clock()
        key = (rule, subject)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.config.window:
                if self.metrics is not None:
                    self.metrics.alerts_suppressed.labels(rule).inc()
                return False
            self._last[key] = now
        alert = {"rule": rule, "subject": subject, "message": message, "ts": now, **details}
        if self.metrics is not None:
            self.metrics.alerts.labels(rule).inc()
        self.record_event({"ts": now, "kind": "alert", "rule": rule, "subject": subject,
                           "message": message})
        log.warning("alert %s: %s", rule, message)
        if self.notifiers:
            try:
                self._notify.put_nowait(alert)
            except queue.Full:
                log.warning("alert notifications are backing up; %s not sent", rule)
        return True

    def start(self) -> None:
        if self.notifiers:             # no notifier, no thread
            super().start()

    def stop(self, timeout: float = NOTIFY_TIMEOUT + 1) -> None:
        super().stop(timeout)

    def wake(self) -> None:
        if self.alive:
            self._notify.put(None)      # after the alerts already queued

    def run(self) -> None:
        while (alert := self._notify.get()) is not None:
            for notify in self.notifiers:
                try:
                    notify(alert)
                except Exception as exc:   # a broken notifier must not stop the others
                    log.warning("alert notifier %s failed: %s", notify.__name__, exc)


def _notifiers(config: AlertsConfig) -> list[Callable[[dict], None]]:
    out: list[Callable[[dict], None]] = []
    if config.webhook:
        url = config.webhook

        def webhook(alert: dict) -> None:
            body = json.dumps(alert, default=str).encode()
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=NOTIFY_TIMEOUT) as resp:
                resp.read()
        out.append(webhook)
    if config.syslog:
        def to_syslog(alert: dict) -> None:
            syslog.openlog("nettrust", 0, syslog.LOG_DAEMON)
            syslog.syslog(syslog.LOG_WARNING, f"alert {alert['rule']}: {alert['message']}")
        out.append(to_syslog)
    if config.command:
        argv = shlex.split(config.command)

        def command(alert: dict) -> None:
            subprocess.run(argv, input=json.dumps(alert, default=str).encode(),
                           timeout=NOTIFY_TIMEOUT * 2, check=True, stdout=subprocess.DEVNULL)
        out.append(command)
    return out

"""Refused connection attempts become events: who (local user or client), what, when.

Runs in its own thread inside Unbound, reading the ruleset's NFLOG group.  Each attempt is
counted and sent to the agent as ``{"t": "event", "kind": "unauthorized", ...}``; malformed
packets are counted and skipped.  With ``lifecycle.strikes = N``, a local user (output hook) or a
client address (forward hook) that makes N refused attempts within a minute produces one
``strike`` event and a warning, then its count starts again.  In audit mode the kernel logs with
the prefix ``nettrust-audit`` and lets the packet through: the event's ``verdict`` is then
``"would refuse"`` (else ``"refused"``).
"""

from __future__ import annotations

import logging
import pwd
import time
from collections import Counter, deque
from typing import Callable

from ..errors import NetTrustError
from ..lists.bypass import bypass_kind
from ..netlink.nflog import Attempt
from ..report import Reporter
from ..worker import Worker
from .nflog import NflogReader

#: The NFLOG prefix of audit mode's rules (nettrust_core.firewall.nftables_audit.AUDIT_PREFIX).
AUDIT_PREFIX = "nettrust-audit"

log = logging.getLogger("nettrust.unauthorized")
STRIKE_WINDOW = 60.0


class UnauthorizedWatcher(Worker):
    name = "nettrust-unauthorized"

    def __init__(self, group: int, reporter: Reporter | None, counters: Counter, *, strikes: int = 0,
                 on_strike: Callable[[int], object] | None = None) -> None:
        super().__init__(counters)
        self.group = group
        self.reporter = reporter
        self.counters = counters
        self.strikes = strikes
        #: Called with the uid of a local user struck (lifecycle.strike_drop_dns), else None.
        self.on_strike = on_strike
        self._recent: dict[str, deque] = {}
        self._bypass_seen: set[tuple[str, int | None]] = set()
        self._users: dict[int, str | None] = {}
        self._reader: NflogReader | None = None

    def start(self) -> None:
        """Bind the group now (so a failure is logged at start), then read in a thread."""
        self._reader = NflogReader(self.group)
        super().start()

    def stop(self, timeout: float = 3.0) -> None:
        super().stop(timeout)         # the reader's receive times out within half a second
        if self._reader is not None:
            self._reader.close()

    def run(self) -> None:
        reader = self._reader
        if reader is None:                            # run() without start(): nothing to read
            return
        while not self.stopping.is_set():
            try:
                attempts = reader.read()
            except NetTrustError as exc:
                self.counters["unauthorized_read_errors"] += 1
                log.error("reading refused attempts failed: %s", exc)
                self.stopping.wait(1.0)
                continue
            except Exception:                         # never let the thread die silently
                self.counters["unauthorized_read_errors"] += 1
                log.exception("unexpected error reading refused attempts")
                self.stopping.wait(1.0)
                continue
            for attempt in attempts:
                self.handle(attempt)
        self.counters["unauthorized_overruns"] = reader.overruns

    def handle(self, a: Attempt, now: float | None = None) -> None:
        self.counters["unauthorized"] += 1
        self.counters[f"unauthorized_{a.protocol}"] += 1
        # Audit mode's rules log with their own prefix: the packet went through.
        verdict = "would refuse" if a.prefix == AUDIT_PREFIX else "refused"
        if verdict == "would refuse":
            self.counters["would_refuse"] += 1
        fields = {"source": a.source, "destination": a.destination, "protocol": a.protocol,
                  "port": a.port, "hook": a.hook, "verdict": verdict}
        if a.uid is not None:
            fields.update(uid=a.uid, user=self._user(a.uid))
        bypass = bypass_kind(a.destination, a.port, a.protocol)
        if bypass is not None:
            # An encrypted-DNS bypass refused: `nettrust status` lists these (from the agent).
            fields["bypass"] = bypass
            self.counters["bypass_attempts"] += 1
            if (a.destination, a.port) not in self._bypass_seen and len(self._bypass_seen) < 1024:
                self._bypass_seen.add((a.destination, a.port))
                log.warning("refused encrypted-DNS bypass: %s to %s port %s (uid %s)", bypass,
                            a.destination, a.port, a.uid)
        if self.reporter is not None:
            self.reporter.event("unauthorized", **fields)
        log.debug("%s %s to %s port %s from %s (uid %s)", verdict, a.protocol, a.destination, a.port,
                  a.source, a.uid)
        if self.strikes:
            self._strike(a, now if now is not None else time.monotonic())

    def _strike(self, a: Attempt, now: float) -> None:
        key = f"uid {a.uid}" if a.hook == "output" and a.uid is not None else f"client {a.source}"
        times = self._recent.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - STRIKE_WINDOW:
            times.popleft()
        if len(times) >= self.strikes:
            times.clear()
            self.counters["strikes"] += 1
            log.warning("strike: %s made %d refused connection attempts within a minute (last: %s "
                        "port %s)", key, self.strikes, a.destination, a.port)
            if self.reporter is not None:
                self.reporter.event("strike", who=key, attempts=self.strikes,
                                    destination=a.destination, port=a.port)
            if self.on_strike is not None and key.startswith("uid "):
                try:
                    if a.uid is not None:
                        self.on_strike(a.uid)
                    self.counters["uids_struck"] += 1
                except Exception:                       # noqa: BLE001 - logged and counted
                    self.counters["strike_errors"] += 1
                    log.exception("cannot strike %s", key)
        if len(self._recent) > 10000:                   # bounded: forget quiet keys
            for k in [k for k, t in self._recent.items() if not t or t[-1] <= now - STRIKE_WINDOW]:
                del self._recent[k]

    def _user(self, uid: int) -> str | None:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        return self._users[uid]

"""The protocol every cloud sink implements, and the reconcile loop they share."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from ..grant_feed import GrantFeed, keep_longest
from ..worker import Worker

log = logging.getLogger("nettrust.cloud")


@dataclass(frozen=True, slots=True)
class Change:
    added: int
    removed: int
    calls: int          # modifying API calls made
    conflicts: int      # optimistic-concurrency conflicts retried


class CloudSink(Protocol):
    max_entries: int

    def reconcile(self, desired: set[str]) -> Change:
        """Make the cloud object hold exactly ``desired`` (CIDRs), in as few calls as allowed."""
        ...

    def clear(self) -> Change:
        """Remove every entry this sink manages (uninstall, ``on_exit = "flush"``)."""
        ...


class CloudReconciler(Worker):
    """Every ``interval`` seconds: live grants -> desired CIDRs (held ``min_lifetime`` at least,
    capped at the sink's ``max_entries``, longest-lived kept) -> ``sink.reconcile``. A failing
    cloud API is logged and counted; the next round retries from the cloud's current state."""

    name = "nettrust-cloud"

    def __init__(self, feed: GrantFeed, sink: CloudSink, interval: float = 30.0,
                 min_lifetime: float = 300.0, counters: Counter[str] | None = None) -> None:
        super().__init__(counters)
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.feed, self.sink = feed, sink
        self.interval, self.min_lifetime = interval, min_lifetime
        self.until: dict[str, float] = {}

    def desired(self, now: float) -> set[str]:
        for grant in self.feed.live(now):
            end = max(grant.expires, now + self.min_lifetime)
            if end > self.until.get(grant.address, 0.0):
                self.until[grant.address] = end
        self.until = {a: t for a, t in self.until.items() if t > now}
        kept, dropped = keep_longest(self.until, self.sink.max_entries)
        self.counters["cloud_capped"] = dropped
        return {f"{a}/{128 if ':' in a else 32}" for a in kept}

    def once(self, now: float | None = None) -> Change:
        change = self.sink.reconcile(self.desired(time.time() if now is None else now))
        self.counters["cloud_calls"] += change.calls
        self.counters["cloud_conflicts"] += change.conflicts
        return change

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.once()
            except Exception:  # noqa: BLE001 - any API failure: log, count, retry next round
                self.counters["cloud_errors"] += 1
                log.exception("cloud reconcile failed; retrying in %.0f s", self.interval)
            self.stopping.wait(self.interval)

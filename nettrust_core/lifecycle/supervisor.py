"""The lifecycle's background work inside Unbound, started by Service.start, joined by Service.stop.

Two threads at most, both :class:`~nettrust_core.worker.Worker` threads: a ticker (the ruleset
check every ``grants.verify_interval``, liveness checks every ``check_interval``, counters to the
agent every ``report_interval``) and the unauthorized-attempt reader.  Neither ever holds up an
answer for longer than a tracker update; both survive any error (logged, counted).  At start the
chain priority report is logged, and whether conntrack and the NFLOG group are usable.
"""

from __future__ import annotations

import errno
import logging
import time
from bisect import bisect_right
from collections import Counter
from operator import itemgetter
from typing import TYPE_CHECKING

from ..errors import NetTrustError
from ..ruleset import CT_MARK
from ..worker import Worker
from . import chains
from .connections import ConnectionAudit
from .conntrack import Conntrack
from .liveness import Liveness
from .neighbours import NeighbourWatcher
from .turns import in_turns
from .unauthorized import UnauthorizedWatcher
from .verify import RulesetCheck

if TYPE_CHECKING:
    from ..config import Config
    from ..authorizer import Authorizer
    from ..report import Reporter
    from ..unbound_totals import UnboundTotals

log = logging.getLogger("nettrust.lifecycle")

#: Upper bounds (seconds) of the remaining-TTL buckets sent with the counters.
REMAINING_BUCKETS = (10, 30, 60, 300, 900, 3600)
#: Snapshot values that say what is now (sent as levels), not what happened since the start:
#: live grants (all, per family, per remaining-TTL bucket), names and registrable domains
#: holding live grants, live hosts, whether conntrack answers, list entries loaded.
LEVELS = frozenset({"grants", "grants_v4", "grants_v6", "names_granted", "domains_granted",
                    "hosts_live", "conntrack_available", "lists_entries"}
                   | {f"grants_remaining_le_{b}s" for b in REMAINING_BUCKETS})


def is_level(name: str) -> bool:
    return name in LEVELS


class Lifecycle(Worker):
    """The ticker thread, and the owner of the unauthorized-attempt reader and of conntrack.

    ``conntrack`` is what liveness asks (default: the kernel's, :class:`.conntrack.Conntrack`);
    tests inject a fake one (e.g. one that is unavailable) here.
    """

    name = "nettrust-lifecycle"

    def __init__(self, config: Config, authorizer: Authorizer, reporter: Reporter | None = None, *,
                 conntrack: Conntrack | None = None) -> None:
        self.counters: Counter[str] = Counter()
        super().__init__(self.counters)
        self.config = config
        self.authorizer = authorizer
        self.reporter = reporter if reporter is not None and reporter.enabled else None
        lc = config.lifecycle
        if not lc.liveness:
            conntrack = None
        elif conntrack is None:
            conntrack = Conntrack(CT_MARK)
        self.conntrack = conntrack
        self.ruleset_check = RulesetCheck(authorizer)
        self.liveness = (Liveness(authorizer, self.conntrack, self.counters,
                                  interval=lc.check_interval, max_lifetime=lc.max_lifetime,
                                  grace=config.grants.grace) if self.conntrack is not None else None)
        penalty = config.gateway.strike_penalty
        on_strike = ((lambda uid: authorizer.strike(uid, penalty))
                     if lc.strike_drop_dns else None)
        self.watcher = (UnauthorizedWatcher(lc.log_group, self.reporter, self.counters,
                                            strikes=lc.strikes, on_strike=on_strike)
                        if lc.unauthorized else None)
        #: gateway.client_key = "mac": the neighbour table's reader (None: not keyed by MAC).
        table = authorizer.gateway.neighbours
        self.neighbours = (NeighbourWatcher(table, self.counters)
                           if table is not None else None)
        #: Set by start(): counters go to the agent only from a started resolver.
        self._reporting = False
        #: Unbound's own totals, added to each report (set by the service when statistics are
        #: on and Unbound has a local control socket).
        self.unbound_totals: UnboundTotals | None = None
        #: Connections no grant allows: audited at start and on each policy change.
        self.audit = ConnectionAudit(config, authorizer.backend, reporter=self.reporter,
                                     counters=self.counters,
                                     hold=lambda: not authorizer.tracker.complete)

    # -- start / stop ----------------------------------------------------------------------
    def start(self) -> None:
        self._log_chains()
        if self.conntrack is not None and self.liveness is not None:     # both, or neither
            why = self.conntrack.probe()
            if why is not None:
                self.liveness.available, self.liveness.error = False, why
                log.warning("conntrack unavailable: %s; grants lapse at their DNS expiry, DNS "
                            "and grants keep working", why)
        if self.watcher is not None:
            try:
                self.watcher.start()
            except NetTrustError as exc:
                self.watcher = None
                if getattr(exc, "errno", None) == errno.EPERM:      # bound by another instance
                    log.info("refused attempts are reported by another process: %s", exc)
                else:
                    self.counters["unauthorized_unavailable"] += 1
                    log.error("refused attempts will not be reported: %s", exc)
        super().start()
        self.audit.start()
        if self.neighbours is not None:
            self.neighbours.start()
        self._reporting = True

    def policy_changed(self) -> None:
        """A policy change (blocklist update, revoked grants): audit the connections again."""
        self.audit.request()

    def workers(self) -> list[Worker]:
        """The threads this object started (the ticker, the connection audit, and the reader
        when it runs)."""
        return [self, self.audit] + [w for w in (self.watcher, self.neighbours) if w is not None]

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self.audit.stop(timeout)
        if self.neighbours is not None:
            self.neighbours.stop(timeout)
        if self.watcher is not None:
            self.watcher.stop(timeout)
        if self.conntrack is not None:
            self.conntrack.close()
        if self._reporting:         # only a resolver that ran reports its last counters
            self._reporting = False
            self.report()

    def _log_chains(self) -> None:
        fw, backend = self.config.firewall, self.authorizer.backend
        if not isinstance(backend, chains.ChainSource):
            log.info("the firewall backend lists no base chains: no chain priority report")
            return
        try:
            rep = chains.report(backend, fw.table, tuple(fw.hooks), fw.priority)
        except NetTrustError as exc:
            log.warning("cannot list the base chains: %s", exc)
            return
        for c in rep["chains"]:
            log.info("base chain %s", chains.describe(c))
        for w in rep["warnings"]:
            log.warning("chain priority: %s", w)

    # -- the ticker ------------------------------------------------------------------------
    def run(self) -> None:
        lc = self.config.lifecycle
        verify_every = self.config.grants.verify_interval
        now = time.monotonic()
        next_check, next_report = now + lc.check_interval, now + lc.report_interval
        next_verify = now + verify_every if verify_every else float("inf")
        while True:
            wait = min(next_check if self.liveness else next_report, next_report,
                       next_verify) - time.monotonic()
            if self.stopping.wait(max(0.0, wait)):
                return
            now = time.monotonic()
            if now >= next_verify:
                next_verify = now + verify_every
                self._guarded(self.ruleset_check.verify)
            if self.liveness is not None and now >= next_check:
                next_check = now + lc.check_interval
                self._guarded(self.liveness.check)
            if now >= next_report:
                next_report = now + lc.report_interval
                self._guarded(self.report)

    def _guarded(self, work) -> None:
        try:
            work()
        except Exception:                              # the thread must outlive any bug
            self.counters["lifecycle_errors"] += 1
            log.exception("lifecycle work failed")

    # -- counters --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, float]:
        """Everything countable, flat: the authorizer's counters, ours, grants and TTL buckets."""
        values: dict[str, float] = dict(self.authorizer.counters)
        values.update(self.counters)
        tracker = self.authorizer.tracker
        with tracker.lock:
            items = tracker.items()
            now = tracker.clock()
            values["grants_v4"], values["grants_v6"] = tracker.count(4), tracker.count(6)
        # In short turns (.turns), each slice's expiries sorted and bisected at every bound.
        live, within = 0, [0] * len(REMAINING_BUCKETS)
        for pairs in in_turns(items):
            expiries = sorted(map(itemgetter(1), pairs))
            past = bisect_right(expiries, now)
            live += len(expiries) - past
            for i, bound in enumerate(REMAINING_BUCKETS):
                within[i] += bisect_right(expiries, now + bound) - past
        values["grants"] = live
        for bound, n in zip(REMAINING_BUCKETS, within, strict=True):
            values[f"grants_remaining_le_{bound}s"] = n
        values["names_granted"] = len(tracker.per_name)
        values["domains_granted"] = len(tracker.per_domain)
        if self.liveness is not None:
            values["hosts_live"] = self.liveness.live_hosts
            values["conntrack_available"] = 0 if self.liveness.available is False else 1
        if self.unbound_totals is not None:
            values.update(self.unbound_totals.read())
        return values

    def report(self) -> None:
        if self.reporter is not None:
            values = self.snapshot()
            levels = {k: v for k, v in values.items() if is_level(k)}
            self.reporter.counters({k: v for k, v in values.items() if k not in levels}, levels)

"""The kernel write of one answer's grants: only what extends a grant, under the set caps.

Called with the tracker's lock held, after the budgets admitted the grants:

1. :meth:`GrantWriter.to_write` keeps the grants that extend what the kernel holds.  While a
   restart's adoption (:mod:`nettrust_core.lifecycle.adoption`) is still reading the kernel's
   sets, an address the tracker does not know may hold a longer grant there: the kernel is asked
   for that element first (one GETSETELEM, microseconds), so nothing is shortened.
2. :meth:`GrantWriter.write` makes room under ``grants.max_per_set`` (revoking the largest
   holders' grants first), writes in one backend call, and when the kernel still says the set is
   full, evicts once more and retries.  It returns the question names whose grants were revoked,
   for the cache invalidator.
"""

from __future__ import annotations

import errno
import logging
from collections import Counter
from typing import Iterable

from ..errors import NetTrustError
from ..firewall.base import FirewallBackend, Grant, IPAddress
from .caps import SetCaps
from .tracker import GrantTracker

log = logging.getLogger("nettrust.authorizer")


class GrantWriter:
    def __init__(self, backend: FirewallBackend, tracker: GrantTracker, set_caps: SetCaps,
                 counters: Counter[str]) -> None:
        self.backend = backend
        self.tracker = tracker
        self.set_caps = set_caps
        self.counters = counters

    def to_write(self, grants: Iterable[Grant], now: float) -> list[Grant]:
        """The grants that extend what the kernel holds (caller holds the tracker's lock)."""
        tracker = self.tracker
        if not tracker.complete:
            for g in grants:
                if tracker.expires_in(g.address) is None:
                    left = self.backend.lookup(g.address)
                    self.counters["adoption_lookups"] += 1
                    if left:
                        tracker.record(g.address, now + left, answered=False)
        return [g for g in grants if tracker.needs_write(g.address, now + g.timeout)]

    def write(self, todo: list[Grant]) -> list[str]:
        """Write under the set caps: make room first; a full set gets one forced eviction and
        retry.  The question names whose grants were evicted (for cache invalidation)."""
        names: list[str] = []
        evict = self.set_caps.to_evict(self.tracker, todo)
        if evict:
            names += self._revoke(evict)
        try:
            self.backend.grant(todo)
        except NetTrustError as exc:
            if getattr(exc, "errno", None) != errno.ENFILE:
                raise
            self.counters["set_full"] += 1
            names += self._revoke(self.set_caps.to_evict(self.tracker, todo, force=True))
            self.backend.grant(todo)
        return names

    def _revoke(self, addresses: list[IPAddress]) -> list[str]:
        self.backend.revoke(addresses)
        names = self.tracker.forget(addresses)
        self.counters["evicted"] += len(addresses)
        log.warning("grant set near its size (grants.max_per_set = %d): revoked %d grants of the "
                    "largest domains", self.set_caps.size, len(addresses))
        return names

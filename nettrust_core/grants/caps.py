"""Caps on what the answer path may grant, so that no name, zone, client or flood can fill the
firewall or push out the grants of others.

Applied under the tracker's lock before the kernel write:

* **Budgets** (:class:`Budgets`): live granted addresses are counted per name (the end of its
  CNAME chain, where CDNs rotate: ``grants.max_per_name``), per registrable domain of the
  question (``grants.max_per_domain``: a wildcard zone inventing names shares one budget) and
  per client (``grants.max_per_client``, off by default: on a host every answer goes to
  127.0.0.1).  Addresses already granted are always refreshed; new
  ones beyond a budget are refused (not written, counted).  The counts live in the tracker
  (one entry per granted address, see nettrust_core.grants.tracker), so they cost no memory per
  name and are bounded by the set size; expired entries still counted are pruned when a budget refuses
  (at most once a second).
* **Per set** (``grants.max_per_set``, the kernel set's ``size``): when a family's set would pass
  95 % of its size, 5 % of its grants are revoked in one batch, taken from the clients holding
  the most, inside each from the registrable domains holding the most, nearest expiry first
  (:meth:`GrantTracker.eviction_candidates`), so a flooding client or zone loses its own grants
  before a small one loses any.  Open connections are unaffected (established traffic is accepted
  before the set lookup); the revoked names are removed from the resolver's cache, so the next
  lookup is answered afresh and granted again.  If the kernel still refuses (its expired
  elements are collected about once a second), the answer fails closed.
"""

from __future__ import annotations

import logging
from typing import Final, Sequence

from ..firewall.base import Grant, IPAddress
from .tracker import GrantTracker, Owner

log = logging.getLogger("nettrust.caps")

HIGH_WATER: Final = 0.95       # of the set size: eviction starts above this
EVICT_SHARE: Final = 0.05      # of the set size: evicted at once
PRUNE_EVERY: Final = 1.0       # seconds between prunes forced by a refusing budget


class Budgets:
    """Live granted addresses per name, per registrable domain and per client."""

    def __init__(self, tracker: GrantTracker, per_name: int, per_domain: int,
                 per_client: int) -> None:
        self.tracker = tracker
        self.per_name = per_name
        self.per_domain = per_domain
        self.per_client = per_client
        self._pruned_at = float("-inf")

    def room(self, owner: Owner) -> tuple[int, str]:
        """New addresses ``owner`` may still be granted, and the budget that limits it."""
        t = self.tracker
        return min((self.per_name - t.per_name.get(owner.name, 0), "name"),
                   (self.per_domain - t.per_domain.get(owner.domain, 0), "domain"),
                   (self.per_client - t.per_client.get(owner.client, 0) if self.per_client
                    else 1 << 62, "client"))

    def admit(self, owner: Owner, grants: Sequence[Grant], now: float
              ) -> tuple[Sequence[Grant], list[Grant], str | None]:
        """Split ``grants`` into (admitted, refused, the budget that refused)."""
        tracker = self.tracker
        new = sum(1 for g in grants if not tracker.is_live(g.address, now))
        if not new:
            return grants, [], None
        room, which = self.room(owner)
        if room < new and now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            tracker.prune()
            room, which = self.room(owner)
        if room >= new:
            return grants, [], None
        admitted, refused = [], []
        for g in grants:
            if tracker.is_live(g.address, now):
                admitted.append(g)
            elif room > 0:
                admitted.append(g)
                room -= 1
            else:
                refused.append(g)
        return admitted, refused, which


class SetCaps:
    """Keeps each family's grant set under its kernel ``size`` by evicting from the largest
    registrable domains first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.high = int(size * HIGH_WATER)
        self.batch = max(1, int(size * EVICT_SHARE))

    def to_evict(self, tracker: GrantTracker, todo: Sequence[Grant], *, force: bool = False) -> list[IPAddress]:
        """Addresses to revoke before writing ``todo`` (empty when there is room)."""
        if not force and tracker.count(4) + len(todo) <= self.high \
                and tracker.count(6) + len(todo) <= self.high:
            return []                                    # the usual case: far from full
        out = []
        for v in (4, 6):
            new = sum(1 for g in todo if g.address.version == v
                      and tracker.expires_in(g.address) is None)
            if force or tracker.count(v) + new > self.high:
                if tracker.count(v) + new > self.high:
                    tracker.prune()
                if force or tracker.count(v) + new > self.high:
                    keep = {g.address for g in todo}
                    out += [a for a in tracker.eviction_candidates(v, self.batch + new + len(keep))
                            if a not in keep][:self.batch + new]
        return out

"""Caps on what the answer path may grant, so that no name and no flood can fill the firewall.

Two rules, both applied under the tracker's lock before the kernel write:

* **Per name** (``grants.max_per_name``): a name (the end of its CNAME chain, where CDNs rotate)
  holds at most N granted addresses at once.  Addresses it already holds are always refreshed;
  new ones beyond N are refused (not written, counted) until some of its grants lapse.  The
  bookkeeping itself is bounded: at most :data:`MAX_NAMES` names (~300 bytes each) are
  remembered, the least recently answered forgotten first (forgetting only resets that name's
  count; a name answered often stays).
* **Per set** (``grants.max_per_set``, the kernel set's ``size``): when a family's set would pass
  95 % of its size, the 5 % of its grants nearest to expiry are revoked in one batch.  Open
  connections are unaffected (established traffic is accepted before the set lookup); new
  connections to a revoked address need a fresh answer.  If the kernel still refuses (its
  expired elements are collected about once a second), the answer fails closed.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Sequence

from ..firewall.base import Grant
from ..hosts import GrantTracker

log = logging.getLogger("nettrust.caps")

MAX_NAMES = 65536       # names whose grants are counted at once (~20 MB at most)
HIGH_WATER = 0.95       # of the set size: eviction starts above this
EVICT_SHARE = 0.05      # of the set size: evicted at once


class NameCaps:
    """Live granted addresses per name, capped at ``per_name``; remembers ``max_names`` names."""

    def __init__(self, per_name: int, max_names: int) -> None:
        self.per_name = per_name
        self.max_names = min(max_names, MAX_NAMES)
        self._held: dict[str, dict] = {}

    def admit(self, name: str, grants: Sequence[Grant], now: float
              ) -> tuple[Sequence[Grant], list[Grant]]:
        """Split ``grants`` into (admitted, refused) and remember the admitted ones' expiry."""
        held = self._held.pop(name, None)
        if held is None:
            held = {}
            if len(self._held) >= self.max_names:        # forget the least recent 1 %
                for old in list(islice(self._held, max(1, self.max_names // 100))):
                    del self._held[old]
        elif len(held) >= self.per_name:
            for a in [a for a, t in held.items() if t <= now]:
                del held[a]
        self._held[name] = held                          # (re)inserted last: most recent
        if len(held) + len(grants) <= self.per_name:    # the usual case: room for all
            for g in grants:
                expires = now + g.timeout
                if held.get(g.address, 0.0) < expires:
                    held[g.address] = expires
            return grants, []
        admitted, refused = [], []
        for g in grants:
            if g.address in held or len(held) < self.per_name:
                held[g.address] = max(held.get(g.address, 0.0), now + g.timeout)
                admitted.append(g)
            else:
                refused.append(g)
        return admitted, refused

    def __len__(self) -> int:
        return len(self._held)


class SetCaps:
    """Keeps each family's grant set under its kernel ``size`` by evicting the nearest expiries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.high = int(size * HIGH_WATER)
        self.batch = max(1, int(size * EVICT_SHARE))

    def to_evict(self, tracker: GrantTracker, todo: Sequence[Grant], *, force: bool = False) -> list:
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
                    out += [a for a in tracker.nearest_expiry(v, self.batch + new) if a not in keep]
        return out

"""The host tracker: which addresses are granted until when, as far as this process knows.

It exists for one rule of the design: a later or shorter answer never shortens a live grant
(re-adding an element with a shorter timeout would shorten it on this kernel).  So the answer
path writes an address only when the new expiry is later than the one already granted.  On
start the tracker is filled from the kernel's sets, so a restart never shortens grants either.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from .firewall.base import GrantedElement, IPAddress


class GrantTracker:
    """Expiry per granted address, on the tracker's monotonic clock.

    ``slack`` is how much later a new expiry must be to be worth a kernel write: answers for a
    popular name arrive constantly and each would otherwise rewrite the element.
    Expired entries are pruned in bulk once the table outgrows ``prune_at`` (amortised O(1)).
    """

    def __init__(self, *, slack: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 prune_at: int = 65536) -> None:
        self.slack = slack
        self.clock = clock
        self._expiry: dict[IPAddress, float] = {}
        self._prune_at = prune_at
        self.lock = threading.Lock()

    def needs_write(self, address: IPAddress, expires_at: float) -> bool:
        known = self._expiry.get(address)
        return known is None or expires_at > known + self.slack or known <= self.clock()

    def record(self, address: IPAddress, expires_at: float) -> None:
        self._expiry[address] = expires_at
        if len(self._expiry) > self._prune_at:
            self.prune()

    def prune(self) -> int:
        now = self.clock()
        dead = [a for a, t in self._expiry.items() if t <= now]
        for a in dead:
            del self._expiry[a]
        if len(self._expiry) > self._prune_at // 2:
            self._prune_at = len(self._expiry) * 2
        return len(dead)

    def restore(self, elements: Iterable[GrantedElement]) -> int:
        now = self.clock()
        n = 0
        for e in elements:
            self._expiry[e.address] = now + e.expires_in
            n += 1
        return n

    def expires_in(self, address: IPAddress) -> float | None:
        t = self._expiry.get(address)
        if t is None:
            return None
        left = t - self.clock()
        return left if left > 0 else None

    def clear(self) -> None:
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._expiry)

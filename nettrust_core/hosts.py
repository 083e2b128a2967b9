"""The host tracker: which addresses are granted until when, as far as this process knows.

It exists for one rule of the design: a later or shorter answer never shortens a live grant
(re-adding an element with a shorter timeout would shorten it on this kernel).  So the answer
path writes an address only when the new expiry is later than the one already granted.  On
start the tracker is filled from the kernel's sets, so a restart never shortens grants either.

It also remembers when a DNS answer last named each address, so liveness renewals (which extend
the expiry without an answer) stop at ``lifecycle.max_lifetime``, and it counts entries per
address family, so the set caps can act before the kernel refuses an element.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Callable, Iterable

from .firewall.base import GrantedElement, IPAddress


class GrantTracker:
    """Expiry per granted address, on the tracker's monotonic clock.

    ``slack`` is how much later a new expiry must be to be worth a kernel write: answers for a
    popular name arrive constantly and each would otherwise rewrite the element.
    Expired entries are pruned in bulk once the table outgrows ``prune_at`` (amortised O(1)).
    Callers hold :attr:`lock` around reads and writes that must be consistent.
    """

    def __init__(self, *, slack: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 prune_at: int = 65536) -> None:
        self.slack = slack
        self.clock = clock
        self._expiry: dict[IPAddress, float] = {}
        self._answered: dict[IPAddress, float] = {}
        self._count = {4: 0, 6: 0}
        self._prune_at = prune_at
        self.lock = threading.Lock()
        #: False while a restart's adoption of the kernel's grants is still running: an address
        #: missing here may then still be granted in the kernel (see nettrust_core.adoption).
        self.complete = True

    def needs_write(self, address: IPAddress, expires_at: float) -> bool:
        known = self._expiry.get(address)
        return known is None or expires_at > known + self.slack or known <= self.clock()

    def record(self, address: IPAddress, expires_at: float, *, answered: bool = True) -> None:
        """A write to the kernel: by a DNS answer, or (``answered=False``) by a renewal."""
        if address not in self._expiry:
            self._count[address.version] += 1
        self._expiry[address] = expires_at
        if answered or address not in self._answered:
            self._answered[address] = self.clock()
        if len(self._expiry) > self._prune_at:
            self.prune()

    def forget(self, addresses: Iterable[IPAddress]) -> None:
        for a in addresses:
            if self._expiry.pop(a, None) is not None:
                self._count[a.version] -= 1
            self._answered.pop(a, None)

    def prune(self) -> int:
        """Forget expired entries; how many."""
        now = self.clock()
        dead = [a for a, t in self._expiry.items() if t <= now]
        self.forget(dead)
        if len(self._expiry) > self._prune_at // 2:
            self._prune_at = len(self._expiry) * 2
        return len(dead)

    def adopt(self, elements: Iterable[GrantedElement]) -> int:
        """Merge grants read back from the kernel; the later expiry wins, so an answer
        recorded while the (slow) read ran is never undone.  How many were merged."""
        now = self.clock()
        n = 0
        for e in elements:
            expires_at = now + e.expires_in
            known = self._expiry.get(e.address)
            if known is None or known < expires_at:
                self.record(e.address, expires_at, answered=False)
            n += 1
        return n

    def restore(self, elements: Iterable[GrantedElement]) -> int:
        """Adopt the kernel's live grants; their last answer is taken to be now."""
        now = self.clock()
        n = 0
        for e in elements:
            self.record(e.address, now + e.expires_in)
            n += 1
        return n

    def expires_in(self, address: IPAddress) -> float | None:
        t = self._expiry.get(address)
        if t is None:
            return None
        left = t - self.clock()
        return left if left > 0 else None

    def answered_at(self, address: IPAddress) -> float | None:
        return self._answered.get(address)

    def items(self) -> list[tuple[IPAddress, float]]:
        """A copy of the (address, expiry) pairs.  The copy is one C-level pass, so the lock is
        held only briefly; background scans (liveness, metrics) work on it outside the lock."""
        return list(self._expiry.items())

    def forget_expired(self, addresses: Iterable[IPAddress]) -> int:
        """Forget those of ``addresses`` that are still expired (a renewal meanwhile keeps one)."""
        now = self.clock()
        gone = [a for a in addresses if self._expiry.get(a, now + 1) <= now]
        self.forget(gone)
        return len(gone)

    def nearest_expiry(self, version: int, n: int) -> list[IPAddress]:
        """The ``n`` addresses of one family that expire first (the set caps' eviction)."""
        items = ((t, a) for a, t in self._expiry.items() if a.version == version)
        return [a for _t, a in heapq.nsmallest(n, items, key=lambda item: item[0])]

    def count(self, version: int) -> int:
        return self._count[version]

    def clear(self) -> None:
        self._expiry.clear()
        self._answered.clear()
        self._count = {4: 0, 6: 0}

    def __len__(self) -> int:
        return len(self._expiry)

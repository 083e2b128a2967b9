"""Gateway mode: which (client, destination) pairs are granted until when, in this process.

The per-client twin of :class:`~.tracker.GrantTracker`, with the same rule: a later or shorter
answer never shortens a live grant, so a pair is written to the kernel only when the new expiry
is later (by more than ``slack``) than the one this process already wrote, or when it lapsed.
It is also what the ``reply_cache`` callback consults first on every cache hit: a hit whose
pairs are all granted long enough costs a dictionary lookup per address and no kernel write.

Kept apart from the host tracker on purpose: the host tracker's budgets, evictions, adoption and
cache invalidation are per destination, and the gateway's own traffic (output hook) keeps using
it unchanged.  Keys are ``(client text, destination address)``: the client as Unbound reports it
(``repinfo.addr``), so the cache-hit path builds no address object for it.

Memory: one dict entry per live pair (~200 bytes); expired pairs are pruned in bulk once the
map outgrows ``prune_at`` (amortised O(1)).  Not filled from the kernel on restart: Unbound's
cache starts empty too, so every pair is first granted from a fresh answer (its full TTL).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..firewall.base import IPAddress

Pair = tuple[str, IPAddress]


class ClientGrants:
    def __init__(self, *, slack: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 prune_at: int = 65536) -> None:
        self.slack = slack
        self.clock = clock
        self._expiry: dict[Pair, float] = {}
        self._prune_at = prune_at
        self.lock = threading.Lock()

    def get(self, pair: Pair) -> float | None:
        """The expiry this process wrote for ``pair`` (monotonic clock), None when unknown."""
        return self._expiry.get(pair)

    def needs_write(self, pair: Pair, expires_at: float, now: float) -> bool:
        known = self._expiry.get(pair)
        return known is None or known <= now or expires_at > known + self.slack

    def record(self, pair: Pair, expires_at: float) -> None:
        self._expiry[pair] = expires_at
        if len(self._expiry) > self._prune_at:
            self.prune()

    def forget(self, pairs) -> None:
        for p in pairs:
            self._expiry.pop(p, None)

    def prune(self) -> int:
        now = self.clock()
        dead = [p for p, t in self._expiry.items() if t <= now]
        for p in dead:
            del self._expiry[p]
        if len(self._expiry) > self._prune_at // 2:
            self._prune_at = len(self._expiry) * 2
        return len(dead)

    def expires_in(self, client: str, address: IPAddress) -> float | None:
        t = self._expiry.get((client, address))
        if t is None:
            return None
        left = t - self.clock()
        return left if left > 0 else None

    def clear(self) -> None:
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._expiry)

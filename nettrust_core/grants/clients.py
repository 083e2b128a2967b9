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

Memory: one dict entry per live pair (~100 bytes) in one dict per client; expired pairs are
pruned in bulk once the map outgrows ``prune_at`` (amortised O(1)).  Not filled from the kernel on restart: Unbound's
cache starts empty too, so every pair is first granted from a fresh answer (its full TTL).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from ..firewall.base import IPAddress

Pair = tuple[str, IPAddress]


class ClientGrants:
    """Expiry per (client, destination), on the tracker's monotonic clock, held per client.

    ``cap``: live pairs one client may hold (0: no cap).  A client at its cap gets no new pair
    until some of its pairs lapse (:meth:`admits`): one client cannot fill the kernel's
    per-client set (``grants.max_per_set``) and so fail every other client's answers closed.
    """

    def __init__(self, *, slack: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 prune_at: int = 65536, cap: int = 0) -> None:
        self.slack = slack
        self.clock = clock
        self.cap = cap
        #: client -> {destination: expiry}
        self.by_client: dict[str, dict[IPAddress, float]] = {}
        self._size = 0
        self._prune_at = prune_at
        self.lock = threading.Lock()

    def get(self, pair: Pair) -> float | None:
        """The expiry this process wrote for ``pair`` (monotonic clock), None when unknown."""
        d = self.by_client.get(pair[0])
        return None if d is None else d.get(pair[1])

    def needs_write(self, pair: Pair, expires_at: float, now: float) -> bool:
        known = self.get(pair)
        return known is None or known <= now or expires_at > known + self.slack

    def admits(self, client: str, address: IPAddress, now: float, pending: int = 0) -> bool:
        """False when ``client`` (with ``pending`` new pairs of this answer) is at its cap and
        ``address`` is not one of its live pairs."""
        if not self.cap:
            return True
        d = self.by_client.get(client)
        held = 0 if d is None else len(d)
        if held + pending < self.cap or (d is not None and d.get(address, 0) > now):
            return True
        if d is None:
            return held + pending < self.cap
        dead = [a for a, t in d.items() if t <= now]
        for a in dead:
            del d[a]
        self._size -= len(dead)
        return held - len(dead) + pending < self.cap

    def record(self, pair: Pair, expires_at: float) -> None:
        client, address = pair
        d = self.by_client.get(client)
        if d is None:
            d = self.by_client[client] = {}
        if address not in d:
            self._size += 1
        d[address] = expires_at
        if self._size > self._prune_at:
            self.prune()

    def forget(self, pairs: Iterable[Pair]) -> None:
        for client, address in pairs:
            d = self.by_client.get(client)
            if d is not None and d.pop(address, None) is not None:
                self._size -= 1

    def prune(self) -> int:
        now = self.clock()
        gone = 0
        for client in list(self.by_client):
            d = self.by_client[client]
            dead = [a for a, t in d.items() if t <= now]
            for a in dead:
                del d[a]
            gone += len(dead)
            if not d:
                del self.by_client[client]
        self._size -= gone
        if self._size > self._prune_at // 2:
            self._prune_at = self._size * 2
        return gone

    def expires_in(self, client: str, address: IPAddress) -> float | None:
        t = self.get((client, address))
        if t is None:
            return None
        left = t - self.clock()
        return left if left > 0 else None

    def clear(self) -> None:
        self.by_client.clear()
        self._size = 0

    def __len__(self) -> int:
        return self._size

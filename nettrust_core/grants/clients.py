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

Caps, as for the host's grants (:mod:`.caps`): ``cap`` live pairs per client, ``per_domain`` live
pairs per client and registrable domain of the question (a wildcard zone inventing addresses
fills only its own budget), and :meth:`ClientGrants.eviction_candidates` for the kernel set's
size: taken from the clients holding the most, inside each from the domains holding the most,
nearest expiry first.

Memory: one dict entry per live pair (~100 bytes) in one dict per client; expired pairs are
pruned in bulk once the map outgrows ``prune_at`` (amortised O(1)).  Not filled from the kernel on restart: Unbound's
cache starts empty too, so every pair is first granted from a fresh answer (its full TTL).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Callable, Iterable

from ..firewall.base import IPAddress

Pair = tuple[str, IPAddress]


class ClientGrants:
    """Expiry per (client, destination), on the tracker's monotonic clock, held per client.

    ``cap``: live pairs one client may hold (0: no cap).  A client at its cap gets no new pair
    until some of its pairs lapse (:meth:`refuses`): one client cannot fill the kernel's
    per-client set (``grants.max_per_set``) and so fail every other client's answers closed.
    ``per_domain``: live pairs one client may hold under one registrable domain (0: no budget).
    """

    def __init__(self, *, slack: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 prune_at: int = 65536, cap: int = 0, per_domain: int = 0) -> None:
        self.slack = slack
        self.clock = clock
        self.cap = cap
        self.per_domain = per_domain
        #: client -> {destination: expiry}
        self.by_client: dict[str, dict[IPAddress, float]] = {}
        #: client -> {destination: registrable domain of the question that granted it}
        self.domain_of: dict[str, dict[IPAddress, str]] = {}
        #: (client, domain) -> pairs held
        self.held: Counter[tuple[str, str]] = Counter()
        #: pairs per destination IP version (the kernel's two sets)
        self.per_version = {4: 0, 6: 0}
        #: client -> a time no later than its earliest pair's expiry: before it, none of the
        #: client's pairs can have lapsed, so a client at its budget is refused without a scan.
        self._lapse: dict[str, float] = {}
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
        return self.refuses(client, address, now, pending) is None

    def refuses(self, client: str, address: IPAddress, now: float, pending: int = 0,
                domain: str = "", pending_domain: int = 0) -> str | None:
        """None when a new pair ``client . address`` fits, else the budget it would pass
        ("client": ``cap`` with ``pending`` new pairs of this answer; "domain": ``per_domain``
        under ``domain`` with ``pending_domain``).  A live pair always fits (it is refreshed)."""
        d = self.by_client.get(client)
        if d is None or d.get(address, 0) > now:
            if d is None:
                return "client" if self.cap and pending >= self.cap else (
                    "domain" if self.per_domain and pending_domain >= self.per_domain else None)
            return None
        why = self._over(client, d, pending, domain, pending_domain)
        if why is None or now < self._lapse.get(client, now):
            return why
        # Lapsed pairs free their room.  One scan per lapse at most, not per refused answer: a
        # client at its cap (16,384 pairs by default) made every one of its answers scan them
        # all (the benchmark's gateway run: miss latency p50 15-52 ms at 1000 QPS).
        dead, soonest = [], math.inf
        for a, t in d.items():
            if t <= now:
                dead.append(a)
            elif t < soonest:
                soonest = t
        self._lapse[client] = soonest
        for a in dead:
            self._drop(client, d, a)
        return self._over(client, d, pending, domain, pending_domain)

    def _over(self, client: str, d: dict[IPAddress, float], pending: int, domain: str,
              pending_domain: int) -> str | None:
        if self.cap and len(d) + pending >= self.cap:
            return "client"
        if self.per_domain and self.held[client, domain] + pending_domain >= self.per_domain:
            return "domain"
        return None

    def record(self, pair: Pair, expires_at: float, domain: str = "") -> None:
        client, address = pair
        d = self.by_client.get(client)
        if d is None:
            d = self.by_client[client] = {}
            self.domain_of[client] = {}
        doms = self.domain_of[client]
        if expires_at < self._lapse.get(client, math.inf):
            self._lapse[client] = expires_at
        if address not in d:
            self._size += 1
            self.per_version[address.version] += 1
        else:
            self.held[client, doms.get(address, "")] -= 1
        d[address] = expires_at
        doms[address] = domain
        self.held[client, domain] += 1
        if self._size > self._prune_at:
            self.prune()

    def _drop(self, client: str, d: dict[IPAddress, float], address: IPAddress) -> None:
        del d[address]
        key = (client, self.domain_of[client].pop(address, ""))
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]
        self._size -= 1
        self.per_version[address.version] -= 1

    def forget(self, pairs: Iterable[Pair]) -> None:
        for client, address in pairs:
            d = self.by_client.get(client)
            if d is not None and address in d:
                self._drop(client, d, address)

    def prune(self) -> int:
        now = self.clock()
        gone = 0
        for client in list(self.by_client):
            d = self.by_client[client]
            dead = [a for a, t in d.items() if t <= now]
            for a in dead:
                self._drop(client, d, a)
            gone += len(dead)
            if not d:
                del self.by_client[client]
                del self.domain_of[client]
                self._lapse.pop(client, None)
        if self._size > self._prune_at // 2:
            self._prune_at = self._size * 2
        return gone

    def eviction_candidates(self, version: int, count: int) -> list[Pair]:
        """Up to ``count`` live pairs of one destination family to revoke when its set is
        nearly full: from the clients holding the most, inside each from the registrable
        domains holding the most, nearest expiry first (one sort; only when a set is full)."""
        ranked = []
        for client, d in self.by_client.items():
            doms = self.domain_of[client]
            size = len(d)
            for a, t in d.items():
                if a.version == version:
                    ranked.append((-size, -self.held[client, doms.get(a, "")], t, client, a))
        ranked.sort(key=lambda r: r[:3])
        return [(r[3], r[4]) for r in ranked[:count]]

    def expires_in(self, client: str, address: IPAddress) -> float | None:
        t = self.get((client, address))
        if t is None:
            return None
        left = t - self.clock()
        return left if left > 0 else None

    def clear(self) -> None:
        self.by_client.clear()
        self.domain_of.clear()
        self.held.clear()
        self._lapse.clear()
        self.per_version = {4: 0, 6: 0}
        self._size = 0

    def __len__(self) -> int:
        return self._size

"""Gateway mode's answer path (``gateway.per_client``): who receives an answer, and the write of
their ``client . destination`` grants.

The authorizer hands over the policy's verdict and the receiving clients; this module splits
them into this host (loopback, or nobody: a prefetch -- granted as in output mode by the
authorizer) and the clients behind the gateway, and writes the pairs that would get longer
(:class:`~.clients.ClientGrants`: never shortened, capped per client) in one backend call.
It also answers the ``reply_cache`` callback's cheap questions: is this cached message already
judged for this client (:attr:`ClientGranter.hits_done`), are these pairs granted long enough
(:meth:`ClientGranter.cache_hit_granted`).
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import NetTrustError
from ..firewall.base import ClientPairs, FirewallBackend, Grant, IPAddress, MacAddress
from .clients import ClientGrants
from .neighbours import NeighbourTable
from .caps import EVICT_SHARE, HIGH_WATER
from .timeouts import Timeouts, comment

if TYPE_CHECKING:
    from ..policy import Verdict

#: Client texts whose parsed address is remembered at most (cleared when full).
MAX_CLIENT_TEXTS = 65536

#: What a pair is granted to: the client's address (or its IPv6 /N), or its MAC.
Client = IPAddress | MacAddress


class ClientGranter:
    def __init__(self, backend: FirewallBackend, timeouts: Timeouts, counters: Counter[str],
                 clock: Callable[[], float], *, cap: int, prefix6: int = 128,
                 neighbours: NeighbourTable | None = None, set_size: int = 0,
                 per_domain: int = 0) -> None:
        self.backend = backend
        #: The backend's optional per-client verbs (None: it has none).  Asked once: an
        #: isinstance check against a runtime Protocol costs microseconds per call.
        self.pairs: ClientPairs | None = backend if isinstance(backend, ClientPairs) else None
        self.timeouts = timeouts
        self.counters = counters
        self.clock = clock
        self.map = ClientGrants(slack=min(1.0, timeouts.grace / 2), clock=clock, cap=cap,
                                per_domain=per_domain)
        #: grants.max_per_set: each per-client set's kernel size (0: none, no eviction).
        self.set_size = set_size
        #: client text -> (key text, the address granted: IPv6 cut to ``prefix6``) or None
        self._ips: dict[str, tuple[str, IPAddress] | None] = {}
        #: key -> what the kernel's pairs are keyed by, and back (eviction revokes by it)
        self._objects: dict[str, Client] = {}
        self._keys: dict[object, str] = {}
        self.prefix6 = prefix6
        #: gateway.client_key = "mac": pairs are granted to the client's MAC, read here.
        self.neighbours = neighbours
        #: Cached messages already judged for a client: (client, qname, qtype, the message's
        #: absolute expiry) -- its grants outlive the cached message, so a later hit of the
        #: same message by the same client needs no decoding at all (cleared on a reset).
        self.hits_done: set[tuple[object, ...]] = set()
        #: Until then a pair this process has not written may still be granted in the kernel
        #: by the process before a restart: asked first (one GETSETELEM), so it is never
        #: shortened.  After it, any earlier grant has lapsed (none outlives max_ttl + grace).
        self.ask_kernel_until = clock() + timeouts.max_ttl + timeouts.grace
        #: (client, its address, destination, expiry) of the pair written last: what the
        #: periodic check asks the kernel about to notice a flush (lifecycle.verify).
        self.last_written: tuple[str, Client | None, IPAddress, float] | None = None
        #: The same for the pair with the latest expiry written since the last reset: sampled
        #: too, since the pair written last was most likely written after a flush.
        self.longest_written: tuple[str, Client | None, IPAddress, float] | None = None
        #: The first pair written since the periodic check last looked (it clears this).
        self.first_since_check: tuple[str, Client | None, IPAddress, float] | None = None

    def reset(self) -> None:
        """Forget every pair (the ruleset was rebuilt or flushed): rewritten on the next hit."""
        self.map.clear()
        self.hits_done.clear()
        self.last_written = None
        self.longest_written = None
        self.first_since_check = None

    def client_key(self, client: str) -> tuple[str, Client] | None:
        """(the key its grants are remembered under, the address -- or MAC -- they are written
        for), None when unparsable or (MAC keys) its MAC is unknown (counted)."""
        found = self._address_key(client)
        if found is None or self.neighbours is None or found[1].is_loopback:
            return found
        keyed = self.neighbours.lookup(found[1])
        if keyed is None:
            self.counters["clients_without_mac"] += 1
        return keyed

    def _address_key(self, client: str) -> tuple[str, IPAddress] | None:
        """Remembered: the cache-hit path is hot.  An IPv4-mapped IPv6 client is its IPv4
        address (what the forward hook sees); an IPv6 one is cut to ``prefix6``."""
        ips = self._ips
        if client in ips:
            return ips[client]
        found: tuple[str, IPAddress] | None
        if True:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                found = None
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                if ip.version == 6 and self.prefix6 < 128 and not ip.is_loopback:
                    ip = ipaddress.IPv6Network(f"{ip}/{self.prefix6}", strict=False).network_address
                    found = (str(ip), ip)
                else:
                    found = (client, ip)
            if len(ips) >= MAX_CLIENT_TEXTS:
                ips.clear()
            ips[client] = found
        return found

    def split(self, clients: str | Iterable[str] | None) -> tuple[list[tuple[str, Client]], bool]:
        """(remote clients with their addresses, whether this host itself is among them).

        No client at all (a prefetch) counts as this host: its answer grants as in output mode.
        An IPv4-mapped IPv6 client is its IPv4 address (that is what the forward hook sees)."""
        if isinstance(clients, str) or clients is None:
            clients = () if not clients else (clients,)
        remote: list[tuple[str, Client]] = []
        host = False
        seen = set()
        keys = set()
        for c in clients:
            if c in seen:
                continue
            seen.add(c)
            found = self.client_key(c)
            if found is None:
                if self.neighbours is None or self._address_key(c) is None:
                    self.counters["clients_unparsable"] += 1
                continue
            key, ip = found
            if ip.is_loopback:
                host = True
            elif key not in keys:
                keys.add(key)
                remote.append((key, ip))
                if key not in self._objects:
                    if len(self._objects) >= MAX_CLIENT_TEXTS:
                        self._objects.clear()
                        self._keys.clear()
                    self._objects[key], self._keys[ip] = ip, key
        if not seen:
            host = True
        return remote, host

    def grant(self, verdict: Verdict, remote: list[tuple[str, Client]], domain: str = ""
              ) -> tuple[tuple[Grant, ...], int, float, str | None]:
        """Write the pairs that would get longer, in one backend call: (grants justified,
        written, seconds the write took, error or None).

        A pair of different IP versions (an IPv4 client's AAAA answer) cannot match a packet:
        it is counted, not written (dual-stack clients: see the README's gateway section).
        A client at its cap (grants.max_per_client, else max_per_set / 16), or at
        grants.max_per_domain pairs under ``domain`` (the question's registrable domain), gets
        no new pair; a per-client set nearly full (grants.max_per_set) loses 5 % first
        (:meth:`_evict`)."""
        why = comment(verdict.chain)
        timeout_for = self.timeouts.for_ttl
        cg = self.map
        grants: list[Grant] = []
        todo: list[Grant] = []
        pairs: list[tuple[tuple[str, IPAddress], float]] = []
        other_family = capped = over_domain = 0
        pending: dict[str, int] = {}        # new pairs per client in this answer (the cap)
        write_s = 0.0
        with cg.lock:
            now = self.clock()
            for c, ip in remote:
                for addr, ttl in verdict.grants:
                    if ip.version and addr.version != ip.version:      # (a MAC: 0, any)
                        other_family += 1
                        continue
                    known = cg.get((c, addr))
                    if known is None and now < self.ask_kernel_until:
                        known = self._from_kernel(c, ip, addr, now)
                    fresh = known is None or known <= now
                    if fresh:
                        refused = cg.refuses(c, addr, now, pending.get(c, 0), domain,
                                             pending.get(c, 0))
                        if refused is not None:
                            if refused == "client":
                                capped += 1
                            else:
                                over_domain += 1
                            continue
                    if fresh:
                        pending[c] = pending.get(c, 0) + 1
                    timeout = timeout_for(ttl)
                    g = Grant(addr, timeout, why, ip)
                    grants.append(g)
                    pair = (c, addr)
                    if cg.needs_write(pair, now + timeout, now):
                        todo.append(g)
                        pairs.append((pair, now + timeout))
            if todo:
                started = time.perf_counter()
                try:
                    if self.set_size:
                        self._evict(todo)
                    self.backend.grant(todo)
                except NetTrustError as exc:
                    self.counters["backend_errors"] += 1
                    return tuple(grants), 0, 0.0, str(exc)
                write_s = time.perf_counter() - started
                longest = self.longest_written
                for (pair, at), g in zip(pairs, todo, strict=True):
                    cg.record(pair, at, domain)
                    if longest is None or at >= longest[3]:
                        longest = (pair[0], g.client, pair[1], at)
                self.longest_written = longest
                if self.first_since_check is None:
                    (c, addr), at = pairs[0]
                    self.first_since_check = (c, todo[0].client, addr, at)
                (c, addr), at = pairs[-1]
                self.last_written = (c, todo[-1].client, addr, at)
        if other_family:
            self.counters["client_grants_other_family"] += other_family
        if capped:
            self.counters["refused_per_client_cap"] += capped
        if over_domain:
            self.counters["refused_per_client_domain"] += over_domain
        self.counters["client_elements_written"] += len(todo)
        return tuple(grants), len(todo), write_s, None

    def extend(self, remote: list[tuple[str, Client]], grants: list[tuple[IPAddress, float]],
               why: str) -> int:
        """A fleet follower's write (:mod:`nettrust_core.fleet.follower`): ``client . address``
        for each remote client and ``(address, seconds left)``, only where that makes the pair
        longer (never shortened; after a restart the kernel is asked first, as for answers), in
        one backend call after the set-size eviction; how many were written.  The budgets were
        the master's business.  Raises NetTrustError when the kernel refuses."""
        cg = self.map
        todo: list[Grant] = []
        pairs: list[tuple[tuple[str, IPAddress], float]] = []
        with cg.lock:
            now = self.clock()
            for c, ip in remote:
                for addr, left in grants:
                    if ip.version and addr.version != ip.version:
                        self.counters["client_grants_other_family"] += 1
                        continue
                    if cg.get((c, addr)) is None and now < self.ask_kernel_until:
                        self._from_kernel(c, ip, addr, now)
                    if cg.needs_write((c, addr), now + left, now):
                        todo.append(Grant(addr, left, why, ip))
                        pairs.append(((c, addr), now + left))
            if todo:
                if self.set_size:
                    self._evict(todo)
                self.backend.grant(todo)
                for pair, at in pairs:
                    cg.record(pair, at)
                (c, addr), at = pairs[-1]
                self.last_written = (c, todo[-1].client, addr, at)
        self.counters["client_elements_written"] += len(todo)
        return len(todo)

    def _evict(self, todo: list[Grant]) -> None:
        """Before writing ``todo``: when a family's per-client set would pass 95 % of its size,
        revoke 5 % of it (plus room for the new pairs) in one batch, chosen by
        :meth:`.clients.ClientGrants.eviction_candidates`; counted as ``client_pairs_evicted``.
        Without a backend that can revoke pairs the kernel refuses the write when full, and
        the answer fails closed.  Called with the map's lock held."""
        cg, backend = self.map, self.pairs
        high, batch = int(self.set_size * HIGH_WATER), max(1, int(self.set_size * EVICT_SHARE))
        for v in (4, 6):
            new = sum(1 for g in todo if g.address.version == v)
            if cg.per_version[v] + new <= high or backend is None:
                continue
            cg.prune()
            if cg.per_version[v] + new <= high:
                continue
            keep = {(self._key_of(g.client), g.address) for g in todo}
            victims = [p for p in cg.eviction_candidates(v, batch + new + len(keep))
                       if p not in keep][:batch + new]
            known = [(self._objects[c], a) for c, a in victims if c in self._objects]
            backend.revoke_pairs(known)
            cg.forget(victims)
            self.counters["client_pairs_evicted"] += len(victims)

    def _key_of(self, client: object) -> str:
        return self._keys.get(client, "") if client is not None else ""

    def _from_kernel(self, client: str, ip: Client, address: IPAddress,
                     now: float) -> float | None:
        """The kernel's expiry of a pair unknown here (after a restart), recorded; None: none."""
        if self.pairs is None:
            return None
        try:
            left = self.pairs.lookup_pair(ip, address)
        except NetTrustError:
            return None                     # the write that follows reports the problem
        self.counters["client_adoption_lookups"] += 1
        if not left:
            return None
        self.map.record((client, address), now + left)
        return now + left

    def hit_known(self, key: tuple[object, ...], now: int) -> bool:
        """A cached message (``key[3]``: its absolute expiry) already judged for this client,
        whose grants still cover this hit.  They outlive the message by ``grace``, which is
        what a hit grants only while the message has more than ``min_ttl`` left: a shorter
        remaining TTL is clamped up to ``min_ttl``, and in the last whole second the TTL the
        client sees (expiry - whole seconds now) overstates what is left by up to 1 s — both
        must be judged again (found by the enforcement model's long run: TTL-0 and TTL-1 hits
        were skipped and their pairs ended up to 1.3 s early)."""
        left = key[3] - now                 # type: ignore[operator]
        return left > 0 and left > self.timeouts.min_ttl and key in self.hits_done

    def hit_done(self, key: tuple[object, ...]) -> None:
        """Remember a cached message judged for a client (see :attr:`hits_done`)."""
        done = self.hits_done
        if self.neighbours is not None and not self._has_key(key[0]):
            return                          # granted nothing (no MAC yet): judge the next hit
        if len(done) >= 65536:
            done.clear()
        done.add(key)

    def _has_key(self, client: object) -> bool:
        found = self._address_key(client) if isinstance(client, str) else None
        return found is not None and (found[1].is_loopback or self.neighbours is None
                                      or self.neighbours.peek(found[1]) is not None)

    def cache_hit_granted(self, client: str, addresses: Iterable[tuple[IPAddress, int]]) -> bool:
        """The ``reply_cache`` callback's first, cheap question: are all of ``addresses``
        (``(address, seconds left)``) already granted to ``client`` at least as long as this
        hit would grant them?  True: nothing to do (no policy, no kernel).  Addresses of the
        other IP version are never granted per client and are left out; this host's own
        hits need nothing (output mode: the cache-lifetime invariant holds)."""
        found = self.client_key(client)
        if found is None or found[1].is_loopback:
            return True
        key, ip = found
        mine = self.map.by_client.get(key)
        if mine is None:
            return False
        version = ip.version
        get = mine.get
        timeout_for = self.timeouts.for_ttl
        slack = self.map.slack
        now = self.clock()
        for addr, ttl in addresses:
            if version and addr.version != version:
                continue
            known = get(addr)
            if known is None or known <= now or now + timeout_for(ttl) > known + slack:
                return False
        self.counters["cache_hits_granted"] += 1
        return True

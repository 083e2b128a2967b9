"""The host tracker: which addresses are granted until when, as far as this process knows.

It exists for one rule of the design: a later or shorter answer never shortens a live grant
(re-adding an element with a shorter timeout would shorten it on this kernel).  So the answer
path writes an address only when the new expiry is later than the one already granted.  On
start the tracker is filled from the kernel's sets, so a restart never shortens grants either.

It also remembers when a DNS answer last named each address, so liveness renewals (which extend
the expiry without an answer) stop at ``lifecycle.max_lifetime``; who the address is charged to
(an :class:`Owner`: the name, its registrable domain and the client of the answer that first
granted it), so the budgets of nettrust_core.grants.caps are counted without a second table;
and the few question names whose answers hold it (:data:`NAMES_PER_ADDRESS`), so a revoked
grant can take the cached answers with it.

Memory, measured with tracemalloc over 100k names (tests/unit/test_caps.py measures it):
308 B per name of one address (329 B before), 4.4 KB per name of 64 addresses (9.5 KB before,
when per-name dictionaries duplicated the tracker); bounded by the set cap.
"""

from __future__ import annotations

from collections import Counter

import heapq
import threading
import time
from typing import Callable, Final, Iterable, ItemsView

from ..firewall.base import GrantedElement, IPAddress
from ..networks import V6_KEY, address_key, key_address
from .fair_share import water_fill


#: Question names remembered per address (the most recent ones): the cached answers that a
#: revocation removes from the resolver's cache.  Names beyond these stay cached until their TTL.
NAMES_PER_ADDRESS: Final = 4


class Owner:
    """Whom a grant is charged to, and the answer that granted it: one object shared by every
    address of one answer, which is all the tracker keeps per address in the usual case (an
    :class:`_Entry` only when an address was answered by several names)."""

    __slots__ = ("name", "domain", "client", "names", "answered")

    def __init__(self, name: str, domain: str, client: str = "", qname: str | None = None) -> None:
        self.name = name            # the end of the CNAME chain (per-name cap)
        self.domain = domain        # the question's registrable domain (per-domain cap)
        self.client = client        # the client's address ("" unknown: adoption, renewals)
        #: The question name (a str; an entry holds a tuple once several names answered it).
        self.names = qname if qname is not None else name
        #: When the answer was recorded (set by the tracker's first record of it).
        self.answered: float | None = None

    @property
    def owner(self) -> "Owner":
        return self

    def same_budget(self, other: "Owner") -> bool:
        return (self.name == other.name and self.domain == other.domain
                and self.client == other.client)


#: Grants read back from the kernel without a usable comment.
UNKNOWN = Owner("", "", "")
UNKNOWN.answered = 0.0


def _add_names(out: list[str], names: str | tuple[str, ...]) -> None:
    if isinstance(names, str):
        out.append(names)
    else:
        out.extend(names)


class _Entry:
    __slots__ = ("answered", "owner", "names")

    def __init__(self, answered: float | None, owner: Owner, names: str | tuple[str, ...]) -> None:
        self.answered = answered
        self.owner = owner
        self.names = names


class GrantTracker:
    """Expiry per granted address, on the tracker's monotonic clock.

    Keyed by :func:`~nettrust_core.networks.address_key` (an int: hashed in C); the methods take
    and return addresses, except the whole-table scans (:meth:`items`, :meth:`name_table`,
    :meth:`forget_expired`), which stay in keys (``key_address`` turns those kept back).

    ``slack`` is how much later a new expiry must be to be worth a kernel write: answers for a
    popular name arrive constantly and each would otherwise rewrite the element.
    Expired entries are pruned in bulk once the table outgrows ``prune_at`` (amortised O(1)).
    Callers hold :attr:`lock` around reads and writes that must be consistent.
    """

    def __init__(self, *, slack: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 prune_at: int = 65536, owner_of: Callable[[str], Owner] | None = None) -> None:
        self.slack = slack
        self.clock = clock
        self._expiry: dict[int, float] = {}
        self._meta: dict[int, Owner | _Entry] = {}
        self._count = {4: 0, 6: 0}
        #: Live (tracked) addresses charged to each name, registrable domain and client.
        self.per_name: dict[str, int] = {}
        self.per_domain: dict[str, int] = {}
        self.per_client: dict[str, int] = {}
        self._prune_at = prune_at
        self._owner_of = owner_of
        self.lock = threading.Lock()
        #: False while a restart's adoption of the kernel's grants is still running: an address
        #: missing here may then still be granted in the kernel (see nettrust_core.grants.writer).
        self.complete = True
        #: The address written last and its expiry: what the periodic check asks the kernel
        #: about to notice a flush made by another process (see Authorizer.verify).
        self.last_written: tuple[IPAddress, float] | None = None
        #: A long-living grant: the latest expiry written since it was last forgotten.  The
        #: periodic check samples it too, since on a busy resolver the grant written last was
        #: most likely written after a flush (see nettrust_core.lifecycle.verify).
        self.longest: tuple[IPAddress, float] | None = None
        #: The first grant recorded since the periodic check last looked (it clears this): most
        #: likely written before a flush made since, when all later ones were written after it.
        self.first_since_check: tuple[IPAddress, float] | None = None
        #: Told the keys of the grants forgotten (revoked, expired, pruned), under :attr:`lock`:
        #: the shared tracker's writer deletes them from Redis (it only enqueues).
        self.on_forget: Callable[[list[int]], None] | None = None

    def needs_write(self, address: IPAddress, expires_at: float) -> bool:
        known = self._expiry.get(address_key(address))
        return known is None or expires_at > known + self.slack or known <= self.clock()

    def is_live(self, address: IPAddress, now: float) -> bool:
        known = self._expiry.get(address_key(address))
        return known is not None and known > now

    # -- accounting --------------------------------------------------------------------------
    def _charge(self, owner: Owner, delta: int) -> None:
        if delta > 0:                   # a new grant (once per written address): written out
            name, domain, client = owner.name, owner.domain, owner.client
            per = self.per_name
            per[name] = per.get(name, 0) + delta
            per = self.per_domain
            per[domain] = per.get(domain, 0) + delta
            per = self.per_client
            per[client] = per.get(client, 0) + delta
            return
        for table, key in ((self.per_name, owner.name), (self.per_domain, owner.domain),
                           (self.per_client, owner.client)):
            n = table.get(key, 0) + delta
            if n > 0:
                table[key] = n
            else:
                table.pop(key, None)

    def record(self, address: IPAddress, expires_at: float, *, answered: bool = True,
               owner: Owner | None = None) -> None:
        """A write to the kernel: by a DNS answer, or (``answered=False``) by a renewal.

        A new (or expired) address is charged to ``owner``; a live one keeps its owner and
        remembers the answer's question name among its last :data:`NAMES_PER_ADDRESS`.
        """
        now = self.clock()
        key = address_key(address)
        old = self._expiry.get(key)
        entry = self._meta.get(key)
        if old is None:
            self._count[4 if key < V6_KEY else 6] += 1
        if owner is not None and owner.answered is None:
            owner.answered = now
        if entry is None:
            if owner is None:
                owner = Owner("", "", "")
                owner.answered = now
            self._meta[key] = owner
            self._charge(owner, 1)
        elif owner is not None:
            current = entry.owner
            # A live grant stays charged to its budget; an expired one goes to the new answer.
            keep = (old is not None and old > now and current is not owner
                    and not current.same_budget(owner))
            charged = current if keep else owner
            if charged is not current:
                self._charge(current, -1)
                self._charge(charged, 1)
            names = entry.names
            if answered:
                qname = owner.names
                if isinstance(names, str):
                    names = qname if names == qname else (qname, names)
                elif qname not in names:
                    names = (qname, *names[:NAMES_PER_ADDRESS - 1])
            stamp = now if answered else entry.answered
            if charged is owner and names is owner.names and (answered or stamp == owner.answered):
                self._meta[key] = owner                     # the usual case: no object per address
            else:
                self._meta[key] = _Entry(stamp, charged, names)
        self._expiry[key] = expires_at
        if answered:
            self.last_written = (address, expires_at)
        longest = self.longest
        if longest is None or expires_at >= longest[1]:
            self.longest = (address, expires_at)
        if self.first_since_check is None:
            self.first_since_check = (address, expires_at)
        if len(self._expiry) > self._prune_at:
            self.prune()

    def forget(self, addresses: Iterable[IPAddress]) -> list[str]:
        """Forget these grants; the question names whose answers held them."""
        return self._forget_keys(map(address_key, addresses))

    def _forget_keys(self, keys: Iterable[int]) -> list[str]:
        names: list[str] = []
        gone: list[int] = []
        for k in keys:
            if self._expiry.pop(k, None) is not None:
                self._count[4 if k < V6_KEY else 6] -= 1
                gone.append(k)
            entry = self._meta.pop(k, None)
            if entry is not None:
                self._charge(entry.owner, -1)
                _add_names(names, entry.names)
        if self.last_written is not None and not self._tracks(self.last_written[0]):
            self.last_written = None
        if self.longest is not None and not self._tracks(self.longest[0]):
            self.longest = None
        if self.first_since_check is not None and not self._tracks(self.first_since_check[0]):
            self.first_since_check = None
        if gone and self.on_forget is not None:
            self.on_forget(gone)
        return names

    def _tracks(self, address: IPAddress) -> bool:
        return address_key(address) in self._expiry

    def names_of(self, addresses: Iterable[IPAddress]) -> list[str]:
        out: list[str] = []
        for a in addresses:
            entry = self._meta.get(address_key(a))
            if entry is not None:
                _add_names(out, entry.names)
        return out

    def name_table(self) -> list[tuple[int, tuple[str, ...]]]:
        """Every tracked address (its key) with the names that hold it (the questions, then the
        name the budget charged): a copy, for scans off the answer path (caller holds
        :attr:`lock`)."""
        out = []
        for key, entry in self._meta.items():
            names = entry.names
            out.append((key, ((names,) if isinstance(names, str) else tuple(names))
                        + (entry.owner.name,)))
        return out

    def all_names(self) -> set[str]:
        out: list[str] = []
        for e in self._meta.values():
            _add_names(out, e.names)
        return {n for n in out if n}

    def prune(self) -> int:
        """Forget expired entries; how many."""
        now = self.clock()
        dead = [k for k, t in self._expiry.items() if t <= now]
        self._forget_keys(dead)
        if len(self._expiry) > self._prune_at // 2:
            self._prune_at = len(self._expiry) * 2
        return len(dead)

    def owner_from_comment(self, comment: str, cache: dict[str, Owner]) -> Owner:
        owner = cache.get(comment)
        if owner is None:
            qname = comment.split(">", 1)[0]
            owner = (self._owner_of(qname) if (qname and self._owner_of is not None)
                     else Owner("", "", "", qname))
            cache[comment] = owner
        return owner

    def adopt(self, elements: Iterable[GrantedElement]) -> int:
        """Merge grants read back from the kernel; the later expiry wins, so an answer
        recorded while the (slow) read ran is never undone.  How many were merged."""
        now = self.clock()
        n = 0
        owners: dict[str, Owner] = {}
        for e in elements:
            expires_at = now + e.expires_in
            known = self._expiry.get(address_key(e.address))
            if known is None or known < expires_at:
                self.record(e.address, expires_at, answered=False,
                            owner=self.owner_from_comment(e.comment, owners))
            n += 1
        return n

    def owner_for(self, qname: str) -> Owner:
        """The owner a grant of ``qname`` read back (not answered now) is charged to."""
        if qname and self._owner_of is not None:
            return self._owner_of(qname)
        return Owner("", "", "", qname)

    def load(self, version: int, incoming: dict[int, float],
             owners: dict[int, Owner | _Entry],
             charged: Counter[Owner | _Entry] | None = None) -> int:
        """Bulk-merge one IP version's grants read back from a shared tracker
        (nettrust_core.fleet.tracker_redis): expiry and owner per address key
        (:func:`~nettrust_core.networks.address_key`), each owner with ``answered`` set.  As
        :meth:`adopt`: the later expiry wins, a known address keeps its owner.  The two dicts
        become the tracker's own (the caller gives them up): their keys were hashed once when the
        caller built them and are not hashed again -- only the keys already tracked are (at a
        restart, the few answered meanwhile), so a million merge in milliseconds under the
        lock.  ``charged``: ``Counter(owners.values())``
        when the caller counted it before taking the lock.  How many were read."""
        old, old_meta = self._expiry, self._meta
        read = len(incoming)
        clash = [a for a in old if a in incoming]
        later = [(a, incoming[a]) for a in clash if incoming[a] > old[a]]
        if charged is None:
            charged = Counter(owners.values())
        for a in clash:
            charged[owners[a]] -= 1
        incoming.update(old)                    # the tracked ones keep theirs ...
        owners.update(old_meta)
        for a, t in later:                      # ... unless the read-back is later
            incoming[a] = t
        self._expiry, self._meta = incoming, owners
        self._count[version] += read - len(clash)
        for owner, k in charged.items():
            if k:
                self._charge(owner.owner, k)
        if len(incoming) > self._prune_at:
            self._prune_at = len(incoming) * 2
        return read

    def restore(self, elements: Iterable[GrantedElement]) -> int:
        """Adopt the kernel's live grants; their last answer is taken to be now."""
        now = self.clock()
        n = 0
        owners: dict[str, Owner] = {}
        for e in elements:
            self.record(e.address, now + e.expires_in,
                        owner=self.owner_from_comment(e.comment, owners))
            n += 1
        return n

    def expiry(self, address: IPAddress) -> float | None:
        """When this process believes ``address``'s grant ends (tracker clock), None: unknown."""
        return self._expiry.get(address_key(address))

    def expires_in(self, address: IPAddress) -> float | None:
        t = self._expiry.get(address_key(address))
        if t is None:
            return None
        left = t - self.clock()
        return left if left > 0 else None

    def answered_at(self, address: IPAddress) -> float | None:
        entry = self._meta.get(address_key(address))
        return entry.answered if entry is not None else None

    def items(self) -> ItemsView[int, float]:
        """The pairs of a copy of the table: a dict copy makes no object per grant (120,000: 5 ms
        under the lock, a list of pairs 29-37 ms); scans iterate it outside the lock."""
        return self._expiry.copy().items()

    def forget_expired(self, keys: Iterable[int]) -> int:
        """Forget those of ``keys`` (as :meth:`items` gives them) that are still expired (a
        renewal meanwhile keeps one)."""
        now = self.clock()
        gone = [k for k in keys if self._expiry.get(k, now + 1) <= now]
        self._forget_keys(gone)
        return len(gone)

    def eviction_candidates(self, version: int, n: int) -> list[IPAddress]:
        """``n`` addresses of one family to revoke: shared out fairly (water-filling: whoever
        holds the most gives back first, down to a common level) between clients, then inside
        each client between registrable domains, then nearest expiry first.  A client or a zone
        flooding the set pays for its own flood; one holding a few grants keeps them while a
        larger holder remains.  One pass over the tracker (evictions come in batches)."""
        groups: dict[str, dict[str, list[tuple[float, int]]]] = {}
        meta = self._meta
        six = version == 6
        for a, t in self._expiry.items():
            if (a >= V6_KEY) == six:
                entry = meta.get(a)
                owner = entry.owner if entry is not None else UNKNOWN
                domains = groups.get(owner.client)
                if domains is None:
                    groups[owner.client] = domains = {}
                lst = domains.get(owner.domain)
                if lst is None:
                    domains[owner.domain] = lst = []
                lst.append((t, a))
        out: list[IPAddress] = []
        per_client = water_fill({c: sum(map(len, d.values())) for c, d in groups.items()}, n)
        for client, quota in per_client.items():
            domains = groups[client]
            for domain, k in water_fill({d: len(v) for d, v in domains.items()}, quota).items():
                out += [key_address(a)
                        for _t, a in heapq.nsmallest(k, domains[domain], key=lambda i: i[0])]
        return out

    def count(self, version: int) -> int:
        return self._count[version]

    def clear(self) -> set[str]:
        """Forget everything; the question names that held grants (for cache invalidation)."""
        names = self.all_names()
        self._expiry.clear()
        self._meta.clear()
        self._count = {4: 0, 6: 0}
        self.per_name.clear()
        self.per_domain.clear()
        self.per_client.clear()
        self.last_written = None
        self.longest = None
        self.first_since_check = None
        return names

    def __len__(self) -> int:
        return len(self._expiry)

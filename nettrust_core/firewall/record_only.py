"""The ``record-only`` backend: grants are kept in memory, nothing is written to the kernel.

For a resolver whose grants are enforced elsewhere — Kubernetes NetworkPolicy mode (the
operator renders the grants from the statistics database or the fleet's stream as ipBlocks), a
cloud prefix list — and which therefore runs without CAP_NET_ADMIN (:func:`needs_net_admin`):
``firewall.backends = ["record-only"]``.  Every verb succeeds (a grant never fails the answer);
the grants still go to the statistics database and the fleet like any other backend's, since
the authorizer reports and publishes what it granted, not what a kernel holds.  Nothing on this
host is filtered: the egress stays open here, by design, until the external enforcer has it.

The in-memory map answers ``lookup``/``list_grants`` (the periodic grant check and ``nettrust
hosts`` then agree with the tracker) and is bounded: expired entries are pruned, and past
``grants.max_per_set`` the nearest expiries are dropped (the tracker's own caps apply first).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FirewallError
from .base import (ClientPair, Grant, GrantedElement, IPAddress, MacAddress, OnBatch,
                   RulesetSpec, Status, StruckClient)

NAME = "record-only"
#: Backends that write nothing to the kernel: a resolver using only these needs no CAP_NET_ADMIN.
KERNEL_FREE = frozenset({NAME})
#: Entries kept at most when the configuration sets no grant-set size.
DEFAULT_CAP = 1 << 20

Client = IPAddress | MacAddress | None


def needs_net_admin(backends: Sequence[str]) -> bool:
    """Whether the named backends write kernel state (and so need CAP_NET_ADMIN)."""
    return any(name not in KERNEL_FREE for name in backends)


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float          # monotonic
    timeout: float
    comment: str


@dataclass
class RecordOnlyBackend:
    """Holds what was granted, with its expiry; programs nothing."""

    spec: RulesetSpec = field(default_factory=RulesetSpec)
    instance: int = 0
    clock: Callable[[], float] = time.monotonic
    present: bool = False
    repairs: int = 0
    errors: int = 0
    _grants: dict[tuple[Client, IPAddress], _Entry] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_config(cls, spec: RulesetSpec, config: Any, instance: int = 0) -> RecordOnlyBackend:
        return cls(spec, instance=instance)

    @property
    def cap(self) -> int:
        return self.spec.set_size or DEFAULT_CAP

    def ensure(self) -> None:
        self.present = True

    def grant(self, grants: Sequence[Grant]) -> None:
        now = self.clock()
        with self._lock:
            for g in grants:
                key = (g.client, g.address)
                old = self._grants.get(key)
                if old is None or old.expires < now + g.timeout:
                    self._grants[key] = _Entry(now + g.timeout, g.timeout, g.comment)
            if len(self._grants) > self.cap:
                self._shrink(now)

    def _shrink(self, now: float) -> None:
        """Under the lock: drop the expired, then the nearest expiries down to 95 % of the cap."""
        live = {k: e for k, e in self._grants.items() if e.expires > now}
        if len(live) > self.cap:
            keep = sorted(live.items(), key=lambda item: -item[1].expires)[:int(self.cap * 0.95)]
            live = dict(keep)
        self._grants = live

    def _live(self, client_grants: bool) -> list[tuple[Client, IPAddress, _Entry]]:
        now = self.clock()
        with self._lock:
            return [(c, a, e) for (c, a), e in self._grants.items()
                    if e.expires > now and (c is not None) == client_grants]

    def lookup(self, address: IPAddress) -> float | None:
        with self._lock:
            entry = self._grants.get((None, address))
        left = entry.expires - self.clock() if entry is not None else 0.0
        return left if left > 0 else None

    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        now = self.clock()
        found = [GrantedElement(a, e.timeout, e.expires - now, e.comment, self.instance)
                 for _c, a, e in self._live(False)]
        if on_batch is None:
            return found
        on_batch(found)
        return []

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        with self._lock:
            for address in addresses:
                self._grants.pop((None, address), None)

    def flush_grants(self, own_only: bool = False) -> None:
        with self._lock:
            self._grants.clear()

    def remove(self) -> None:
        self.flush_grants()
        self.present = False

    def status(self, *, count_elements: bool = True) -> Status:
        # The configured hooks are reported as covered: nothing here is hooked, and nothing is
        # missing either (the periodic check must not "repair" a ruleset that never exists).
        sets: dict[str, int | None] = {}
        if count_elements:
            sets = {"grants": len(self._live(False)), "clients": len(self._live(True))}
        return Status(NAME, self.present, table=self.spec.table, family="none",
                      hooks=tuple(self.spec.hooks) if self.present else (), sets=sets,
                      repairs=self.repairs, errors=self.errors)

    def close(self) -> None:
        pass

    # -- the gateway's per-client verbs (ClientPairs): the same map, keyed by the client ----
    def lookup_pair(self, client: IPAddress | MacAddress, address: IPAddress) -> float | None:
        with self._lock:
            entry = self._grants.get((client, address))
        left = entry.expires - self.clock() if entry is not None else 0.0
        return left if left > 0 else None

    def revoke_pairs(self, pairs: Sequence[tuple[IPAddress | MacAddress, IPAddress]]) -> None:
        with self._lock:
            for pair in pairs:
                self._grants.pop(pair, None)

    def list_pairs(self) -> list[ClientPair]:
        now = self.clock()
        return [ClientPair(c, a, e.expires - now, e.timeout, e.comment, self.instance)
                for c, a, e in self._live(True) if c is not None]

    def strike(self, address: IPAddress | int, seconds: float) -> None:
        raise FirewallError("the record-only backend cannot drop a client's DNS (strikes need "
                            "a kernel backend: nftables)", table=self.spec.table)

    def list_strikes(self) -> list[StruckClient]:
        return []

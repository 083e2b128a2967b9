"""The configured list of backends (``firewall.backends``) driven as one backend.

Like firewalld's transaction over nftables/iptables/ebtables: every verb goes to every backend,
in the configured order, and the answer path sees one :class:`~.base.FirewallBackend`.

* **grant** goes to each backend in turn.  If one refuses, the grant is rolled back (revoked)
  on the backends that had already accepted it and :class:`GrantRefused` is raised, naming the
  backend: the authorizer fails the answer closed (SERVFAIL), counts the failure per backend
  (``backend_errors_<name>``) and forgets the rolled-back addresses, so the next answer writes
  them afresh.  An answer is released only when every backend holds its grants.  A rollback that
  fails too is logged and counted (``rollback_failures``); that backend may then hold the grant
  until it expires (what the policy allowed, but without the answer).
* **lookup** returns the *least* time left over the backends, and None as soon as one lacks the
  grant.  Its one use is the write decision of the answer path (skip a write that would not
  extend the live grant, never shortening it) and that decision must hold for every backend:
  with the maximum, a backend that lost a grant (flushed, or added to the list since) would
  never get it back while another still held it; with the minimum it is written again.  The
  price, only when backends disagree: the backend holding the longer grant gets it set to the
  new answer's timeout (the kernel cannot "add unless longer").  The periodic check (which looks
  up the last grant written) so notices a grant flushed from *any* backend.
* **list_grants(own_only=True)** (adoption after a restart) hands over the first backend's
  grants with each one's time left lowered to the least over the backends (one lookup per
  element in each other backend) and those some backend lacks left out: the tracker then
  believes a grant only as far as every backend holds it.  The listing for people
  (``own_only=False``, ``nettrust hosts``) is the first backend's.
* **revoke, flush, remove, ensure** go to every backend; revoke/flush/remove try them all and
  then raise the first error.
* **status**: each backend's :class:`~.base.Status` in ``members``; the top-level fields say
  what holds for all (present only if every one is, the hooks every one has, policy ``drop``
  only if every one drops).

With one backend every verb is one extra Python call.  Measured in one run in a network
namespace (a one-address nftables grant, best of 7 rounds of 5000, medians in brackets):
14.81 us (15.26) called directly, 15.12 us (15.31) through a one-backend fan-out: within the
noise; the call itself is 69 -> 141 ns on a backend that does nothing.  With the recording fake
as a second backend: 19.25 us.  (tests/unit/test_backend_contract.py holds it under 1 us.)
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import FirewallError, NetTrustError
from .base import (ClientPair, ClientPairs, FirewallBackend, Grant, GrantedElement, IPAddress,
                   MacAddress, OnBatch, Status, StruckClient)
from .diagnostics import BaseChain, Diagnostics

log = logging.getLogger("nettrust.firewall")


class GrantRefused(FirewallError):
    """One of several backends refused a grant; ``revoked``: the addresses rolled back on the
    backends that had accepted it (no backend keeps them from this grant)."""

    def __init__(self, message: str, *, backend: str, revoked: Sequence[IPAddress] = (),
                 errno: int | None = None, table: str | None = None) -> None:
        self.backend = backend
        self.revoked = tuple(revoked)
        super().__init__(message, errno=errno, table=table)


class FanOut:
    """:class:`~.base.FirewallBackend` over ``backends`` (name, backend), in order.

    ``failures``: grants each backend refused; ``rollback_failures``: rollbacks that failed.
    """

    def __init__(self, backends: Sequence[tuple[str, FirewallBackend]]) -> None:
        if not backends:
            raise FirewallError("no firewall backend configured")
        names = [n for n, _b in backends]
        if len(set(names)) != len(names):
            raise FirewallError(f"a firewall backend is listed twice: {names}")
        self.backends = tuple(backends)
        self.failures: Counter[str] = Counter()
        self.rollback_failures: Counter[str] = Counter()
        self._only = backends[0][1] if len(backends) == 1 else None
        #: The backends that keep per-client pairs, found once: an isinstance check against a
        #: runtime Protocol walks its members (microseconds), and lookup_pair runs per answer.
        self._pairs: tuple[ClientPairs, ...] = tuple(b for _n, b in backends if isinstance(b, ClientPairs))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _b in self.backends)

    @property
    def repairs(self) -> int:
        only = self._only          # read twice per answer: the usual single backend directly
        if only is not None:
            return only.repairs
        return sum(b.repairs for _n, b in self.backends)

    # -- the answer path ---------------------------------------------------------------------
    def grant(self, grants: Sequence[Grant]) -> None:
        only = self._only
        if only is not None:
            try:
                only.grant(grants)
            except NetTrustError:
                self.failures[self.backends[0][0]] += 1
                raise
            return
        done: list[tuple[str, FirewallBackend]] = []
        for name, backend in self.backends:
            try:
                backend.grant(grants)
            except NetTrustError as exc:
                self.failures[name] += 1
                revoked = self._roll_back(done, [g.address for g in grants])
                raise GrantRefused(
                    f"firewall backend {name!r} refused the grant ({exc})"
                    + (f"; rolled back on {', '.join(n for n, _b in done)}" if done else ""),
                    backend=name, revoked=revoked, errno=getattr(exc, "errno", None),
                    table=getattr(exc, "table", None)) from exc
            done.append((name, backend))

    def _roll_back(self, done: list[tuple[str, FirewallBackend]],
                   addresses: list[IPAddress]) -> list[IPAddress]:
        for name, backend in done:
            try:
                backend.revoke(addresses)
            except NetTrustError as exc:
                self.rollback_failures[name] += 1
                log.error("cannot roll back a refused grant on firewall backend %r: %s; it may "
                          "let %s through until the grant expires", name, exc,
                          ", ".join(map(str, addresses)))
        return addresses if done else []

    def lookup_pair(self, client: IPAddress | MacAddress, address: IPAddress) -> float | None:
        """The least time left on ``client . address`` among the backends that keep pairs."""
        least: float | None = None
        for backend in self._pairs:
            left = backend.lookup_pair(client, address)
            if left is None:
                return None
            least = left if least is None else min(least, left)
        return least

    def strike(self, address: IPAddress | int, seconds: float) -> None:
        """Strike ``address`` in every backend that can (an optional verb)."""
        for backend in self._pairs:
            backend.strike(address, seconds)

    def revoke_pairs(self, pairs: Sequence[tuple[IPAddress | MacAddress, IPAddress]]) -> None:
        for backend in self._pairs:
            backend.revoke_pairs(pairs)

    def list_pairs(self) -> list[ClientPair]:
        """The pairs of the first backend that keeps them (each keeps the same ones)."""
        return self._pairs[0].list_pairs() if self._pairs else []

    def list_strikes(self) -> list[StruckClient]:
        return self._pairs[0].list_strikes() if self._pairs else []

    def lookup(self, address: IPAddress) -> float | None:
        only = self._only
        if only is not None:
            return only.lookup(address)
        least: float | None = None
        for _name, backend in self.backends:
            left = backend.lookup(address)
            if left is None:
                return None
            least = left if least is None else min(least, left)
        return least

    # -- reads -------------------------------------------------------------------------------
    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        first = self.backends[0][1]
        if self._only is not None or not own_only:
            return first.list_grants(on_batch, own_only=own_only)
        out: list[GrantedElement] = []
        give: Callable[[list[GrantedElement]], None] = on_batch or out.extend
        first.list_grants(lambda batch: give(self._agreed(batch)), own_only=True)
        return out

    @property
    def grant_columns(self) -> Callable[[], Any] | None:
        """The single backend's bulk read-back for a restart's adoption, when it has one (the
        nftables backend's; see nettrust_core.lifecycle.adoption), else None: with several
        backends a grant counts only as far as every one holds it (:meth:`list_grants`)."""
        return None if self._only is None else getattr(self._only, "grant_columns", None)

    def _agreed(self, batch: list[GrantedElement]) -> list[GrantedElement]:
        """Each grant with the least time left over the backends; none some backend lacks."""
        out = []
        for g in batch:
            left = g.expires_in
            for _name, backend in self.backends[1:]:
                other = backend.lookup(g.address)
                if other is None:
                    break
                left = min(left, other)
            else:
                out.append(g if left == g.expires_in else dataclasses.replace(g, expires_in=left))
        return out

    def status(self, *, count_elements: bool = True) -> Status:
        members = tuple(dataclasses.replace(b.status(count_elements=count_elements),
                                            errors=self.failures[n])
                        for n, b in self.backends)
        if len(members) == 1:
            return members[0]
        first = members[0]
        hooks = tuple(h for h in first.hooks if all(h in m.hooks for m in members))
        policies = [m.policy for m in members if m.policy != "drop"]
        return dataclasses.replace(
            first, backend="+".join(self.names), present=all(m.present for m in members),
            dormant=any(m.dormant for m in members), hooks=hooks,
            policy=policies[0] if policies else first.policy,
            errors=sum(self.failures.values()), repairs=sum(m.repairs for m in members),
            members=members)

    # -- control plane -----------------------------------------------------------------------
    def ensure(self) -> None:
        for _name, backend in self.backends:
            backend.ensure()

    def _each(self, verb: Callable[[FirewallBackend], None]) -> None:
        """``verb`` on every backend, then the first error (each one is tried)."""
        first: NetTrustError | None = None
        for name, backend in self.backends:
            try:
                verb(backend)
            except NetTrustError as exc:
                log.error("firewall backend %r: %s", name, exc)
                first = first or exc
        if first is not None:
            raise first

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        self._each(lambda b: b.revoke(addresses))

    def flush_grants(self, own_only: bool = False) -> None:
        self._each(lambda b: b.flush_grants(own_only))

    def remove(self) -> None:
        self._each(lambda b: b.remove())

    def close(self) -> None:
        for _name, backend in self.backends:
            backend.close()

    # -- diagnostics -------------------------------------------------------------------------
    def base_chains(self) -> list[BaseChain]:
        """The base chains every backend that can list them reports (each chain once)."""
        able = [b for _n, b in self.backends if isinstance(b, Diagnostics)]
        if not able:
            raise FirewallError(f"none of the firewall backends {', '.join(self.names)} lists "
                                "base chains")
        return list(dict.fromkeys(c for b in able for c in b.base_chains()))

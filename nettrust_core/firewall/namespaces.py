"""The ``namespaces`` backend: the nftables ruleset and every grant in other network namespaces.

One resolver protects many namespaces (containers, lab setups, the pods of a node):
``firewall.namespaces`` lists them as names under ``/run/netns`` (``"web"``), paths
(``"/proc/1234/ns/net"``, ``"/run/netns/web"``) or globs of either (``"pod-*"``,
``"/run/netns/ci-*"``).  Each matching namespace gets its own
:class:`~.nftables.NftablesBackend` whose netlink sockets were opened by a short-lived thread
that had entered the namespace (``setns``): a socket keeps the namespace it was created in, so
the answer path writes from Unbound's own thread, one batch per namespace per answer, with no
``ip netns exec`` (a process per write, ~45x slower) and no thread hop.  The control plane
(``ensure``: libnftables, ``list_grants``: a fresh dump socket) runs in such a thread too.

* **Namespaces that appear later** (a container starting) are found by a scan every
  :data:`SCAN_INTERVAL` seconds in a background thread (a ``listdir``/``glob`` and a ``stat``
  per namespace; never on the answer path).  A new one gets the ruleset first (drop policy:
  nothing is open early), then the live grants this backend wrote (its own record, see
  below), and only then joins the list the answer path writes to; grants written while it was
  being prepared are replayed once more under the lock before it joins.
* **A namespace that disappears** (its ``/run/netns`` name removed, its process gone: the path
  no longer leads to the same namespace inode) is dropped by the scan; a write to it that fails
  meanwhile is not an error either (our sockets keep a deleted namespace alive, so such a write
  normally succeeds into a namespace nobody uses).  Any other refused write fails the answer
  closed: what the earlier namespaces accepted of it is revoked and
  :class:`~nettrust_core.errors.FirewallError` is raised.
* **Per-namespace policy** (``firewall.namespace_allow``, entries ``"NAMESPACE PATTERN"``): a
  namespace with entries receives only grants whose name (the question, or the end of its CNAME
  chain, as the grant's comment records them) matches one of its patterns; the others are not
  written there, so a connect from it is refused.  Namespaces without entries receive every
  grant.  Keyed by the namespace's name (the basename under ``/run/netns``, else the path).
* **Own record**: the backend keeps ``address -> (deadline, comment)`` of what it wrote
  (one dict store per grant, under a lock) so a new namespace can be given the live grants
  without asking another namespace's kernel; adoption after a restart seeds it (the
  ``list_grants(own_only=True)`` call), so replay also holds after a restart.
* ``lookup`` (the never-shorten decision) is the least time left over the namespaces that
  should hold the address, None as soon as one lacks it (as :class:`~.fanout.FanOut` does).

Answers serialize on this backend's lock while they write (the record must never hold an
address whose write failed: a new namespace would be given it).  Not covered in the other
namespaces: liveness renewals and the connection audit (both read the resolver's own
conntrack table).

The resolver's own namespace is skipped (the ``nftables`` backend covers it).  Entering another
namespace needs CAP_SYS_ADMIN (and reading ``/proc/PID/ns/net`` of another user's process
CAP_SYS_PTRACE): Unbound then runs with those capabilities too.

Measured (tests/integration/namespaces_cost.py: a one-address grant through this backend, best
of 5 rounds of 2000, on a 2-core VM shared with other test runs, load average ~3.7), for 1, 2, 3
and 4 namespaces: 21.0, 42.7, 63.8, 82.3 us in the quietest run (another: 43.0, 72.3, 103.0,
116.0 us) -- linear, ~20 us per extra namespace, one acked netlink batch each, written one
after the other from the answering thread (the answer waits for all of them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import FirewallError, NetTrustError
from ..patterns import PatternSet, normalize_name
from .netns import NamespaceNftables, _identity, namespace_paths
from .base import Grant, GrantedElement, IPAddress, OnBatch, RulesetSpec, Status

log = logging.getLogger("nettrust.firewall")
NAME = "namespaces"
SCAN_INTERVAL = 0.25


@dataclass
class Member:
    name: str
    path: str
    identity: tuple[int, int]
    backend: NamespaceNftables
    patterns: PatternSet | None          # None: every grant

    def wants(self, comment: str) -> bool:
        if self.patterns is None:
            return True
        for part in comment.split(">"):
            try:
                if part and self.patterns.matches(normalize_name(part)):
                    return True
            except ValueError:
                continue
        return False

    def gone(self) -> bool:
        return _identity(self.path) != self.identity


class NamespacesBackend:
    """:class:`~.base.FirewallBackend` over the namespaces ``firewall.namespaces`` matches."""

    def __init__(self, spec: RulesetSpec, entries: Sequence[str],
                 rules: Sequence[Any] = (), *, instance: int = 0,
                 scan_interval: float = SCAN_INTERVAL) -> None:
        if not entries:
            raise FirewallError('the "namespaces" firewall backend needs firewall.namespaces '
                                "(names, /proc/PID/ns/net paths or globs)", table=spec.table)
        self.spec = spec
        self.entries = tuple(entries)
        self.instance = instance
        self.scan_interval = scan_interval
        patterns: dict[str, list[str]] = {}
        for rule in rules:                  # config.values.NamespaceRule
            patterns.setdefault(rule.namespace, []).append(rule.pattern)
        self.policies = {k: PatternSet(v) for k, v in patterns.items()}
        self.members: tuple[Member, ...] = ()
        self.repairs = 0
        self.errors = 0
        self.dropped = 0                    # namespaces dropped because they disappeared
        self.joined = 0                     # namespaces that joined after the first ensure
        self._record: dict[IPAddress, tuple[float, str]] = {}
        self._lock = threading.RLock()      # the answer path's: members and record
        self._ctl_lock = threading.Lock()   # one scan/ensure at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own = _identity("/proc/self/ns/net")
        self._scanned = False

    def _attached(self) -> tuple[Member, ...]:
        """The members; a process that never ensured (the CLI) attaches to what exists now."""
        if not self._scanned:
            self.scan(install=False)
        return self.members

    @classmethod
    def from_config(cls, spec: RulesetSpec, config: Any, instance: int = 0) -> NamespacesBackend:
        fw = config.firewall
        return cls(spec, fw.namespaces, fw.namespace_allow, instance=instance)

    # -- membership --------------------------------------------------------------------------
    def _open(self, name: str, path: str, install: bool = True) -> Member | None:
        """A member for ``path``, its ruleset installed (``install``); None when it is gone or
        is ours."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FirewallError(f"cannot open network namespace {path}: {exc}",
                                table=self.spec.table) from None
        st = os.fstat(fd)
        identity = (st.st_dev, st.st_ino)
        if identity == self._own:
            os.close(fd)
            log.warning("firewall.namespaces: %s is the resolver's own namespace; skipped (the "
                        "nftables backend covers it)", path)
            return None
        backend = NamespaceNftables(self.spec, fd, instance=self.instance)
        try:
            backend.open()
            if install:
                backend.ensure()
        except (OSError, NetTrustError) as exc:
            backend.close()
            if _identity(path) != identity:
                return None
            raise FirewallError(f"network namespace {name}: {exc}", table=self.spec.table) from None
        return Member(name, path, identity, backend, self.policies.get(name))

    def _replay(self, member: Member, record: dict[IPAddress, tuple[float, str]]) -> None:
        now = time.monotonic()
        grants = [Grant(a, deadline - now, comment) for a, (deadline, comment) in record.items()
                  if deadline - now > 0.001 and member.wants(comment)]
        for start in range(0, len(grants), 1000):
            member.backend.grant(grants[start:start + 1000])

    def scan(self, install: bool = True) -> tuple[list[str], list[str]]:
        """Add the namespaces that appeared, drop those gone: (joined, dropped) names.

        ``install=False`` (the CLI's reads, flush, remove): attach without installing anything.
        """
        with self._ctl_lock:
            self._scanned = True
            found = namespace_paths(self.entries)
            current = {m.identity: m for m in self.members}
            fresh: list[tuple[Member, dict]] = []
            seen: set[tuple[int, int]] = set()
            for name, path in found:
                identity = _identity(path)
                if identity is None or identity in seen:
                    continue
                seen.add(identity)
                if identity in current or identity == self._own:
                    continue
                try:
                    member = self._open(name, path, install)
                    if member is None:
                        continue
                    with self._lock:
                        snapshot = dict(self._record) if install else {}
                    self._replay(member, snapshot)
                except NetTrustError as exc:
                    log.error("firewall.namespaces: %s", exc)
                    continue
                fresh.append((member, snapshot))
            gone = [m for m in self.members if m.identity not in seen]
            if not fresh and not gone:
                return [], []
            with self._lock:
                for member, snapshot in fresh:   # what was granted while it was prepared
                    changed = {a: v for a, v in self._record.items() if snapshot.get(a) != v}
                    if changed:
                        try:
                            self._replay(member, changed)
                        except NetTrustError as exc:
                            log.error("firewall.namespaces: %s: %s", member.name, exc)
                            member.backend.close()
                            continue
                    self.members += (member,)
                self.members = tuple(m for m in self.members if m not in gone)
            for member in gone:
                self.dropped += 1
                member.backend.close()
                log.warning("network namespace %s is gone; no longer written", member.name)
            for member, snapshot in fresh:
                log.info("network namespace %s: ruleset and %d live grants installed",
                         member.name, len(snapshot))
            return [m.name for m, _s in fresh], [m.name for m in gone]

    def _watch(self) -> None:
        while not self._stop.wait(self.scan_interval):
            try:
                joined, _gone = self.scan()
                self.joined += len(joined)
            except Exception:           # never let the watcher die silently
                log.exception("firewall.namespaces: scan failed")

    # -- the answer path ---------------------------------------------------------------------
    def grant(self, grants: Sequence[Grant]) -> None:
        if not grants:
            return
        with self._lock:
            now = time.monotonic()
            done: list[tuple[Member, list[Grant]]] = []
            for member in self.members:
                mine = list(grants) if member.patterns is None else [
                    g for g in grants if member.wants(g.comment)]
                if not mine:
                    continue
                try:
                    member.backend.grant(mine)
                except NetTrustError as exc:
                    if member.gone():
                        log.warning("network namespace %s is gone (%s); skipped", member.name, exc)
                        continue
                    self.errors += 1
                    for other, written in done:
                        try:
                            other.backend.revoke([g.address for g in written])
                        except NetTrustError as rexc:
                            log.error("namespace %s: cannot roll back: %s", other.name, rexc)
                    raise FirewallError(f"network namespace {member.name}: {exc}",
                                        table=self.spec.table,
                                        errno=getattr(exc, "errno", None)) from exc
                done.append((member, mine))
            record = self._record
            for g in grants:
                record[g.address] = (now + g.timeout, g.comment)

    def _holders(self, address: IPAddress) -> list[Member]:
        entry = self._record.get(address)
        if entry is None:
            return list(self.members)
        return [m for m in self.members if m.wants(entry[1])]

    def lookup(self, address: IPAddress) -> float | None:
        least: float | None = None
        for member in self._holders(address):
            left = member.backend.lookup(address)
            if left is None:
                return None
            least = left if least is None else min(least, left)
        return least

    # -- reads -------------------------------------------------------------------------------
    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        members = self._attached()
        if not members:
            return []
        first = members[0].backend
        if not own_only:
            return first.list_grants(on_batch)
        out: list[GrantedElement] = []
        give: OnBatch = on_batch or out.extend

        def agreed(batch: list[GrantedElement]) -> None:
            keep = []
            now = time.monotonic()
            for g in batch:
                left = g.expires_in
                for member in members[1:]:
                    if member.patterns is not None and not member.wants(g.comment):
                        continue
                    other = member.backend.lookup(g.address)
                    if other is None:
                        break
                    left = min(left, other)
                else:
                    keep.append(g if left == g.expires_in else replace(g, expires_in=left))
                    with self._lock:
                        self._record.setdefault(g.address, (now + left, g.comment))
            give(keep)

        first.list_grants(agreed, own_only=True)
        return out

    def status(self, *, count_elements: bool = True) -> Status:
        members = []
        for m in self._attached():
            try:
                st = m.backend.status(count_elements=count_elements)
            except NetTrustError as exc:
                if m.gone():
                    continue
                raise FirewallError(f"network namespace {m.name}: {exc}",
                                    table=self.spec.table) from exc
            members.append(replace(st, backend=f"{NAME}:{m.name}"))
        base: dict[str, Any] = dict(table=self.spec.table, family="netns", repairs=self.repairs,
                                    errors=self.errors, members=tuple(members))
        if not members:
            return Status(NAME, True, hooks=tuple(self.spec.hooks), policy="drop",
                          priority=self.spec.priority, action=self.spec.action, **base)
        hooks = tuple(h for h in members[0].hooks if all(h in m.hooks for m in members))
        policies = [m.policy for m in members if m.policy != "drop"]
        return Status(NAME, all(m.present for m in members), dormant=any(m.dormant for m in members),
                      hooks=hooks, priority=members[0].priority,
                      policy=policies[0] if policies else members[0].policy,
                      action=members[0].action, **base)

    # -- control plane -----------------------------------------------------------------------
    def ensure(self) -> None:
        """Every matching namespace gets the ruleset (and joins); the watcher starts."""
        for member in self.members:
            try:
                member.backend.ensure()
            except NetTrustError:
                if not member.gone():
                    raise
        self.scan()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="nettrust-namespaces",
                                            daemon=True)
            self._thread.start()

    def _each(self, verb: Callable[[NamespaceNftables], None]) -> None:
        first: NetTrustError | None = None
        for member in self._attached():
            try:
                verb(member.backend)
            except NetTrustError as exc:
                if member.gone():
                    continue
                log.error("network namespace %s: %s", member.name, exc)
                first = first or exc
        if first is not None:
            raise first

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        with self._lock:
            for a in addresses:
                self._record.pop(a, None)
        self._each(lambda b: b.revoke(addresses))

    def flush_grants(self, own_only: bool = False) -> None:
        with self._lock:
            self._record.clear()
        self._each(lambda b: b.flush_grants(own_only))

    def remove(self) -> None:
        with self._lock:
            self._record.clear()
        self._each(lambda b: b.remove())

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        with self._lock:
            members, self.members = self.members, ()
        for member in members:
            member.backend.close()



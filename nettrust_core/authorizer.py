"""The authorizer: an answer and the policy's verdict become grants in the firewall.

This is the one object the Unbound adapter talks to.  ``authorize`` is the answer path: it runs
the policy, computes timeouts, skips writes that would not extend a live grant, and writes the
rest in one backend call before returning.  A backend failure is logged, counted and reported
in the decision so the adapter can fail closed (SERVFAIL) instead of releasing an answer whose
addresses are unreachable.

When grants go away behind the answers' backs (evicted by the set cap, ``nettrust flush`` from
another process, a deleted table), the answers Unbound still caches would lead to refused
connects: the revoked question names go to the cache invalidator, and the periodic
:meth:`Authorizer.verify` notices a flushed set or a missing ruleset within
``grants.verify_interval``, rebuilds the ruleset and starts the tracker afresh.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

from .answer import Answer, RCODE_NAMES, TYPE_NAMES
from .errors import NetTrustError
from .firewall.base import COMMENT_MAX, FirewallBackend, Grant
from .adoption import GrantAdoption
from .cache_invalidation import CacheInvalidator
from .hosts import GrantTracker, Owner
from .lifecycle.caps import Budgets, SetCaps
from .policy import NameCheck, Outcome, Policy, Verdict
from .registrable import registrable_domain
from .report import Reporter

log = logging.getLogger("nettrust.authorizer")
_ANSWER_COUNTER = {o: f"answers_{o.value}" for o in Outcome}
_REFUSED_COUNTER = {w: f"refused_per_{w}_cap" for w in ("name", "domain", "client")}
#: A sampled grant must have this many seconds left to tell a flush from a normal expiry.
_VERIFY_MARGIN = 2.0


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    #: Grants this answer justifies (with their timeouts), written or already live.
    grants: tuple[Grant, ...] = ()
    #: How many of them needed a kernel write.
    written: int = 0
    #: Set when the backend failed: the addresses are not reachable, fail closed.
    error: str | None = None


class Authorizer:
    def __init__(self, config, backend: FirewallBackend, *,
                 clock: Callable[[], float] = time.monotonic,
                 reporter: Reporter | None = None,
                 invalidator: CacheInvalidator | None = None) -> None:
        self.config = config
        #: Decision records go to the agent (statistics); None or disabled: nothing is sent.
        self.reporter = reporter if reporter is not None and reporter.enabled else None
        self.policy = Policy(config)
        self.backend = backend
        g = config.grants
        self.min_ttl, self.max_ttl, self.grace = g.min_ttl, g.max_ttl, g.grace
        #: Told the question names whose grants were revoked early (None: nobody to tell).
        self.invalidator = invalidator
        self.tracker = GrantTracker(slack=min(1.0, self.grace / 2), clock=clock,
                                    owner_of=lambda qname: Owner(qname, registrable_domain(qname)))
        self.budgets = Budgets(self.tracker, g.max_per_name, g.max_per_domain, g.max_per_client)
        self.set_caps = SetCaps(g.max_per_set)
        self.clock = clock
        self.counters: Counter[str] = Counter()
        #: The background read of the kernel's grants after start (None before start).
        self.adoption: GrantAdoption | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Build or repair the ruleset, then adopt the kernel's live grants in the background.

        Answers are exact from the first one: until adoption completes, an address the tracker
        does not know is looked up in the kernel before writing (see nettrust_core.adoption).
        """
        self.backend.ensure()
        self.adoption = GrantAdoption(self.backend, self.tracker)
        self.adoption.start()
        log.info("ruleset ready; adopting the live grants in the background")

    def stop(self) -> None:
        """Leave the firewall as configured: by default ruleset and grants stay (fail closed)."""
        mode = self.config.firewall.on_exit
        try:
            if self.adoption is not None:
                self.adoption.stop()
            if mode == "remove":
                self.backend.remove()
                log.info('ruleset removed on exit (on_exit = "remove"): egress is open')
            elif mode == "drop-grants":
                self.backend.flush_grants(own_only=True)     # other instances keep theirs
                with self.tracker.lock:
                    self.tracker.clear()
                log.info('grants revoked on exit (on_exit = "drop-grants")')
        finally:
            self.backend.close()

    # -- the answer path -------------------------------------------------------------------
    def check_query(self, qname: str, client: str | None = None, qtype: int = 0) -> NameCheck:
        check = self.policy.check_name(qname)
        if not check.allowed:
            self.counters["queries_blocked"] += 1
            if self.reporter is not None and client is not None:
                # Answered by the module itself: the agent learns why from this record.
                self.reporter.send({"t": "decision", "client": client, "qname": qname,
                                    "qtype": qtype, "outcome": Outcome.BLOCKED.value,
                                    "reason": check.reason, "rule": check.rule,
                                    "source": "blocked"})
        return check

    def timeout_for(self, ttl: int) -> float:
        return min(max(float(ttl), self.min_ttl), self.max_ttl) + self.grace

    def authorize(self, answer: Answer) -> Decision:
        verdict = self.policy.judge(answer)
        self.counters[_ANSWER_COUNTER[verdict.outcome]] += 1
        if not verdict.grants:
            self._debug(answer, verdict, ())
            if self.reporter is not None:
                self._report(answer, verdict, (), 0, 0.0, None)
            return Decision(verdict)

        chain = verdict.chain
        comment = _comment(chain)
        grants = tuple(Grant(addr, self.timeout_for(ttl), comment) for addr, ttl in verdict.grants)
        owner = Owner(chain[-1], registrable_domain(chain[0]), answer.client or "", chain[0])
        tracker = self.tracker
        revoked: list[str] = []
        reset = None
        with tracker.lock:
            now = self.clock()
            admitted, over, which = self.budgets.admit(owner, grants, now)
            if over:
                grants = tuple(admitted)
                self.counters[_REFUSED_COUNTER[which]] += len(over)
                log.debug("%s: budget per %s full (grants.max_per_%s): %s not granted",
                          chain[0], which, which, ", ".join(str(g.address) for g in over))
            write_s = 0.0
            repairs = getattr(self.backend, "repairs", 0)
            try:
                todo = self._to_write(grants, now)
                if todo:
                    started = time.perf_counter()
                    revoked = self._write(todo)
                    write_s = time.perf_counter() - started
            except NetTrustError as exc:
                self.counters["backend_errors"] += 1
                log.error("firewall write failed, answer for %s fails closed: %s", answer.qname, exc)
                if self.reporter is not None:
                    self._report(answer, verdict, grants, 0, 0.0, str(exc))
                return Decision(verdict, grants, 0, str(exc))
            if getattr(self.backend, "repairs", 0) != repairs:
                # The kernel had lost the ruleset (rebuilt on this write): what we believe is
                # granted is gone, start afresh and read back what the kernel holds.
                reset = self._reset_begin()
            expiry: dict[float, float] = {}     # one float per timeout, not per address
            for g in todo:
                at = expiry.get(g.timeout)
                if at is None:
                    at = expiry[g.timeout] = now + g.timeout
                tracker.record(g.address, at, owner=owner)
        if revoked:
            self._invalidate(revoked)
        if reset is not None:
            self._reset_finish(*reset, why="ruleset rebuilt on a grant")
        self.counters["elements_written"] += len(todo)
        self._debug(answer, verdict, grants)
        if self.reporter is not None:
            self._report(answer, verdict, grants, len(todo), write_s, None)
        return Decision(verdict, grants, len(todo))

    def _report(self, answer: Answer, verdict: Verdict, grants, written: int, write_s: float,
                error: str | None) -> None:
        """One decision record to the agent, after the write (a non-blocking datagram)."""
        self.reporter.send({
            "t": "decision", "client": answer.client, "qname": answer.qname,
            "qtype": answer.qtype, "rcode": answer.rcode, "outcome": verdict.outcome.value,
            "reason": verdict.reason, "rule": verdict.rule,
            "security": answer.security.name.lower(), "source": answer.source.value,
            "chain": verdict.chain, "grants": [(str(g.address), g.timeout) for g in grants],
            "written": written, "write_s": write_s, "error": error})

    def _to_write(self, grants, now: float) -> list[Grant]:
        """The grants that extend what the kernel holds (caller holds the tracker's lock).

        While a restart's adoption is still reading the kernel's sets, an address the tracker
        does not know may still hold a longer grant there: ask the kernel for that element
        first (microseconds), so nothing is shortened.
        """
        tracker = self.tracker
        if not tracker.complete:
            for g in grants:
                if tracker.expires_in(g.address) is None:
                    left = self.backend.lookup(g.address)
                    self.counters["adoption_lookups"] += 1
                    if left:
                        tracker.record(g.address, now + left, answered=False)
        return [g for g in grants if tracker.needs_write(g.address, now + g.timeout)]

    def _write(self, todo: list[Grant]) -> list[str]:
        """Write under the set caps: make room first; a full set gets one forced eviction and
        retry.  The question names whose grants were evicted (for cache invalidation)."""
        names: list[str] = []
        evict = self.set_caps.to_evict(self.tracker, todo)
        if evict:
            names += self._revoke(evict)
        try:
            self.backend.grant(todo)
        except NetTrustError as exc:
            if getattr(exc, "errno", None) != errno.ENFILE:
                raise
            self.counters["set_full"] += 1
            names += self._revoke(self.set_caps.to_evict(self.tracker, todo, force=True))
            self.backend.grant(todo)
        return names

    def _revoke(self, addresses: list) -> list[str]:
        self.backend.revoke(addresses)
        names = self.tracker.forget(addresses)
        self.counters["evicted"] += len(addresses)
        log.warning("grant set near its size (grants.max_per_set = %d): revoked %d grants of the "
                    "largest domains", self.set_caps.size, len(addresses))
        return names

    def _invalidate(self, names: Iterable[str]) -> None:
        """Tell the resolver's cache (never blocks) which answers lost their grants."""
        if self.invalidator is None:
            return
        unique = list(dict.fromkeys(n for n in names if n))
        if not unique:
            return
        try:
            self.invalidator.invalidate(unique)
            self.counters["names_invalidated"] += len(unique)
        except Exception:                              # never let the cache break the answer
            self.counters["invalidation_errors"] += 1
            log.exception("cache invalidation failed")

    # -- the ruleset behind our back (lifecycle ticker) -------------------------------------
    def verify(self) -> str | None:
        """Is the kernel still holding what we believe?  Called every ``grants.verify_interval``.

        Cheap: the table's chains (present, hooked, drop policy) and one GETSETELEM for the
        grant written last.  A missing table or chain, an accept policy, a missing grant set or
        a flushed grant (``nettrust flush`` from another process, ``nft flush set``) rebuilds the
        ruleset (fail closed), forgets every grant we believed in, invalidates their cached
        answers and re-adopts what the kernel still holds.  What was wrong, or None.
        """
        why = self._ruleset_problem() or self._grants_problem()
        if why is None:
            return None
        self.counters["verify_repairs"] += 1
        log.error("%s: rebuilding the ruleset; answers will be granted afresh", why)
        self.backend.ensure()
        self._reset_finish(*self._reset_locked(), why=why)
        return why

    def _ruleset_problem(self) -> str | None:
        try:
            st = self.backend.status(count_elements=False)
        except TypeError:                               # a backend without that switch
            st = self.backend.status()
        if not st.get("present"):
            return f"table {st.get('table', self.config.firewall.table)} is missing"
        if st.get("dormant"):
            return "the table is dormant"
        if "hooks" in st:
            missing = [h for h in self.config.firewall.hooks if h not in st["hooks"]]
            if missing:
                return f"base chain(s) {', '.join(missing)} missing"
            if st.get("policy") not in (None, "drop"):
                return f"chain policy is {st.get('policy')}, not drop"
        return None

    def _grants_problem(self) -> str | None:
        tracker = self.tracker
        with tracker.lock:
            sample = tracker.last_written
            now = tracker.clock()
        if sample is None or sample[1] - now < _VERIFY_MARGIN:
            return None
        try:
            left = self.backend.lookup(sample[0])
        except NetTrustError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return f"grant set missing ({exc})"
            raise
        with tracker.lock:
            still = tracker.last_written is sample and tracker.expires_in(sample[0]) is not None
        if left is None and still:
            return f"the grant of {sample[0]} is gone from the kernel (grants flushed)"
        return None

    def reset(self, why: str) -> None:
        """Forget every grant we believed in and re-read the kernel's (after a flush or repair)."""
        self._reset_finish(*self._reset_locked(), why=why)

    def _reset_locked(self):
        with self.tracker.lock:
            return self._reset_begin()

    def _reset_begin(self):
        """Under the tracker's lock: forget, mark incomplete, stop the running adoption."""
        old = self.adoption
        if old is not None:
            old.abandon()
        names = self.tracker.clear()
        self.tracker.complete = False
        return names, old

    def _reset_finish(self, names, old, *, why: str) -> None:
        if old is not None:
            old.stop()
        self.counters["tracker_resets"] += 1
        self.adoption = GrantAdoption(self.backend, self.tracker)
        self.adoption.start()
        log.warning("grant tracker reset (%s): %d cached names invalidated", why, len(names))
        self._invalidate(sorted(names))

    # -- renewals (lifecycle.liveness) -----------------------------------------------------
    def renew(self, addresses, timeout: float) -> int:
        """Extend live grants by ``timeout`` from now; how many needed a write.

        Never shortens (the tracker decides, as for answers), sends no comment (the kernel keeps
        the one the answer wrote) and does not count as an answer for ``max_lifetime``.
        Raises NetTrustError when the kernel refuses.
        """
        tracker = self.tracker
        with tracker.lock:
            now = self.clock()
            todo = self._to_write([Grant(a, timeout) for a in addresses], now)
            if todo:
                self.backend.grant(todo)
                for g in todo:
                    tracker.record(g.address, now + timeout, answered=False)
        self.counters["renewals"] += len(todo)
        return len(todo)

    def _debug(self, answer: Answer, verdict: Verdict, grants) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        log.debug("%s %s %s sec=%s chain=%s -> %s (%s%s) grants=[%s] refused=[%s]",
                  answer.qname, TYPE_NAMES.get(answer.qtype, answer.qtype),
                  RCODE_NAMES.get(answer.rcode, answer.rcode), answer.security.name.lower(),
                  ">".join(verdict.chain), verdict.outcome.value, verdict.reason,
                  f", rule {verdict.rule}" if verdict.rule else "",
                  ", ".join(f"{g.address} {g.timeout:g}s" for g in grants),
                  ", ".join(f"{a} {why}" for a, why in verdict.refused))


def _comment(chain: tuple[str, ...]) -> str:
    """The name that opened the grant: the question, and the final name when a CNAME led there."""
    text = chain[0] if len(chain) == 1 else f"{chain[0]}>{chain[-1]}"
    data = text.encode("utf-8", "replace")[:COMMENT_MAX]     # a lone surrogate becomes "?"
    return data.decode("utf-8", "ignore")

"""The authorizer: an answer and the policy's verdict become grants in the firewall.

This is the one object the Unbound adapter talks to.  ``authorize`` is the answer path, read top
to bottom: the policy's verdict (:mod:`.policy`), then the grants (:mod:`.grants`: timeouts,
budgets, the tracker that never shortens, the lookups while adoption runs, the write under the set
caps), then the backend (:mod:`.firewall`, over :mod:`.netlink`), all before returning.  A
backend failure is logged, counted and reported in the decision so the adapter can fail closed
(SERVFAIL) instead of releasing an answer whose addresses are unreachable.

When grants go away behind the answers' backs (evicted by the set cap, ``nettrust flush`` from
another process, a deleted table), the answers Unbound still caches would lead to refused
connects: the revoked question names go to the cache invalidator, and the periodic check
(:mod:`nettrust_core.lifecycle.verify`) notices a flushed set or a missing ruleset within
``grants.verify_interval``, rebuilds the ruleset and calls :meth:`Authorizer.reset`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from . import decision_record
from .answer import Answer, RCODE_NAMES, TYPE_NAMES, Security, Source
from .cache_invalidation import CacheInvalidator
from .errors import FirewallError, NetTrustError
from .firewall.base import ClientPairs, FirewallBackend, Grant, MacAddress
from .firewall.fanout import GrantRefused
from .grants.caps import Budgets, SetCaps
from .grants.gateway import ClientGranter
from .grants.neighbours import NeighbourTable
from .grants.timeouts import Timeouts, comment
from .grants.tracker import GrantTracker, Owner
from .grants.writer import GrantWriter
from .lifecycle.adoption import GrantAdoption
from .policy import NameCheck, Outcome, Policy, Verdict
from .registrable import registrable_domain
from .report import Reporter
from .strikes import Strikes

if TYPE_CHECKING:
    from .config import Config
    from .networks import IPAddress

log = logging.getLogger("nettrust.authorizer")
_ANSWER_COUNTER = {o: f"answers_{o.value}" for o in Outcome}
_REFUSED_COUNTER = {w: f"refused_per_{w}_cap" for w in ("name", "domain", "client")}
#: The decision record's text fields, looked up once per record instead of through the enums'
#: ``value``/``name`` descriptors (measured: a third of the record's cost before encoding).
_OUTCOME_TEXT = {o: o.value for o in Outcome}
_SECURITY_TEXT = {s: s.name.lower() for s in Security}
_SOURCE_TEXT = {s: s.value for s in Source}     # JSON records; the binary one reads _value_


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    #: Grants this answer justifies (with their timeouts), written or already live.
    grants: tuple[Grant, ...] = ()
    #: How many of them needed a kernel write.
    written: int = 0
    #: Set when the backend failed: the addresses are not reachable, fail closed.
    error: str | None = None

    def __init__(self, verdict: Verdict, grants: tuple[Grant, ...] = (), written: int = 0,
                 error: str | None = None) -> None:
        """Native when compiled: see :class:`~nettrust_core.answer.Record`."""
        object.__setattr__(self, "verdict", verdict)
        object.__setattr__(self, "grants", grants)
        object.__setattr__(self, "written", written)
        object.__setattr__(self, "error", error)


class Authorizer:
    def __init__(self, config: Config, backend: FirewallBackend, *,
                 clock: Callable[[], float] = time.monotonic,
                 reporter: Reporter | None = None,
                 invalidator: CacheInvalidator | None = None) -> None:
        self.config = config
        #: Decision records go to the agent (statistics); None or disabled: nothing is sent.
        self.reporter = reporter if reporter is not None and reporter.enabled else None
        self.policy = Policy(config)
        self.backend = backend
        g = config.grants
        self.timeouts = Timeouts(g.min_ttl, g.max_ttl, g.grace)
        #: Told the question names whose grants were revoked early (None: nobody to tell).
        self.invalidator = invalidator
        self.tracker = GrantTracker(slack=min(1.0, self.timeouts.grace / 2), clock=clock,
                                    owner_of=lambda qname: Owner(qname, registrable_domain(qname)))
        self.budgets = Budgets(self.tracker, g.max_per_name, g.max_per_domain, g.max_per_client)
        self.set_caps = SetCaps(g.max_per_set)
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.writer = GrantWriter(backend, self.tracker, self.set_caps, self.counters)
        #: The background read of the kernel's grants after start (None before start).
        self.adoption: GrantAdoption | None = None
        #: What builds that read at start (the fleet's shared tracker replaces it).
        self.first_adoption: Callable[..., GrantAdoption] = GrantAdoption
        #: Told every answer's kernel writes, after the lock (the fleet's publisher: enqueue
        #: only, and the bounded hold for a follower; see nettrust_core.fleet.master).
        self.sinks: list = []
        #: Told, in gateway mode, each receiving client's ``client . destination`` writes with
        #: that client's address (the fleet's publisher: a gateway-mode follower grants them to
        #: that client alone).  The shared host tracker is not among them: pairs are no host grant.
        self.pair_sinks: list = []
        #: Gateway mode: answers to clients other than this host grant ``client . destination``
        #: pairs (the forward chain's per-client sets), never shortened, capped per client.
        self.per_client = bool(config.gateway.per_client)
        mac = self.per_client and config.gateway.client_key == "mac"
        self.gateway = ClientGranter(backend, self.timeouts, self.counters, clock,
                                     cap=g.max_per_client or max(1024, g.max_per_set // 16),
                                     prefix6=(128 if mac else config.gateway.ipv6_client_prefix),
                                     neighbours=NeighbourTable() if mac else None,
                                     set_size=g.max_per_set, per_domain=g.max_per_domain)
        self.client_grants = self.gateway.map
        #: Gateway strikes (gateway.strike_threshold; None: off).
        self.strikes = Strikes.from_config(config, backend, self.counters, self.reporter)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Build or repair the ruleset, then adopt the kernel's live grants in the background.

        Answers are exact from the first one: until adoption completes, an address the tracker
        does not know is looked up in the kernel before writing (see nettrust_core.grants.writer).
        """
        self.backend.ensure()
        self.adoption = self.first_adoption(self.backend, self.tracker)
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
            if self.strikes is not None:
                self.strikes.offence(client, "blocked name " + qname)
            if self.reporter is not None and client is not None:
                # Answered by the module itself: the agent learns why from this record.
                self.reporter.send({"t": "decision", "client": client, "qname": qname,
                                    "qtype": qtype, "outcome": Outcome.BLOCKED.value,
                                    "reason": check.reason, "rule": check.rule,
                                    "source": "blocked"})
        return check

    def authorize(self, answer: Answer, clients: Iterable[str] | None = None) -> Decision:
        """Judge ``answer`` and grant what it justifies before it is released.

        ``clients``: gateway mode (``gateway.per_client``), every client receiving this answer
        (the querying one and those that joined the same in-flight query); default: the
        answer's client.  Clients other than this host get ``client . destination`` grants; this
        host's own (loopback) queries, and answers nobody waits for, grant as in output mode.
        """
        verdict = self.policy.judge(answer)
        self.counters[_ANSWER_COUNTER[verdict.outcome]] += 1
        if answer.rcode == 5 and self.strikes is not None:           # REFUSED
            self.strikes.offence(answer.client, "REFUSED for " + answer.qname)
        if not verdict.grants:
            self._debug(answer, verdict, ())
            if self.reporter is not None:
                self._report(answer, verdict, (), 0, 0.0, None)
            return Decision(verdict)
        if self.per_client:
            receivers = answer.client if clients is None else clients
            remote, host = self.gateway.split(receivers)
            if remote:
                decision = self._grant_clients(answer, verdict, remote)
                if self.pair_sinks and decision.written:
                    self._publish_pairs(verdict, decision.grants, receivers)
                if decision.error is not None or not host:
                    return decision
            elif not host:                  # unparsable, or no MAC known yet: nothing (counted)
                return Decision(verdict)

        chain = verdict.chain
        why = comment(chain)
        timeout_for = self.timeouts.for_ttl
        # tuple.__new__, not Grant(...): a NamedTuple's __new__ is a generated Python function,
        # a Python frame per granted address (same fields, client None).
        grants = tuple(tuple.__new__(Grant, (addr, timeout_for(ttl), why, None))
                       for addr, ttl in verdict.grants)
        owner = Owner(chain[-1], registrable_domain(chain[0]), answer.client or "", chain[0])
        tracker = self.tracker
        revoked: list[str] = []
        reset = None
        with tracker.lock:
            now = self.clock()
            admitted, over, which = self.budgets.admit(owner, grants, now)
            if over and which is not None:          # ``which`` names the budget that refused
                grants = tuple(admitted)
                self.counters[_REFUSED_COUNTER[which]] += len(over)
                log.debug("%s: budget per %s full (grants.max_per_%s): %s not granted",
                          chain[0], which, which, ", ".join(str(g.address) for g in over))
            write_s = 0.0
            repairs = self.backend.repairs
            try:
                todo = self.writer.to_write(grants, now)
                if todo:
                    started = time.perf_counter()
                    revoked = self.writer.write(todo)
                    write_s = time.perf_counter() - started
            except NetTrustError as exc:
                self.counters["backend_errors"] += 1
                if isinstance(exc, GrantRefused):   # one of several backends: rolled back
                    self.counters[f"backend_errors_{exc.backend}"] += 1
                    self.invalidate(tracker.forget(list(exc.revoked)))
                log.error("firewall write failed, answer for %s fails closed: %s", answer.qname, exc)
                if self.reporter is not None:
                    self._report(answer, verdict, grants, 0, 0.0, str(exc))
                return Decision(verdict, grants, 0, str(exc))
            if self.backend.repairs != repairs:
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
            self.invalidate(revoked)
        if reset is not None:
            self._reset_finish(*reset, why="ruleset rebuilt on a grant")
        if self.sinks and todo:
            for sink in self.sinks:
                sink.granted(todo, owner)
        self.counters["elements_written"] += len(todo)
        self._debug(answer, verdict, grants)
        if self.reporter is not None:
            self._report(answer, verdict, grants, len(todo), write_s, None)
        return Decision(verdict, grants, len(todo))

    # -- gateway mode: per-client grants (nettrust_core.grants.gateway) -------------------
    def _grant_clients(self, answer: Answer, verdict: Verdict, remote) -> Decision:
        grants, written, write_s, error = self.gateway.grant(
            verdict, remote, registrable_domain(verdict.chain[0]) if verdict.chain else "")
        if error is not None:
            log.error("firewall write failed, answer for %s fails closed: %s", answer.qname, error)
        else:
            self._debug(answer, verdict, grants)
        if self.reporter is not None:
            self._report(answer, verdict, grants, written, write_s, error)
        return Decision(verdict, grants, written, error)

    def _publish_pairs(self, verdict: Verdict, grants: tuple[Grant, ...],
                       clients: str | Iterable[str] | None) -> None:
        """Each remote client's pairs to :attr:`pair_sinks`, owned by that client's address
        (after the write, outside the map's lock; the sinks enqueue and hold, bounded)."""
        texts: tuple[str, ...]
        if isinstance(clients, str):
            texts = (clients,) if clients else ()
        else:
            texts = tuple(clients or ())
        chain = verdict.chain
        domain = registrable_domain(chain[0]) if chain else ""
        for text in dict.fromkeys(texts):
            found = self.gateway.client_key(text)
            if found is None or found[1].is_loopback:
                continue
            mine = tuple(g for g in grants if g.client == found[1])
            if mine:
                owner = Owner(chain[-1] if chain else "", domain, text, chain[0] if chain else None)
                for sink in self.pair_sinks:
                    sink.granted(mine, owner)

    def cache_hit_granted(self, client: str, addresses) -> bool:
        return self.gateway.cache_hit_granted(client, addresses)

    def _report(self, answer: Answer, verdict: Verdict, grants, written: int, write_s: float,
                error: str | None) -> None:
        """One decision record to the agent, after the write (a non-blocking datagram)."""
        reporter = self.reporter
        if reporter is None:                        # the callers check; this keeps the type honest
            return
        data = decision_record.encode(
            ts=time.time(), client=answer.client, qname=answer.qname, qtype=answer.qtype,
            rcode=answer.rcode, outcome=_OUTCOME_TEXT[verdict.outcome], reason=verdict.reason,
            rule=verdict.rule, security=int(answer.security),
            # A plain Enum hashes in Python code (a frame): its member's own value instead.
            source=answer.source._value_, chain=verdict.chain, grants=grants,
            written=written, write_s=write_s, error=error)
        if data is not None:
            reporter.send_batched(data)
            return
        reporter.send({
            "t": "decision", "client": answer.client, "qname": answer.qname,
            "qtype": answer.qtype, "rcode": answer.rcode, "outcome": _OUTCOME_TEXT[verdict.outcome],
            "reason": verdict.reason, "rule": verdict.rule,
            "security": _SECURITY_TEXT[answer.security], "source": _SOURCE_TEXT[answer.source],
            "chain": verdict.chain, "grants": [(str(g.address), g.timeout) for g in grants],
            "written": written, "write_s": write_s, "error": error})

    def invalidate(self, names: Iterable[str]) -> None:
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
        self.gateway.reset()                # gateway mode: rewrite every pair on its next hit
        self.tracker.complete = False
        return names, old

    def _reset_finish(self, names, old, *, why: str) -> None:
        if old is not None:
            old.stop()
        self.counters["tracker_resets"] += 1
        self.adoption = GrantAdoption(self.backend, self.tracker)
        self.adoption.start()
        log.warning("grant tracker reset (%s): %d cached names invalidated", why, len(names))
        self.invalidate(sorted(names))

    # -- renewals (lifecycle.liveness) -----------------------------------------------------
    def strike(self, who: IPAddress | int, seconds: float) -> None:
        """Drop the DNS of a client address or a local uid for ``seconds`` (gateway strikes);
        raises FirewallError when no configured backend can."""
        if not isinstance(self.backend, ClientPairs):
            raise FirewallError("the firewall backend cannot strike (nftables can)")
        self.backend.strike(who, seconds)

    def lookup_pair(self, client: IPAddress | MacAddress, address: IPAddress) -> float | None:
        """Seconds left on ``client . address`` in the kernel (None: none, or no such backend)."""
        if not isinstance(self.backend, ClientPairs):
            return None
        return self.backend.lookup_pair(client, address)

    def renew(self, addresses: Iterable[IPAddress], timeout: float) -> int:
        """Extend live grants by ``timeout`` from now; how many needed a write.

        Never shortens (the tracker decides, as for answers), sends no comment (the kernel keeps
        the one the answer wrote) and does not count as an answer for ``max_lifetime``.
        Raises NetTrustError when the kernel refuses.
        """
        tracker = self.tracker
        with tracker.lock:
            now = self.clock()
            todo = self.writer.to_write([Grant(a, timeout) for a in addresses], now)
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

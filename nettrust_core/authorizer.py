"""The authorizer: an answer and the policy's verdict become grants in the firewall.

This is the one object the Unbound adapter talks to.  ``authorize`` is the answer path: it runs
the policy, computes timeouts, skips writes that would not extend a live grant, and writes the
rest in one backend call before returning.  A backend failure is logged, counted and reported
in the decision so the adapter can fail closed (SERVFAIL) instead of releasing an answer whose
addresses are unreachable.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from .answer import Answer, RCODE_NAMES, TYPE_NAMES
from .errors import NetTrustError
from .firewall.base import COMMENT_MAX, FirewallBackend, Grant
from .hosts import GrantTracker
from .policy import NameCheck, Outcome, Policy, Verdict
from .report import Reporter

log = logging.getLogger("nettrust.authorizer")


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
                 reporter: Reporter | None = None) -> None:
        self.config = config
        #: Decision records go to the agent (statistics); None or disabled: nothing is sent.
        self.reporter = reporter if reporter is not None and reporter.enabled else None
        self.policy = Policy(config)
        self.backend = backend
        g = config.grants
        self.min_ttl, self.max_ttl, self.grace = g.min_ttl, g.max_ttl, g.grace
        self.tracker = GrantTracker(slack=min(1.0, self.grace / 2), clock=clock)
        self.clock = clock
        self.counters: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> int:
        """Build or repair the ruleset and adopt the kernel's live grants; returns how many."""
        self.backend.ensure()
        restored = self.tracker.restore(self.backend.list_grants())
        log.info("ruleset ready; %d live grants adopted from the kernel", restored)
        return restored

    def stop(self) -> None:
        """Leave the firewall as configured: by default ruleset and grants stay (fail closed)."""
        fw = self.config.firewall
        try:
            if not fw.keep_ruleset_on_exit:
                self.backend.remove()
                log.info("ruleset removed on exit (keep_ruleset_on_exit = false)")
            elif not fw.keep_grants_on_exit:
                self.backend.flush_grants()
                log.info("grants flushed on exit (keep_grants_on_exit = false)")
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
        self.counters[f"answers_{verdict.outcome.value}"] += 1
        if not verdict.grants:
            self._debug(answer, verdict, ())
            if self.reporter is not None:
                self._report(answer, verdict, (), 0, 0.0, None)
            return Decision(verdict)

        comment = _comment(verdict.chain)
        grants = tuple(Grant(addr, self.timeout_for(ttl), comment) for addr, ttl in verdict.grants)
        tracker = self.tracker
        with tracker.lock:
            now = self.clock()
            todo = [g for g in grants if tracker.needs_write(g.address, now + g.timeout)]
            write_s = 0.0
            if todo:
                started = time.perf_counter()
                try:
                    self.backend.grant(todo)
                except NetTrustError as exc:
                    self.counters["backend_errors"] += 1
                    log.error("firewall write failed, answer for %s fails closed: %s", answer.qname, exc)
                    if self.reporter is not None:
                        self._report(answer, verdict, grants, 0, 0.0, str(exc))
                    return Decision(verdict, grants, 0, str(exc))
                write_s = time.perf_counter() - started
                for g in todo:
                    tracker.record(g.address, now + g.timeout)
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
    data = text.encode("utf-8")[:COMMENT_MAX]
    return data.decode("utf-8", "ignore")

"""Is the kernel still holding what the resolver believes?  The periodic ruleset check.

Run by the lifecycle ticker every ``grants.verify_interval`` (never on an answer).  When grants go
away behind the answers' backs (``nettrust flush`` from another process, a deleted table), the
answers Unbound still caches would lead to refused connects; this notices it, rebuilds the
ruleset (fail closed) and resets the authorizer's tracker (:meth:`Authorizer.reset`: forget,
invalidate the cached answers, re-adopt what the kernel still holds).
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from ..errors import NetTrustError

if TYPE_CHECKING:
    from ..authorizer import Authorizer

log = logging.getLogger("nettrust.authorizer")

#: A sampled grant must have this many seconds left to tell a flush from a normal expiry.
_VERIFY_MARGIN = 2.0


class RulesetCheck:
    """The check for one authorizer (its backend, tracker and counters)."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    @property
    def backend(self):
        return self.authorizer.backend

    @property
    def config(self):
        return self.authorizer.config

    @property
    def tracker(self):
        return self.authorizer.tracker

    @property
    def counters(self):
        return self.authorizer.counters

    def verify(self) -> str | None:
        """Is the kernel still holding what we believe?  Called every ``grants.verify_interval``.

        Cheap: the table's chains (present, hooked, drop policy) and one GETSETELEM for the
        grant written last.  A missing table or chain, an accept policy, a missing grant set or
        a flushed grant (``nettrust flush`` from another process, ``nft flush set``) rebuilds the
        ruleset (fail closed), forgets every grant we believed in, invalidates their cached
        answers and re-adopts what the kernel still holds.  What was wrong, or None.
        """
        why = (self._ruleset_problem() or self._grants_problem()
               or self._client_grants_problem())
        if why is None:
            return None
        self.counters["verify_repairs"] += 1
        log.error("%s: rebuilding the ruleset; answers will be granted afresh", why)
        self.backend.ensure()
        self.authorizer.reset(why)
        return why

    def _ruleset_problem(self) -> str | None:
        st = self.backend.status(count_elements=False)
        if not st.present:
            return f"table {st.table or self.config.firewall.table} is missing ({st.backend})"
        if st.dormant:
            return "the table is dormant"
        missing = [h for h in self.config.firewall.hooks if h not in st.hooks]
        if missing:
            return f"base chain(s) {', '.join(missing)} missing"
        if st.policy not in (None, "drop"):
            return f"chain policy is {st.policy}, not drop"
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

    def _client_grants_problem(self) -> str | None:
        """Gateway mode: the per-client pair written last still in the kernel?"""
        gateway = getattr(self.authorizer, "gateway", None)
        lookup = self.authorizer.lookup_pair
        if gateway is None or not getattr(self.authorizer, "per_client", False):
            return None
        with gateway.map.lock:
            sample = gateway.last_written
            now = gateway.clock()
        if sample is None or sample[3] - now < _VERIFY_MARGIN:
            return None
        client, ip, address, _at = sample
        try:
            left = lookup(ip, address)
        except NetTrustError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return f"per-client grant set missing ({exc})"
            raise
        with gateway.map.lock:
            still = (gateway.last_written is sample
                     and gateway.map.expires_in(client, address) is not None)
        if left is None and still:
            return f"the grant of {address} to {client} is gone from the kernel (grants flushed)"
        return None

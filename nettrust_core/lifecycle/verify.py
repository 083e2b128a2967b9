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
from typing import TYPE_CHECKING, Any

from ..errors import NetTrustError

if TYPE_CHECKING:
    from ..authorizer import Authorizer
    from ..networks import IPAddress

log = logging.getLogger("nettrust.authorizer")

#: A sampled grant must have this many seconds left to tell a flush from a normal expiry.
VERIFY_MARGIN = 2.0


class RulesetCheck:
    """The check for one authorizer (its backend, tracker and counters)."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        #: The longest-living grant and pair when the previous check ran.  The grant written
        #: last alone does not tell a flush on a busy resolver (written again since the flush,
        #: it is present) nor on a quiet one (run out while longer grants, and their cached
        #: answers, live on), nor right after a start (grants adopted from the kernel are not
        #: "written").  The longest-living now and at the previous check are sampled too (the
        #: latter was written before that check, so a flush since then removed it, whatever was
        #: written after the flush), and the first written since the previous check (the
        #: enforcement model's long run: a flush just after a check, then longer grants).
        self._sentinel: tuple[IPAddress, float] | None = None
        self._pair_sentinel: tuple[str, Any, IPAddress, float] | None = None

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

        Cheap: the table's chains (present, hooked, drop policy) and a GETSETELEM each for the
        grant written last, the first since the previous check and the longest-living one now
        and at the previous check.  A missing table
        or chain, an accept policy, a missing grant set or a flushed grant (``nettrust flush``
        from another process, ``nft flush set``) rebuilds the ruleset (fail closed), forgets
        every grant we believed in, invalidates their cached answers and re-adopts what the
        kernel still holds.  What was wrong, or None.
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
            now = tracker.clock()
            # a sample still live for a while, and not rewritten or forgotten since it was taken
            samples = [s for s in (self._sentinel, tracker.first_since_check, tracker.longest,
                                   tracker.last_written)
                       if s is not None and s[1] - now >= VERIFY_MARGIN
                       and tracker.expiry(s[0]) == s[1]]
            self._sentinel = tracker.longest
            tracker.first_since_check = None
        for address, at in dict.fromkeys(samples):
            try:
                left = self.backend.lookup(address)
            except NetTrustError as exc:
                if getattr(exc, "errno", None) == errno.ENOENT:
                    return f"grant set missing ({exc})"
                raise
            with tracker.lock:
                still = tracker.expiry(address) == at
            if left is None and still:
                return f"the grant of {address} is gone from the kernel (grants flushed)"
        return None

    def _client_grants_problem(self) -> str | None:
        """Gateway mode: the per-client pairs written last, and longest-living at the previous
        check, still in the kernel?"""
        gateway = getattr(self.authorizer, "gateway", None)
        lookup = self.authorizer.lookup_pair
        if gateway is None or not getattr(self.authorizer, "per_client", False):
            return None
        with gateway.map.lock:
            now = gateway.clock()
            samples = [s for s in (self._pair_sentinel, gateway.first_since_check,
                                   gateway.longest_written, gateway.last_written)
                       if s is not None and s[3] - now >= VERIFY_MARGIN
                       and gateway.map.get((s[0], s[2])) == s[3]]
            self._pair_sentinel = gateway.longest_written
            gateway.first_since_check = None
        for client, ip, address, at in dict.fromkeys(samples):
            try:
                left = lookup(ip, address)
            except NetTrustError as exc:
                if getattr(exc, "errno", None) == errno.ENOENT:
                    return f"per-client grant set missing ({exc})"
                raise
            with gateway.map.lock:
                still = gateway.map.get((client, address)) == at
            if left is None and still:
                return f"the grant of {address} to {client} is gone from the kernel (grants flushed)"
        return None

"""Renew grants that still carry a live connection; let the others lapse at their expiry.

Each check (every ``lifecycle.check_interval``) takes the grants that expire before the next
check, and only if there are any asks conntrack once (a dump the kernel filters by NetTrust's
mark: see :mod:`.conntrack`).  A due grant whose address has a live connection is renewed through
:meth:`Authorizer.renew` for two intervals plus grace, so it outlives the next check; renewals
stop ``lifecycle.max_lifetime`` after the last DNS answer that named the address.  A conntrack
error means "liveness unknown": nothing is renewed, the grants lapse normally, the error is
counted and logged (once per outage, not once per check).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from ..errors import NetTrustError
from ..networks import IPAddress, key_address
from .conntrack import Conntrack, ConntrackError
from .turns import in_turns

if TYPE_CHECKING:
    from ..authorizer import Authorizer

log = logging.getLogger("nettrust.liveness")


class Liveness:
    def __init__(self, authorizer: Authorizer, conntrack: Conntrack, counters: Counter, *, interval: float,
                 max_lifetime: float, grace: float) -> None:
        self.authorizer = authorizer
        self.conntrack = conntrack
        self.counters = counters
        self.interval = interval
        self.max_lifetime = max_lifetime
        self.renew_for = 2 * interval + grace
        #: None until the first query; then whether the last one worked, and why not.
        self.available: bool | None = None
        self.error: str | None = None
        #: Granted addresses with a live connection at the last query.
        self.live_hosts = 0

    def check(self) -> int:
        """One round; returns how many grants were renewed."""
        tracker = self.authorizer.tracker
        with tracker.lock:                    # for a dict copy only: 4-8 ms for 120,000 grants
            items = tracker.items()
            now = tracker.clock()
        horizon = now + 1.5 * self.interval + 1.0
        expired: list[int] = []
        due: list[tuple[IPAddress, float]] = []
        for pairs in in_turns(items):
            expired += [k for k, t in pairs if t <= now]
            due += [(key_address(k), t) for k, t in pairs if now < t <= horizon]
        del items
        with tracker.lock:
            self.counters["expiries"] += tracker.forget_expired(expired)
            answered = {a: tracker.answered_at(a) for a, _t in due}
        if not due:
            return 0
        try:
            live = self.conntrack.live_destinations()
        except ConntrackError as exc:
            self.counters["conntrack_errors"] += 1
            if self.available is not False:
                log.warning("conntrack unavailable, grants lapse at their DNS expiry: %s", exc)
            self.available, self.error = False, str(exc)
            return 0
        if self.available is False:
            log.info("conntrack answers again; renewing grants with live connections")
        self.available, self.error = True, None
        with tracker.lock:
            self.live_hosts = sum(1 for a in live if tracker.expires_in(a) is not None)
        renew, too_old = [], 0
        for address, _expiry in due:
            if address in live:
                if now - (answered.get(address) or now) < self.max_lifetime:
                    renew.append(address)
                else:
                    too_old += 1
        self.counters["renewals_refused_max_lifetime"] += too_old
        if not renew:
            return 0
        try:
            return self.authorizer.renew(renew, self.renew_for)
        except NetTrustError as exc:
            self.counters["renewal_errors"] += 1
            log.error("renewing %d grants failed; they lapse at their expiry: %s", len(renew), exc)
            return 0

"""Strikes that act (gateway mode): a client that keeps sending blocked or invalid queries loses
its DNS for a while.

The module counts, per client, the queries it refused (a blocked name, a name without an exact
form) and the answers that came back REFUSED.  When a client reaches ``threshold`` of them within
``window`` seconds, it goes into the kernel's timed strike set for ``penalty`` seconds, through
the backend's netlink path (:meth:`NftablesBackend.strike`): the ``strikes`` chain on prerouting
(:mod:`nettrust_core.firewall.nftables_gateway`) then drops its DNS and DoT before Unbound
sees them, and the strike ends by itself when the element times out.  A flood needs no Python:
the kernel's rate meter on port 53 strikes a source that sends faster than
``gateway.strike_dns_rate`` per second.

Never struck: this host's own queries (loopback), ``gateway.management_networks``, and a client
whose address does not parse.  A forged source cannot frame a victim: the same chain drops
packets whose source would not be routed back out of the interface they came in on
(``fib saddr . iif oif missing``), on the client-facing interfaces.

Counting is a fixed window per client (the first offence opens it), held in a bounded dict;
the strike is logged (a warning), counted (``clients_struck``) and reported as a ``strike`` event.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from typing import Callable

from .errors import FirewallError, NetTrustError
from .firewall.base import ClientPairs

log = logging.getLogger("nettrust.strikes")
#: Clients tracked at most (a spoofing flood of sources cannot grow the table without bound).
MAX_CLIENTS = 65536


class Strikes:
    def __init__(self, threshold: int, window: float, penalty: float, exempt, backend,
                 counters: Counter, reporter=None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.window = window
        self.penalty = penalty
        self.exempt = tuple(exempt)
        self.backend = backend
        self.counters = counters
        self.reporter = reporter
        self.clock = clock
        self._recent: dict[str, list[float]] = {}       # client -> [window start, count]
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config, backend, counters: Counter, reporter=None, **kw) -> "Strikes | None":
        gw = config.gateway
        if not gw.strike_threshold:
            return None
        return cls(gw.strike_threshold, gw.strike_window, gw.strike_penalty,
                   gw.management_networks, backend, counters, reporter, **kw)

    def offence(self, client: str | None, why: str) -> bool:
        """Count one blocked or invalid query of ``client``; True when it was struck now."""
        if not client:
            return False
        now = self.clock()
        with self._lock:
            rec = self._recent.get(client)
            if rec is None or now - rec[0] > self.window:
                if rec is None and len(self._recent) >= MAX_CLIENTS:
                    self._prune(now)
                rec = self._recent[client] = [now, 0]
            rec[1] += 1
            if rec[1] < self.threshold:
                return False
            del self._recent[client]
        self.counters["offences_over_threshold"] += 1
        try:
            ip = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        ip = mapped or ip
        if ip.is_loopback or any(ip in net for net in self.exempt if net.version == ip.version):
            self.counters["strikes_exempt"] += 1
            return False
        try:
            if not isinstance(self.backend, ClientPairs):
                raise FirewallError("the firewall backend cannot strike (nftables can)")
            self.backend.strike(ip, self.penalty)
        except NetTrustError as exc:
            self.counters["strike_errors"] += 1
            log.error("cannot strike %s: %s", client, exc)
            return False
        self.counters["clients_struck"] += 1
        log.warning("strike: %s sent %d blocked or invalid queries within %gs (last: %s); its "
                    "DNS and DoT are dropped for %gs", client, self.threshold, self.window, why,
                    self.penalty)
        if self.reporter is not None:
            self.reporter.event("strike", who=client, attempts=self.threshold, reason=why,
                                penalty=self.penalty)
        return True

    def _prune(self, now: float) -> None:
        stale = [c for c, rec in self._recent.items() if now - rec[0] > self.window]
        for c in stale:
            del self._recent[c]
        if len(self._recent) >= MAX_CLIENTS:
            self._recent.clear()

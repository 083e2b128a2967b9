"""Unbound's own totals, relayed with the resolver's counters while statistics are on.

Past ``stats.responses_per_second`` the agent stores client responses as a sample; the exact
totals are Unbound's: ``stats_noreset`` over its local control socket (no certificates, the
protocol of :func:`nettrust_core.cache_invalidation.control_command`), read by the lifecycle
thread with each counters report (``lifecycle.report_interval``), never on the answer path.
They reach the agent's metrics as ``nettrust_resolver_counter{name="unbound.total.num.cachehits",
pid=…}`` and its siblings, one series per resolver process, as every other counter.
"""

from __future__ import annotations

import logging

from .cache_invalidation import control_command
from .ratelimit import RateLimiter

log = logging.getLogger("nettrust.unbound_totals")

#: Unbound's counters relayed (its names; each becomes ``unbound.<name>``).
TOTALS = ("total.num.queries", "total.num.cachehits", "total.num.cachemiss",
          "total.num.prefetch", "total.num.expired", "total.num.recursivereplies")


def parse(text: str) -> dict[str, float]:
    """``name=value`` lines of ``stats_noreset`` (others, and values that are not numbers,
    are skipped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            try:
                values[name.strip()] = float(value)
            except ValueError:
                continue
    return values


class UnboundTotals:
    """Reads :data:`TOTALS` from the Unbound whose control socket is ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failures = 0
        self._errors = RateLimiter(interval=300.0, burst=1)

    def read(self) -> dict[str, float]:
        """``{"unbound.total.num.cachehits": …}``; empty (logged, counted) when Unbound does
        not answer."""
        try:
            found = parse(control_command(self.path, "stats_noreset"))
        except OSError as exc:
            self.failures += 1
            if self._errors.allow()[0]:
                log.warning("Unbound's totals unavailable (%s: %s)", self.path, exc)
            return {}
        return {f"unbound.{name}": found[name] for name in TOTALS if name in found}

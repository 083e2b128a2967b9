"""A small rate limiter for log lines (and anything else that must not flood).

The answer path logs its failures; a hostile zone can make every query fail the same way, and
one log line (let alone a traceback) per query floods the log and costs the resolver its time.
:class:`RateLimiter` lets ``burst`` events per key through, then one per ``interval`` seconds,
and counts what it held back so the next line can say how many were suppressed.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Hashable

from .errors import InvalidValue

#: Distinct keys remembered at most; beyond that the oldest are forgotten (a key per error kind
#: is expected, not per name, but a bound keeps a caller's mistake from growing memory).
MAX_KEYS = 1024


class RateLimiter:
    def __init__(self, interval: float = 10.0, burst: int = 3, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or burst < 1:
            raise InvalidValue("interval must be > 0 and burst >= 1")
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [tokens, last refill time, suppressed since last allowed]
        self._state: dict[Hashable, list] = {}

    def allow(self, key: Hashable = None) -> tuple[bool, int]:
        """(whether to emit now, how many were suppressed for this key since the last emit)."""
        now = self._clock()
        with self._lock:
            st = self._state.get(key)
            if st is None:
                if len(self._state) >= MAX_KEYS:
                    self._state.pop(next(iter(self._state)))
                st = self._state[key] = [float(self.burst), now, 0]
            tokens = min(float(self.burst), st[0] + (now - st[1]) / self.interval)
            st[1] = now
            if tokens >= 1.0:
                st[0] = tokens - 1.0
                suppressed, st[2] = st[2], 0
                return True, suppressed
            st[0] = tokens
            st[2] += 1
            return False, 0

    def suppressed(self) -> int:
        """Events held back and not yet reported, over every key."""
        with self._lock:
            return sum(st[2] for st in self._state.values())

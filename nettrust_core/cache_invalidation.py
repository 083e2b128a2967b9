"""Removing names from Unbound's cache when their grants go away for other reasons.

The contract the core codes against (the resolver's branch provides the real invalidator;
this file holds the protocol and the no-op so the core and its tests run without it).
"""

from __future__ import annotations

from typing import Iterable, Protocol


class CacheInvalidator(Protocol):
    def invalidate(self, names: Iterable[str]) -> None:
        """Remove ``names`` (their A and AAAA answers) from the resolver's cache, soon, off the
        answer path; never blocks, never raises."""


class NoInvalidation:
    """Does nothing: for tools and tests that run no resolver."""

    def invalidate(self, names: Iterable[str]) -> None:
        return None

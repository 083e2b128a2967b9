"""The live grants, for what enforces outside this host: Kubernetes policies, cloud prefix lists.

The resolver records every grant it writes (address, client, name, expiry) in the statistics
database; :class:`StatsDbFeed` reads the live ones back. The fleet's shared stream
(:mod:`.grant_feed_redis`) yields the same :class:`FeedGrant` records, from every node. :func:`keep_longest` is the one cap rule of
every such sink: past the cap keep the addresses that live longest, count the others.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from .errors import InvalidValue


@dataclass(frozen=True, slots=True)
class FeedGrant:
    client: str | None       # the client the grant was for (a pod address), None for the node itself
    address: str             # the destination opened
    name: str                # the DNS name whose answer opened it
    expires: float           # Unix time


class GrantFeed(Protocol):
    def live(self, now: float) -> Iterable[FeedGrant]:
        """The grants that have not expired at ``now``."""
        ...


class StatsDbFeed:
    """The live grants of a NetTrust statistics database (read-only, one short query)."""

    _QUERY = """
        SELECT c.address, g.address, d.name, MAX(g.expires)
        FROM grants g LEFT JOIN clients c ON c.id = g.client_id LEFT JOIN domains d ON d.id = g.domain_id
        WHERE g.expires > ? GROUP BY c.address, g.address, d.name"""

    def __init__(self, path: str) -> None:
        self.path = path

    def live(self, now: float) -> list[FeedGrant]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(self._QUERY, (now,)).fetchall()
        finally:
            db.close()
        return [FeedGrant(client, address, name or "", expires) for client, address, name, expires in rows]


def feed_from_spec(spec: str) -> GrantFeed:
    """``sqlite:PATH`` (a node's statistics database), or ``rediss://…`` / ``redis://…`` (the
    fleet's stream, every master's grants: :mod:`.grant_feed_redis`) -> the feed;
    :class:`InvalidValue` otherwise.  A fleet feed is a reader thread: make it once, keep it."""
    kind, _, where = spec.partition(":")
    if kind in ("redis", "rediss"):
        from .grant_feed_redis import FleetStreamFeed
        return FleetStreamFeed.from_spec(spec)
    if kind != "sqlite" or not where:
        raise InvalidValue(f"unknown grant feed {spec!r}: expected sqlite:PATH or "
                           "rediss://HOST:PORT/DB?ca=…&cert=…&key=…")
    return StatsDbFeed(where)


def keep_longest(until: Mapping[str, float], cap: int) -> tuple[dict[str, float], int]:
    """At most ``cap`` of ``until`` (address -> end): the longest-lived, ties by address; and how
    many were left out."""
    if len(until) <= cap:
        return dict(until), 0
    kept = dict(sorted(until.items(), key=lambda item: (-item[1], item[0]))[:cap])
    return kept, len(until) - cap

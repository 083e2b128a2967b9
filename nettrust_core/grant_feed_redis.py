"""The fleet's shared map as a grant feed: what every master publishes, for the NetworkPolicy
renderer and the cloud sinks, whichever node answered.

``rediss://HOST:PORT/DB?ca=PATH&cert=PATH&key=PATH&prefix=nettrust`` (mutual TLS as the fleet's
nodes use it, :func:`nettrust_core.fleet.connect.connect`; the files default to the
``kubernetes.io/tls`` secret mounted at ``/etc/nettrust/tls``: ``ca.crt``, ``tls.crt``,
``tls.key``), or ``redis://127.0.0.1:PORT/DB`` (plaintext, loopback only).

One thread, started by the first :meth:`FleetStreamFeed.live`: it loads the snapshot (address ->
latest expiry, every master's), replays the stream from its start (the masters trim it with
``MINID`` at now - the longest grant, so it holds every grant still live, with the client and the
name a policy selects on — the snapshot has neither), then follows it with ``XREAD BLOCK``.
Each (client, address, name) keeps the longest expiry seen (a replayed or out-of-order entry never
shortens one) and is dropped once it expired.  Entries are read with the fleet's own
:func:`~nettrust_core.fleet.entries.decode`; one that does not parse is counted and skipped.

Until the first replay is complete :meth:`~FleetStreamFeed.live` waits (at most ``wait``) and
then raises :class:`FeedUnavailable`: an operator restarting must not render an empty policy.
Redis lost later: the feed keeps what it holds (each grant still expires on time), reconnects
with a back-off and resumes from its cursor (the snapshot again if the stream was trimmed past it).

What the stream cannot say: a master publishes a grant when it writes one, attributed to the
client whose answer wrote it; another client asking the same name while that grant lives writes
nothing and so publishes nothing.  A per-workload policy fed from here sees an address for the
workload that opened it; the node's statistics database (``sqlite:``) records every client.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .errors import InvalidValue, NetTrustError
from .grant_feed import FeedGrant

log = logging.getLogger("nettrust.feed")

TLS_DIR = "/etc/nettrust/tls"
#: (client, address, name) kept at most; past it new ones are dropped and counted.
MAX_GRANTS = 1 << 20
#: Stream entries read per call.
PAGE = 1000

Key = tuple[str | None, str, str]


class FeedUnavailable(NetTrustError):
    """The fleet stream has not been read yet (Redis unreachable, or still replaying)."""


def fleet_from_spec(spec: str) -> Any:
    """The :class:`~nettrust_core.config.model_fleet.FleetConfig` a feed spec names (the URL
    without its query, the TLS files and the key prefix from the query); InvalidValue if bad."""
    from .config.model_fleet import FleetConfig, redis_url_problem
    parts = urlsplit(spec)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"ca", "cert", "key", "prefix"}
    if unknown:
        raise InvalidValue(f"grant feed {spec!r}: unknown parameter(s) {', '.join(sorted(unknown))}"
                           " (ca, cert, key, prefix)")
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    why = redis_url_problem(url, allow_plaintext=True)
    if why:
        raise InvalidValue(f"grant feed: {why}")
    tls = parts.scheme == "rediss"
    return dataclasses.replace(
        FleetConfig(), redis_url=url, allow_plaintext=not tls, prefix=query.get("prefix", "nettrust"),
        ca_file=query.get("ca", f"{TLS_DIR}/ca.crt") if tls else None,
        cert_file=query.get("cert", f"{TLS_DIR}/tls.crt") if tls else None,
        key_file=query.get("key", f"{TLS_DIR}/tls.key") if tls else None)


class FleetStreamFeed:
    def __init__(self, connect: Callable[[], Any], prefix: str = "nettrust", *, wait: float = 10.0,
                 cap: int = MAX_GRANTS, clock: Callable[[], float] = time.time) -> None:
        from .fleet.keys import Keys
        self.keys = Keys(prefix)
        self.connect = connect
        self.wait = wait
        self.cap = cap
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.cursor = "0-0"
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._until: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> FleetStreamFeed:
        from .fleet.connect import connect
        fleet = fleet_from_spec(spec)
        return cls(lambda: connect(fleet, name="nettrust-grant-feed"), fleet.prefix, **kw)

    # -- the reader's side ----------------------------------------------------------------
    def live(self, now: float) -> list[FeedGrant]:
        self.start()
        if not self.ready.wait(self.wait):
            raise FeedUnavailable(f"the fleet stream {self.keys.stream} has not been read yet "
                                  f"({self.counters['redis_errors']} connection failures)")
        with self._lock:
            self._until = {k: t for k, t in self._until.items() if t > now}
            return [FeedGrant(c, a, n, t) for (c, a, n), t in self._until.items()]

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self.run, name="nettrust-grant-feed",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    # -- the thread -----------------------------------------------------------------------
    def run(self) -> None:
        from .fleet.connect import redis_errors
        errors = redis_errors()
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                client = self.connect()
                client.ping()
                self.catch_up(client)
                backoff = 0.1
                while not self.stopping.is_set():
                    self.read(client, block=500)
            except errors as exc:
                if self.ready.is_set() or not self.counters["redis_errors"]:
                    log.warning("grant feed: Redis unreachable (%s); keeping %d grants until they "
                                "expire", exc, len(self._until))
                self.counters["redis_errors"] += 1
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def catch_up(self, client: Any) -> None:
        """The snapshot when the stream cannot be trusted to hold everything, then the stream
        from the cursor to its end; ready afterwards."""
        from .fleet.keys import stream_id
        first = client.xrange(self.keys.stream, count=1)
        trimmed = (bool(first) and self.cursor != "0-0"
                   and stream_id(first[0][0]) > stream_id(self.cursor))
        if self.cursor == "0-0" or trimmed:
            self.load_snapshot(client)
        while self.read(client, block=None) == PAGE:
            pass
        if not self.ready.is_set():
            log.info("grant feed: %d grants from %s", len(self._until), self.keys.stream)
        self.ready.set()

    def load_snapshot(self, client: Any) -> None:
        from .fleet.entries import BadEntry, GrantEntry, decode
        rows = client.zrangebyscore(self.keys.snapshot, self.clock(), "+inf", withscores=True)
        for member, score in rows:
            try:
                entry = decode({b"k": b"g", b"a": member, b"e": f"{score:.3f}".encode()})
            except BadEntry:
                self.counters["bad_entries"] += 1
                continue
            if isinstance(entry, GrantEntry):
                self._add(None, str(entry.addresses[0]), "", entry.expires[0])
        self.counters["snapshot_loads"] += 1

    def read(self, client: Any, block: int | None) -> int:
        """One ``XREAD`` from the cursor; how many entries it returned."""
        from .fleet.entries import BadEntry, GrantEntry, decode
        got = client.xread({self.keys.stream: self.cursor}, count=PAGE, block=block)
        if not got:
            return 0
        messages = got[0][1]
        now = self.clock()
        for msg_id, fields in messages:
            try:
                entry = decode(fields)
            except BadEntry as exc:
                self.counters["bad_entries"] += 1
                log.warning("grant feed: entry %s refused: %s", msg_id, exc)
                continue
            if not isinstance(entry, GrantEntry):
                continue                            # a configuration announcement
            for address, expires in zip(entry.addresses, entry.expires, strict=True):
                if expires > now:
                    self._add(entry.client or None, str(address), entry.name, expires)
            self.counters["entries"] += 1
        last = messages[-1][0]
        self.cursor = last.decode() if isinstance(last, bytes) else str(last)
        return len(messages)

    def _add(self, client: str | None, address: str, name: str, expires: float) -> None:
        key = (client, address, name)
        with self._lock:
            if expires <= self._until.get(key, 0.0):
                return
            if key not in self._until and len(self._until) >= self.cap:
                now = self.clock()
                self._until = {k: t for k, t in self._until.items() if t > now}
                if len(self._until) >= self.cap:
                    self.counters["dropped_over_cap"] += 1
                    return
            self._until[key] = expires


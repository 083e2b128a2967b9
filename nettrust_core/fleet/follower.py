"""``nettrust follow``: enforce, on this host or gateway, the grants the masters publish.

The loop, in one thread:

1. connect (mutual TLS) and fetch the configuration document (:mod:`.config_doc`); one that
   does not validate is refused and the last good one kept;
2. catch up: from this follower's cursor (``XREAD`` from it), or, when there is none or the
   stream was trimmed past it, from the snapshot (every address with its latest expiry), then
   from the stream's last ID at the moment the snapshot was read (entries in both are applied
   twice, which the never-shorten rule makes harmless);
3. ``XREAD BLOCK`` from the cursor; each entry is written with the resolver's own
   :class:`~nettrust_core.grants.writer.GrantWriter` and never-shorten
   :class:`~nettrust_core.grants.tracker.GrantTracker` (a replayed or out-of-order entry never
   cuts a grant: the kernel would shorten it), then confirmed to its master when the master
   waits for this follower (:mod:`.hold`), and the cursor is saved.

Redis down: the grants stay in the kernel until they expire; new names fail closed here; the
loop reconnects with a back-off and resumes from its cursor.  A killed follower restarted
adopts its kernel sets (as the resolver does) and resumes from its cursor.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Callable

from ..firewall.base import Grant
from ..errors import ConfigError, NetTrustError
from ..logs import FailureLog
from ..grants.caps import SetCaps
from ..grants.gateway import ClientGranter
from ..grants.timeouts import Timeouts, comment
from ..grants.tracker import GrantTracker, Owner
from ..grants.writer import GrantWriter
from ..lifecycle.adoption import GrantAdoption
from . import config_doc
from .config_doc import BadDocument, Document
from .entries import BadEntry, ConfigAnnouncement, GrantEntry, decode
from .keys import Keys, stream_id

if TYPE_CHECKING:
    from ..config import Config
    from ..firewall.base import FirewallBackend

log = logging.getLogger("nettrust.fleet")
#: Publish-to-apply latencies kept for the status file.
LATENCY_SAMPLES = 20000


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Follower:
    def __init__(self, config: Config, backend: FirewallBackend, connect: Callable[[], Any], *,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.node = config.fleet.node
        self.keys = Keys(config.fleet.prefix)
        self.backend = backend
        self.connect = connect
        self.wall = wall
        self.counters: Counter[str] = Counter()
        g = config.grants
        self.tracker = GrantTracker(slack=min(1.0, g.grace / 2))
        self.writer = GrantWriter(backend, self.tracker, SetCaps(g.max_per_set), self.counters)
        #: Gateway mode (``gateway.per_client``): an entry's grants are ``client . destination``
        #: pairs for the client that asked, written as the resolver's gateway writes them.
        self.gateway: ClientGranter | None = None
        gw = config.gateway
        if gw.per_client:
            if gw.client_key == "mac":
                raise ConfigError('a follower keys per-client grants by address: gateway.client_key '
                                  '= "mac" is not supported by `nettrust follow`',
                                  key="gateway.client_key", file=config.path)
            self.gateway = ClientGranter(
                backend, Timeouts(g.min_ttl, g.max_ttl, g.grace), self.counters, time.monotonic,
                cap=g.max_per_client or max(1024, g.max_per_set // 16),
                prefix6=gw.ipv6_client_prefix, set_size=g.max_per_set)
        self.document: Document | None = None
        self.cursor: str | None = None
        self.connected = False
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        #: Kernel refusals, one log line per kind at most 3 per 10 s (a full set refuses every entry).
        self._log_failure = FailureLog(log.error)
        self.stopping = threading.Event()
        self.adoption: GrantAdoption | None = None
        self._status_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """The ruleset, and the kernel's live grants adopted in the background."""
        self.backend.ensure()
        self.adoption = GrantAdoption(self.backend, self.tracker)
        self.adoption.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.adoption is not None:
            self.adoption.stop()
        self.connected = False
        self.write_status()

    def run(self) -> None:
        """Until :meth:`stop`: connect, catch up, follow; reconnect after any Redis failure."""
        from .connect import redis_errors
        errors = redis_errors()
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                client = self.connect()
                client.ping()
                self.fetch_config(client)
                self.catch_up(client)
                if not self.connected:
                    log.info("follower %s: following %s from %s", self.node, self.keys.stream,
                             self.cursor)
                self.connected = True
                backoff = 0.1
                self.follow(client)
            except errors as exc:
                if self.connected or not self.counters["redis_errors"]:
                    log.warning("follower %s: Redis unreachable (%s); keeping the current "
                                "grants, new names fail closed until it is back", self.node, exc)
                self.connected = False
                self.counters["redis_errors"] += 1
                self.write_status()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 1.0)

    # -- configuration -------------------------------------------------------------------
    def fetch_config(self, client: Any) -> None:
        raw = client.get(self.keys.config)
        try:
            doc = config_doc.validate(raw)
        except BadDocument as exc:
            self.counters["config_refused"] += 1
            log.error("follower %s: configuration document refused (%s); keeping version %s",
                      self.node, exc, self.document.version if self.document else "none")
            return
        if self.document is None or doc.version != self.document.version:
            log.info("follower %s: configuration version %d", self.node, doc.version)
            self.counters["config_applied"] += 1
        self.document = doc

    # -- catching up and following ---------------------------------------------------------
    def catch_up(self, client: Any) -> None:
        saved = client.get(self.keys.cursor(self.node))
        cursor = saved.decode() if saved else self.cursor
        first = client.xrange(self.keys.stream, count=1)
        # Entries older than the first one were trimmed: if the cursor is older, some may have
        # been missed (MINID trims only expired ones, but a stream can also be lost or cut).
        trimmed = bool(cursor is not None and first
                       and stream_id(first[0][0]) > stream_id(cursor))
        if cursor is None or trimmed:
            info_last = self._last_id(client)
            n = self.apply_snapshot(client)
            self.counters["snapshot_loads"] += 1
            log.info("follower %s: %s; %d grants from the snapshot", self.node,
                     "cursor trimmed" if trimmed else "no cursor", n)
            cursor = info_last
        self.cursor = cursor

    def _last_id(self, client: Any) -> str:
        try:
            info = client.xinfo_stream(self.keys.stream)
        except Exception:                       # no stream yet
            return "0-0"
        last = info.get("last-generated-id") or b"0-0"
        return last.decode() if isinstance(last, bytes) else str(last)

    def apply_snapshot(self, client: Any) -> int:
        """Every live grant from the snapshot: addresses (host mode), or in gateway mode the
        per-client pairs only (an address granted to a client behind a gateway is not granted
        to the gateway itself)."""
        now = self.wall()
        pairs = self.gateway is not None
        rows = client.zrangebyscore(self.keys.pairs if pairs else self.keys.snapshot, now,
                                    "+inf", withscores=True)
        by_client: dict[str, tuple[list, list]] = {}
        for member, score in rows:
            who, _, address = member.rpartition(b" ") if pairs else (b"", b"", member)
            try:
                entry = decode({b"k": b"g", b"a": address, b"e": f"{score:.3f}".encode(),
                                b"c": who})
            except BadEntry:
                self.counters["bad_entries"] += 1
                continue
            if isinstance(entry, GrantEntry):
                addresses, expires = by_client.setdefault(entry.client, ([], []))
                addresses.append(entry.addresses[0])
                expires.append(entry.expires[0])
        n = 0
        for who, (addresses, expires) in by_client.items():
            n += len(addresses)
            for i in range(0, len(addresses), 1024):
                self.apply(GrantEntry(tuple(addresses[i:i + 1024]), tuple(expires[i:i + 1024]),
                                      "fleet-snapshot", who))
        return n

    def follow(self, client: Any) -> None:
        while not self.stopping.is_set():
            if self.cursor == "0-0" and not client.exists(self.keys.stream):
                # No stream yet (no master ever published): poll.  An XREAD BLOCK on a missing
                # key was seen (Redis 7.0, TLS) not to return when a master then created it,
                # until the socket timed out: the first entries then came seconds late.
                self.stopping.wait(0.05)
                if self.wall() - self._status_at > 1.0:
                    self.write_status()
                continue
            got = client.xread({self.keys.stream: self.cursor}, block=500, count=512)
            if got:
                self.handle(client, got[0][1])
            if self.wall() - self._status_at > 1.0:
                self.write_status()

    def handle(self, client: Any, messages: list) -> None:
        acks: dict[str, list[int]] = {}
        for msg_id, fields in messages:
            try:
                entry = decode(fields)
            except BadEntry as exc:
                self.counters["bad_entries"] += 1
                log.warning("follower %s: entry %s refused: %s", self.node, msg_id, exc)
                continue
            if isinstance(entry, ConfigAnnouncement):
                self.fetch_config(client)
                continue
            try:
                written = self.apply(entry)
            except NetTrustError as exc:
                # The kernel refused (a full set, a table deleted under us and not rebuilt):
                # this entry's names fail closed here and it is not acknowledged (the master's
                # hold times out and counts it); the next entries are tried as usual.
                self.counters["backend_errors"] += 1
                self._log_failure("entry %s not applied, its names fail closed here" % msg_id, exc)
                continue
            log.debug("follower %s: entry %s (%s for %s) applied, %d written", self.node,
                      msg_id, entry.name, entry.client or "-", written)
            if entry.sent:
                self.latencies.append(self.wall() - entry.sent)
            if entry.ack_by == self.node and entry.origin:
                acks.setdefault(entry.origin, []).append(entry.seq)
        last = messages[-1][0]
        self.cursor = last.decode() if isinstance(last, bytes) else last
        pipe = client.pipeline(transaction=False)
        for origin, seqs in acks.items():
            for seq in seqs:
                pipe.xadd(self.keys.acks(origin), {"s": str(seq), "f": self.node},
                          maxlen=10000, approximate=True)
        pipe.set(self.keys.cursor(self.node), self.cursor)
        pipe.execute()

    def apply(self, entry: GrantEntry) -> int:
        """Write what extends this host's grants; how many addresses were written.

        In gateway mode an entry with a client (the address that asked the master) grants
        ``client . destination`` pairs; one without (or from the master's own host) grants the
        addresses, as the resolver grants answers nobody behind it waits for."""
        wall = self.wall()
        doc = self.document
        why = comment((entry.name,)) if entry.name else "fleet"
        grants = []
        for address, expires in zip(entry.addresses, entry.expires, strict=True):
            left = expires - wall
            if left <= 0:
                self.counters["expired_entries"] += 1
                continue
            if doc is not None and doc.denies(address):
                self.counters["denied_by_config"] += 1
                continue
            grants.append(Grant(address, min(left, 7 * 86400.0), why))
        if not grants:
            return 0
        if self.gateway is not None and entry.client:
            remote, host = self.gateway.split(entry.client)
            if not remote and not host:         # unparsable (counted): grants nothing
                return 0
            if remote and not self._behind_me(remote[0][1]):
                self.counters["entries_for_other_followers"] += 1
                return 0                        # its packets never come through here
            if remote:
                written = self.gateway.extend(remote, [(g.address, g.timeout) for g in grants],
                                              why)
                self.counters["entries_applied"] += 1
                self.counters["pairs_written"] += written
                self.counters["pairs_kept"] += len(grants) * len(remote) - written
                return written
        owner = Owner(entry.name, "", entry.client)
        tracker = self.tracker
        with tracker.lock:
            now = tracker.clock()
            todo = self.writer.to_write(grants, now)
            if todo:
                self.writer.write(todo)
                for g in todo:
                    tracker.record(g.address, now + g.timeout, owner=owner)
        self.counters["entries_applied"] += 1
        self.counters["elements_written"] += len(todo)
        self.counters["elements_kept"] += len(grants) - len(todo)
        return len(todo)

    def _behind_me(self, client: Any) -> bool:
        """Whether ``client``'s traffic comes through this gateway: not when the fleet's map
        (``fleet.followers``) gives its network to another follower, nor when it is outside
        ``firewall.lan_networks`` (the forward chain drops it anyway); else yes."""
        other = self.config.fleet.follower_of(str(client))
        if other is not None:
            return other == self.node
        lan = self.config.firewall.lan_networks
        return not lan or any(client.version == n.version and client in n for n in lan)

    # -- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        lat = list(self.latencies)
        return {"node": self.node, "connected": self.connected, "cursor": self.cursor,
                "config_version": self.document.version if self.document else None,
                "grants": len(self.tracker), "counters": dict(self.counters),
                "latency_samples": len(lat), "latency_p50": _percentile(lat, 0.5),
                "latency_p99": _percentile(lat, 0.99), "time": self.wall()}

    def write_status(self) -> None:
        self._status_at = self.wall()
        path = self.config.fleet.status_file
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.status(), f)
            os.replace(tmp, path)
        except OSError as exc:
            self.counters["status_errors"] += 1
            log.debug("status file %s: %s", path, exc)

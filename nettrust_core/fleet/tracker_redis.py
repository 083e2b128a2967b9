"""The shared host tracker (``fleet.tracker = "redis"``): the never-shorten tracker kept in Redis
as well as in memory, so a restarted resolver is exact within seconds.

Written from a background thread (:class:`TrackerWriter`, fed by a bounded queue: the answer
path only enqueues; a full queue drops and counts), as one hash per host (``Keys.hosts``),
``packed address -> "<expiry, wall clock> <question name> <its registrable domain>"`` (values
written before the domain was stored lack it: it is then computed again), shared by every
resolver instance of the host.  At start, :class:`RedisAdoption` (in place of the kernel
read-back of :mod:`nettrust_core.lifecycle.adoption`, about 48 s for 1M grants) reads the hash
once and merges it ("the later expiry wins") before marking the tracker complete; when Redis
cannot be read it falls back to reading the kernel.  Expired fields are deleted as the read
meets them.  The hash written before addresses were packed (``Keys.hosts_text``, text
addresses) is read with it and never written again: it empties as its grants expire.

The hash lags the kernel by at most one write interval (50 ms); a clean stop drains the queue.
A crash can lose that last interval: those few grants are then treated as new, as the kernel
lookups of an incomplete tracker would not be.
"""

from __future__ import annotations

import gc
import logging
import queue
import socket
import time
from collections import Counter, deque
from functools import partial
from itertools import compress, filterfalse, repeat
from operator import contains, itemgetter, not_
from typing import Any, Callable, Sequence

from ..firewall.base import Grant
from ..grants.tracker import GrantTracker, Owner
from ..lifecycle.adoption import GrantAdoption, collector_back, longest
from ..networks import V6_KEY, key_address
from .tracker_check import disagreement
from ..worker import Worker

log = logging.getLogger("nettrust.fleet")
_FIRST, _THIRD = itemgetter(0), itemgetter(2)


class TrackerWriter(Worker):
    name = "nettrust-tracker-redis"
    INTERVAL = 0.05

    def __init__(self, connect: Callable[[], Any], key: str, *, queue_size: int,
                 counters: Counter[str]) -> None:
        super().__init__(counters)
        self.connect = connect
        self.key = key
        self.counters = counters
        self.queue: queue.Queue[tuple] = queue.Queue(maxsize=queue_size)
        self._client: Any = None

    def granted(self, grants: Sequence[Grant], owner: Owner) -> None:
        """The answer path: enqueue only."""
        try:
            self.queue.put_nowait((time.time(), grants, owner.names, owner.domain))
        except queue.Full:
            self.counters["tracker_redis_dropped"] += 1

    def forgot(self, keys: list[int]) -> None:
        """The tracker forgot these grants (revoked, expired): delete them (enqueue only)."""
        try:
            self.queue.put_nowait((0.0, keys, None, None))
        except queue.Full:
            self.counters["tracker_redis_dropped"] += 1

    def run(self) -> None:
        from .connect import redis_errors
        errors = redis_errors()
        pending: dict[bytes, str | None] = {}           # None: delete the field
        while True:
            stopping = self.stopping.is_set()
            self._drain(pending)
            if pending:
                try:
                    if self._client is None:
                        self._client = self.connect()
                    gone = [f for f, v in pending.items() if v is None]
                    pipe = self._client.pipeline(transaction=False)
                    if gone:
                        pipe.hdel(self.key, *gone)
                    if len(gone) < len(pending):
                        pipe.hset(self.key, mapping={f: v for f, v in pending.items()
                                                     if v is not None})
                    pipe.execute()
                    self.counters["tracker_redis_written"] += len(pending) - len(gone)
                    self.counters["tracker_redis_deleted"] += len(gone)
                    pending = {}
                except errors as exc:
                    self._client = None
                    self.counters["tracker_redis_errors"] += 1
                    log.debug("shared tracker: %s", exc)
                    if len(pending) > self.queue.maxsize:
                        self.counters["tracker_redis_dropped"] += len(pending)
                        pending = {}
            if stopping:
                return
            self.stopping.wait(self.INTERVAL)

    def _drain(self, pending: dict[bytes, str | None]) -> None:
        """The queue's grants and deletions into ``pending``, in order (the last one wins)."""
        while True:
            try:
                sent, grants, names, domain = self.queue.get_nowait()
            except queue.Empty:
                return
            if names is None:                           # forgotten: keys, not grants
                for k in grants:
                    pending[key_address(k).packed] = None
                continue
            name = names if isinstance(names, str) else names[0]
            # The registrable domain too, so a restart need not look it up for every name.
            tail = f"{name} {domain}" if domain else name
            for g in grants:
                pending[g.address.packed] = f"{sent + g.timeout:.3f} {tail}"


def fetch(client: Any, keys: Sequence[str]) -> list[list]:
    """Each host hash as Redis returns it, flat: ``[field, value, field, value, …]`` (redis-py's
    HGETALL would build a dict of it first; ``client`` is the adoption's own), in one round
    trip."""
    client.set_response_callback("HGETALL", lambda response, **_options: response)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("HGETALL", key)
    return [reply or [] for reply in pipe.execute()]


#: One IP version's live grants read back: (version, address key -> expiry on the tracker's
#: clock, address key -> owner), as :meth:`GrantTracker.load` takes them (keys: ints, as
#: nettrust_core.networks.address_key makes them: no address object is built).
Loaded = tuple[int, dict, dict]

#: One IP version's fields decoded: address keys, expiries (tracker clock), owners.
Columns = tuple[list[int], list[float], list[Owner]]


def read_hosts(client: Any, key: str, wall: float, clock: float, owner_of: Callable[[str], Owner],
               phases: dict[str, float] | None = None,
               legacy: str | None = None) -> tuple[list[Loaded], list[bytes], list[bytes]]:
    """The host hash (and the ``legacy`` one, text fields) read and decoded, as
    :func:`parse_hosts`; ``phases`` gets each step's seconds."""
    started = time.monotonic()
    raw = fetch(client, [key] if legacy is None else [key, legacy])
    read = time.monotonic()
    out = parse_hosts(raw[0], wall, clock, owner_of, raw[1] if legacy is not None else None)
    if phases is not None:
        phases["read"], phases["decode"] = read - started, time.monotonic() - read
    return out


_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def _packed_keys(fields: list[bytes], version: int) -> list[int]:
    """Address keys of packed fields (4 or 16 bytes, network order)."""
    ints = list(map(int.from_bytes, fields))
    return list(map(V6_KEY.__or__, ints)) if version == 6 else ints


def _text_keys(fields: list[bytes], version: int) -> list[int]:
    """Address keys of fields written as text (the layout before packed fields)."""
    ints = list(map(int.from_bytes, map(partial(socket.inet_pton, _FAMILY[version]),
                                        map(bytes.decode, fields))))
    return list(map(V6_KEY.__or__, ints)) if version == 6 else ints


def _by_version(fields: list[bytes], values: list[bytes], text: bool, dead: list[bytes]):
    """(version, fields, values) per IP version present; packed fields of another length than 4
    or 16 go to ``dead``.  Text fields: IPv6 are those with a colon, one C-level search of the
    joined fields first (a host without IPv6 grants skips the split)."""
    if text:
        if b":" not in b" ".join(fields):
            return [(4, fields, values)]
        is6 = list(map(contains, fields, repeat(b":")))
        picks = [(4, list(map(not_, is6))), (6, is6)]
    else:
        sizes = list(map(len, fields))
        if sizes.count(4) == len(sizes):
            return [(4, fields, values)]
        picks = [(4, list(map((4).__eq__, sizes))), (6, list(map((16).__eq__, sizes)))]
        dead.extend(compress(fields, map(not_, map((4, 16).__contains__, sizes))))
    return [(v, list(compress(fields, pick)), list(compress(values, pick))) for v, pick in picks]


def parse_hosts(raw: list, wall: float, clock: float, owner_of: Callable[[str], Owner],
                text: list | None = None) -> tuple[list[Loaded], list[bytes], list[bytes]]:
    """The live grants of flat HGETALL replies, per IP version (:data:`Loaded`, one owner per
    name), and the fields of each reply that expired or do not parse: ``raw`` with packed fields
    (the addresses' 4 or 16 bytes, as the writer stores them), ``text`` with text fields (as it
    stored them before; such a hash is read until its last grant expires).

    A million fields are decoded column by column with C-level ``map`` (no bytecode per
    field, measured 4× faster than a loop; packed fields are ~0.4 s of a million's decoding
    quicker than text ones); a column that does not parse whole (a hand-edited field, say) is
    decoded field by field instead (:func:`_careful`), refusing only the bad ones.
    """
    dead: list[bytes] = []
    dead_text: list[bytes] = []
    owners: dict[bytes, Owner] = {}
    columns: dict[int, list[Columns]] = {4: [], 6: []}
    for flat, is_text, refused in ((raw, False, dead), (text or [], True, dead_text)):
        fields, values = flat[0::2], flat[1::2]
        del fields[len(values):]                                # an odd last one: ignored
        if not fields:
            continue
        for version, f, v in _by_version(fields, values, is_text, refused):
            if not f:
                continue
            keys_of = partial(_text_keys if is_text else _packed_keys, version=version)
            one = _columns(f, v, keys_of, wall, clock, owner_of, owners, refused)
            if one is None:
                one = _careful(f, v, keys_of, wall, clock, owner_of, owners, refused)
            columns[version].append(one)
    out: list[Loaded] = []
    for version, parts in columns.items():
        if not parts:
            continue
        if len(parts) == 1:
            keys, expiries, owned = parts[0]
        else:                                   # both layouts: the packed one's first
            keys = [k for p in parts for k in p[0]]
            expiries = [t for p in parts for t in p[1]]
            owned = [o for p in parts for o in p[2]]
        incoming = dict(zip(keys, expiries, strict=True))
        if len(incoming) == len(keys):
            out.append((version, incoming, dict(zip(keys, owned, strict=True))))
            continue
        # One address twice (in both hashes, or spelt ``2001:db8::1`` and ``2001:DB8::1``): the
        # later expiry and the first owner, as recording them one after the other would give.
        for k, t in zip(keys, expiries, strict=True):
            if incoming[k] < t:
                incoming[k] = t
        out.append((version, incoming, dict(zip(reversed(keys), reversed(owned), strict=True))))
    return out, dead, dead_text


def _owners_of(tails: list[bytes], clock: float, owner_of: Callable[[str], Owner],
               owners: dict[bytes, Owner]) -> list[Owner]:
    """The owner of each value's tail (``b"<name> <domain>"``, or ``b"<name>"`` as written
    before the domain was stored): one :class:`Owner` per distinct tail, made a column at a
    time.  A tail without a domain, or whose "domain" does not end its name (an old value whose
    name held a space), goes whole to ``owner_of``, which computes the registrable domain."""
    # Each tail replaced by the first equal one met: one C-level pass, after which the owners'
    # lookups below find their key by identity instead of comparing bytes (measured ~0.2 s less
    # for 1M fields of 250,000 names than a set of the tails and lookups by equality).
    canon: dict[bytes, bytes] = {}
    keys = list(map(canon.setdefault, tails, tails))
    new = list(filterfalse(owners.__contains__, canon))
    if new:
        text = list(map(bytes.decode, new, repeat("utf-8"), repeat("replace")))
        split = list(map(str.partition, text, repeat(" ")))
        names, domains = list(map(_FIRST, split)), list(map(_THIRD, split))
        made = list(map(Owner, names, domains))
        for i in compress(range(len(made)), map(not_, map(str.endswith, names, domains))):
            made[i] = owner_of(text[i])
        for i in compress(range(len(made)), map(not_, domains)):
            made[i] = owner_of(text[i])
        deque(map(setattr, made, repeat("answered"), repeat(clock)), maxlen=0)
        owners.update(zip(new, made, strict=True))
    return list(map(owners.__getitem__, keys))


def _columns(fields: list[bytes], values: list[bytes], keys_of: Callable[[list[bytes]], list[int]],
             wall: float, clock: float, owner_of: Callable[[str], Owner],
             owners: dict[bytes, Owner], dead: list[bytes]) -> Columns | None:
    """One IP version's fields decoded a column at a time; None when any does not parse."""
    try:
        parts = list(map(bytes.partition, values, repeat(b" ")))
        expiries = list(map(float, map(_FIRST, parts)))
        keys = keys_of(fields)
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    live = list(map(wall.__lt__, expiries))
    if not all(live):
        dead.extend(compress(fields, map(not_, live)))
        parts = list(compress(parts, live))
        expiries = list(compress(expiries, live))
        keys = list(compress(keys, live))
    shift = clock - wall
    return (keys, list(map(shift.__add__, expiries)),
            _owners_of(list(map(_THIRD, parts)), clock, owner_of, owners))


def _careful(fields: list[bytes], values: list[bytes], keys_of: Callable[[list[bytes]], list[int]],
             wall: float, clock: float, owner_of: Callable[[str], Owner],
             owners: dict[bytes, Owner], dead: list[bytes]) -> Columns:
    """Field by field: the bad and the expired ones go to ``dead``."""
    keys: list[int] = []
    expiries: list[float] = []
    tails: list[bytes] = []
    shift = clock - wall
    for field, value in zip(fields, values, strict=True):
        try:
            at, _, name = value.partition(b" ")
            expires = float(at)
            key, = keys_of([field])
        except (ValueError, OSError, UnicodeDecodeError):
            dead.append(field)
            continue
        if not expires > wall:
            dead.append(field)
            continue
        keys.append(key)
        expiries.append(expires + shift)
        tails.append(name)
    return keys, expiries, _owners_of(tails, clock, owner_of, owners)


class RedisAdoption(GrantAdoption):
    """The start-up adoption from the shared tracker; the kernel's when Redis cannot answer."""

    name = "nettrust-adoption-redis"

    def __init__(self, backend, tracker: GrantTracker, connect: Callable[[], Any],
                 key: str, legacy: str | None = None,
                 counters: Counter[str] | None = None) -> None:
        super().__init__(backend, tracker)
        self.connect = connect
        self.key = key
        self.legacy = legacy
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.source = "redis"

    def run(self) -> None:
        from .connect import redis_errors
        started = time.monotonic()
        collecting = gc.isenabled()
        try:
            client = self.connect()
            tracker = self.tracker
            # A million new objects would trigger the cyclic collector's full passes over the
            # whole process again and again (none of them is garbage): off while they are made
            # and merged (see collector_back).
            gc.disable()
            phases: dict[str, float] = {"connect": time.monotonic() - started}
            live, dead, dead_text = read_hosts(client, self.key, time.time(), tracker.clock(),
                                               tracker.owner_for, phases, self.legacy)
        except redis_errors() as exc:
            collector_back(collecting, freeze=False)
            log.warning("shared tracker unreadable (%s): adopting from the kernel", exc)
            self.source = "kernel"
            super().run()
            return
        except BaseException:
            collector_back(collecting, freeze=False)
            raise
        try:
            tops = [longest(incoming) for _v, incoming, _o in live]
            why = disagreement(self.backend, live, tracker.clock(), tops=tops)
        except BaseException:
            collector_back(collecting, freeze=False)
            raise
        if why is not None:
            collector_back(collecting, freeze=False)
            del live
            self.counters["tracker_redis_refused"] += 1
            log.warning("shared tracker refused: %s; adopting from the kernel, and the hash "
                        "deleted", why)
            try:                            # stale: written again from the next answers
                client.delete(*filter(None, (self.key, self.legacy)))
            except redis_errors() as exc:
                log.warning("shared tracker: the refused hash was not deleted (%s)", exc)
            self.source = "kernel"
            super().run()
            return
        try:
            merge = time.monotonic()
            if not self.merge_live(live, tops):
                return
            del live
            self.seconds = time.monotonic() - started
            phases["merge"] = time.monotonic() - merge
            collector_back(collecting, freeze=True)
            log.info("%d live grants adopted from the shared tracker in %.1f s (%s)", self.adopted,
                     self.seconds, ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
            for key, fields in ((self.key, dead), (self.legacy, dead_text)):
                for i in range(0, len(fields) if key else 0, 10000):
                    client.hdel(key, *fields[i:i + 10000])
        except redis_errors() as exc:
            log.warning("shared tracker: expired fields not deleted (%s)", exc)
        finally:
            collector_back(collecting, freeze=False)
            self._done.set()


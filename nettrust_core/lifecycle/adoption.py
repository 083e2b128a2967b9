"""Adopting the kernel's live grants after a restart, without holding up the first answers.

A restarted resolver must never shorten a grant it made before (re-adding an element with a
shorter timeout shortens it on this kernel), so it has to learn what its sets hold.  Reading a
set back costs the kernel time that grows with the square of its size (its dump restarts the
walk for every 32 KiB part): 40-50 s for a million elements in one set, about 2 s over the
sixteen sets they are spread over (:mod:`nettrust_core.firewall.nftables_sets`).  So the
resolver answers at once and adopts in a background thread.  Until adoption completes the tracker is
marked incomplete, and the answer path asks the kernel about each address it does not know yet
(one GETSETELEM, microseconds: :meth:`Authorizer.authorize`) before deciding whether to write.
Adoption merges with "the later expiry wins", so an answer written meanwhile is never undone.

The nftables backend's grants are read a column at a time (``grant_columns``: address keys,
seconds left, comments; no object per grant), one owner is made per name, and each IP version
is merged at once (:meth:`GrantAdoption.merge_live`, as the shared tracker's read-back), with
the cyclic garbage collector paused meanwhile.  Other backends (and several at once) hand over
GrantedElements one dump part at a time, merged element by element.  Measured for 1M grants
at 4 per name over the sixteen sets, outside Unbound (one run, 2 noisy cores): element by
element 8.7 s (the kernel's dump 2.2 s, parsing it 1.8 s, address objects 2.6 s, merging
2.2 s); by columns 6.2 s, of which the dump and its parsing ~4.4 s.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from itertools import filterfalse
from operator import itemgetter
from typing import Any

from ..errors import NetTrustError
from ..grants.tracker import GrantTracker, Owner
from ..networks import key_address
from ..worker import Worker

log = logging.getLogger("nettrust.adoption")


class _Stopped(NetTrustError):
    """Raised from the dump callback to abandon adoption when the resolver stops."""


class GrantAdoption(Worker):
    """One background read of this process's grant sets into ``tracker``.

    ``adopted`` counts elements merged, ``seconds`` the time it took, ``error`` says why it
    gave up (the answer path then keeps asking the kernel per unknown address: slower, still
    exact).
    """

    name = "nettrust-adoption"

    def __init__(self, backend, tracker: GrantTracker) -> None:
        super().__init__()
        self.backend = backend
        self.tracker = tracker
        self.adopted = 0
        self.seconds: float | None = None
        self.error: str | None = None
        self._done = threading.Event()

    def start(self) -> None:
        with self.tracker.lock:
            self.tracker.complete = False
        super().start()

    def run(self) -> None:
        started = time.monotonic()
        columns = getattr(self.backend, "grant_columns", None)
        collecting = gc.isenabled()
        try:
            if columns is None:
                self.backend.list_grants(self._merge, own_only=True)
            else:
                gc.disable()            # a million new objects, none garbage: see collector_back
                self._merge_columns(columns())
        except _Stopped:
            log.info("adoption of live grants abandoned after %d (stopping)", self.adopted)
        except Exception as exc:        # a thread has no caller to raise to: log, stay exact
            self.error = str(exc) or type(exc).__name__
            log.error("cannot read back the live grants (%s); answers keep asking the kernel "
                      "about each address first", self.error,
                      exc_info=not isinstance(exc, (NetTrustError, OSError)))
        else:
            with self.tracker.lock:
                if not self.stopping.is_set():  # else a reset replaced us: the new one completes
                    self.tracker.complete = True
            self.seconds = time.monotonic() - started
            collector_back(collecting, freeze=True)
            log.info("%d live grants adopted from the kernel in %.1f s", self.adopted, self.seconds)
        finally:
            collector_back(collecting, freeze=False)
            self._done.set()

    def _merge_columns(self, columns: Any) -> None:
        """Build each IP version's key -> expiry and key -> owner dicts from the backend's
        columns, then merge them at once (:meth:`merge_live`)."""
        tracker = self.tracker
        now = tracker.clock()
        live: dict[int, tuple[dict[int, float], dict[int, Any]]] = {4: ({}, {}), 6: ({}, {})}
        by_comment: dict[str, Owner] = {}

        def owner(comment: str) -> Owner:         # as record() charges a read-back grant
            found = tracker.owner_from_comment(comment, by_comment)
            if found.answered is None:
                found.answered = now
            return found
        try:
            for version, keys, left, comments in columns:
                if self.stopping.is_set():
                    raise _Stopped
                expiry, owners = live[version]
                times = [now + s for s in left]
                if not expiry.keys().isdisjoint(keys):   # in two sets (written before the
                    for key, at, comment in zip(keys, times, comments, strict=True):  # sets were
                        if at > expiry.get(key, 0.0):                     # sharded): the later
                            expiry[key], owners[key] = at, owner(comment)  # wins
                    continue
                expiry.update(zip(keys, times, strict=True))
                for comment in filterfalse(by_comment.__contains__, dict.fromkeys(comments)):
                    owner(comment)                       # one owner per name, then C-level maps
                owners.update(zip(keys, map(by_comment.__getitem__, comments), strict=True))
        finally:
            columns.close()
        versions = [(v, e, o) for v, (e, o) in live.items() if e]
        if not self.merge_live(versions, [longest(e) for _v, e, _o in versions]):
            raise _Stopped

    def merge_live(self, live: list[tuple[int, dict[int, float], dict[int, Any]]],
                   tops: list[tuple[int, float] | None]) -> bool:
        """Merge whole read-backs (per IP version: key -> expiry on the tracker's clock, key ->
        owner with ``answered`` set) into the tracker under its lock -- milliseconds: the dicts
        become the tracker's -- and mark it complete; False when stopping meanwhile.  ``tops``:
        each version's longest-living grant, which the periodic ruleset check samples."""
        tracker = self.tracker
        charges = [Counter(owners.values()) for _v, _i, owners in live]    # outside the lock
        with tracker.lock:
            if self.stopping.is_set():
                return False
            for (version, incoming, owners), charged in zip(live, charges, strict=True):
                self.adopted += tracker.load(version, incoming, owners, charged)
            for top, at in filter(None, tops):
                if (tracker.longest is None or at > tracker.longest[1]) and \
                        tracker.expiry(key_address(top)) == at:
                    tracker.longest = (key_address(top), at)
            tracker.complete = True
        return True

    def _merge(self, batch) -> None:
        if self.stopping.is_set():
            raise _Stopped
        with self.tracker.lock:
            if self.stopping.is_set():          # abandoned while we waited (a tracker reset)
                raise _Stopped
            self.adopted += self.tracker.adopt(batch)

    @property
    def complete(self) -> bool:
        return self.tracker.complete

    def wait(self, timeout: float | None = None) -> bool:
        """True once adoption has finished (completed, failed or abandoned)."""
        return self._done.wait(timeout)

    def abandon(self) -> None:
        """Stop merging at once (callable under the tracker's lock); :meth:`stop` (abandon
        between two dump parts, and join) follows outside the lock."""
        self.stopping.set()


def longest(incoming: dict[int, float]) -> tuple[int, float] | None:
    """The key and expiry of the longest-living grant of one version's read-back."""
    return max(incoming.items(), key=itemgetter(1)) if incoming else None


def collector_back(collecting: bool, *, freeze: bool) -> None:
    """Turn the cyclic collector back on if the adoption turned it off (idempotent).

    ``freeze``: first move every object it tracks into its permanent generation
    (``gc.freeze``): the read-back's million address and owner objects live as long as their
    grants, yet re-enabling the collector over them would walk them in a young pass at once
    and again in the full passes that follow (measured: about 0.25 s in the merge and 1.2 s
    after it, in whichever thread allocates next, the answer path included).  Frozen objects are
    still freed by reference counting when a grant is forgotten; only cyclic garbage that
    already existed at this moment is never collected (the process has just started)."""
    if collecting and not gc.isenabled():
        if freeze:
            gc.freeze()
        gc.enable()

"""Adopting the kernel's live grants after a restart, without holding up the first answers.

A restarted resolver must never shorten a grant it made before (re-adding an element with a
shorter timeout shortens it on this kernel), so it has to learn what its sets hold.  Reading a
set back costs the kernel time that grows with the square of its size (its dump restarts the
walk for every 32 KiB part): about 30 s for a million elements in one set.  So the resolver
answers at once and adopts in a background thread.  Until adoption completes the tracker is
marked incomplete, and the answer path asks the kernel about each address it does not know yet
(one GETSETELEM, microseconds: :meth:`Authorizer.authorize`) before deciding whether to write.
Adoption merges with "the later expiry wins", so an answer written meanwhile is never undone.
"""

from __future__ import annotations

import logging
import threading
import time

from ..errors import NetTrustError
from ..grants.tracker import GrantTracker
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
        try:
            self.backend.list_grants(self._merge, own_only=True)
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
            log.info("%d live grants adopted from the kernel in %.1f s", self.adopted, self.seconds)
        finally:
            self._done.set()

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

"""One small base for the resolver's background threads: start, stop, join.

Inside Unbound every thread must be stopped and joined in ``deinit`` (a Python thread left
running when the interpreter is torn down crashes Unbound), and no thread may die silently.  A
:class:`Worker` gives each thread the same shape: :meth:`~Worker.start` runs :meth:`~Worker.run`
in a daemon thread; :meth:`~Worker.stop` sets :attr:`~Worker.stopping` (an Event the loop waits
on), calls :meth:`~Worker.wake` for a thread blocked elsewhere, and joins.  An exception that
escapes ``run`` is logged with its traceback and counted (``thread_deaths`` in the counters given
to the worker, and :attr:`~Worker.died`).  ``Service.stop`` (Unbound's ``deinit``) stops and joins
every one of them: ``Service.workers()`` lists them.  The statistics agent (another process)
uses the same base for its writer and alert threads; its per-connection receivers come and go
with their sockets and are joined by ``Agent.stop``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("nettrust.worker")


class Worker:
    """Subclasses set :attr:`name` and implement :meth:`run`, which returns once :attr:`stopping`
    is set."""

    name = "nettrust-worker"

    def __init__(self, counters: Counter[str] | None = None) -> None:
        self.stopping = threading.Event()
        #: Where a death is counted (``thread_deaths``); None: only :attr:`died` and the log.
        self.thread_counters = counters
        #: Set when ``run`` raised: the exception's one-line description.
        self.died: str | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        """Unblock ``run`` when it waits on something other than :attr:`stopping`."""

    def start(self) -> None:
        if self._thread is not None:
            return
        self.stopping.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:          # a thread has no caller to raise to: log and count
            self.died = f"{type(exc).__name__}: {exc}"
            if self.thread_counters is not None:
                self.thread_counters["thread_deaths"] += 1
            log.exception("background thread %s died", self.name)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and join it (at most ``timeout`` seconds)."""
        self.stopping.set()
        self.wake()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """True when the thread has ended (or never started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.error("background thread %s did not stop within %s s", self.name, timeout)
            return False
        if self.stopping.is_set():
            self._thread = None             # stopped: start() may run it again
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


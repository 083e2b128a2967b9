"""The background thread that keeps the running resolver's list index current.

Every ``interval`` it stats the list files (a cheap ``stat`` per file, no reading); when a
signature (inode, size, mtime) changed, or a file appeared or vanished in a listed directory, it
re-reads the changed files off the answer path and hands the new index to ``swap`` — one
reference assignment, atomic under the GIL, so an answer sees the old index or the new one,
never a mix.  A :class:`~nettrust_core.worker.Worker`: ``Service.stop`` (Unbound's ``deinit``)
stops and joins it with the others.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from .loader import FileReport, Loader
from .index import ListIndex
from ..worker import Worker

log = logging.getLogger("nettrust.lists")


def publish(reports: list[FileReport], counters: Counter, index: ListIndex) -> None:
    """Log a load and count it: entries, invalid lines (with file and line), unreadable files."""
    for r in reports:
        if r.error:
            counters["lists_file_errors"] += 1
            log.error("list %s: %s: %s", r.list, r.path, r.error)
        if not r.reloaded:
            continue
        counters["lists_invalid_lines"] += r.invalid
        counters["lists_refused_entries"] += r.refused
        for line, what, message in r.problems[:20]:
            if what == "invalid":
                log.warning("list %s: %s:%d: %s", r.list, r.path, line, message)
        log.info("list %s: %s: %d entries, %d invalid, %d skipped line(s)", r.list, r.path,
                 r.entries, r.invalid, r.skipped)
    counters["lists_entries"] = len(index)


class ListWatcher(Worker):
    name = "nettrust-lists"

    def __init__(self, loader: Loader, swap: Callable[[ListIndex], None], counters: Counter,
                 interval: float = 5.0) -> None:
        super().__init__(counters)
        self.loader, self.swap, self.counters, self.interval = loader, swap, counters, interval
        self._known = loader.signatures()

    def start(self) -> None:
        if self.interval > 0 and self.loader.specs:
            super().start()

    def check(self) -> bool:
        """Reload when a file changed; True when a new index was swapped in."""
        now = self.loader.signatures()
        if now == self._known:
            return False
        index, reports = self.loader.load()
        self._known = self.loader.signatures()
        self.swap(index)
        self.counters["lists_reloads"] += 1
        publish(reports, self.counters, index)
        log.info("lists reloaded: %d entries (generation %d)", len(index), index.generation)
        return True

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.check()
            except Exception:                      # never let the thread die silently
                self.counters["lists_reload_errors"] += 1
                log.exception("reloading the lists failed; the index loaded before stays")

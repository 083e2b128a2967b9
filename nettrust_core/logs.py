"""Where ``nettrust.*`` logs go: chosen by the program (the Unbound adapter, the CLI, the agent),
never by the library, which only logs to its ``nettrust.<area>`` loggers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config
    from collections.abc import Callable


def setup_logging(config: Config, emit: Callable[[int, str], None] | None = None) -> None:
    """Route ``nettrust.*`` logs: to ``log.file`` when set, else through ``emit(level, text)``."""
    root = logging.getLogger("nettrust")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    if config.log.file:
        handler: logging.Handler = logging.FileHandler(config.log.file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    elif emit is not None:
        handler = _CallbackHandler(emit)
    else:
        handler = logging.StreamHandler()
    root.addHandler(handler)
    root.setLevel(config.log.level.upper())
    root.propagate = False


class _CallbackHandler(logging.Handler):
    def __init__(self, emit) -> None:
        super().__init__()
        self._emit = emit
        self.setFormatter(logging.Formatter("nettrust: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record.levelno, self.format(record))
        except Exception:  # logging must never break the answer path
            pass


class FailureLog:
    """The answer path's failures, one line per kind (``what`` and the exception's type), at most
    ``burst`` per ``interval`` seconds each (a hostile zone can make every query fail the same
    way; a traceback per query would flood the log); the traceback only on a kind's first line,
    and never for a ValueError (a malformed name or address says all in its message)."""

    def __init__(self, emit: Callable[[str], None], interval: float = 10.0, burst: int = 3) -> None:
        from .ratelimit import RateLimiter
        self._emit = emit
        self._limit = RateLimiter(interval=interval, burst=burst)

    def __call__(self, what: str, exc: BaseException) -> None:
        ok, suppressed = self._limit.allow((what, type(exc).__name__))
        if not ok:
            return
        more = " (%d similar suppressed)" % suppressed if suppressed else ""
        text = "nettrust: %s: %s: %s%s" % (what, type(exc).__name__, exc, more)
        if not isinstance(exc, ValueError) and suppressed == 0:
            import traceback
            text += " | " + "".join(traceback.format_exception(exc)).replace("\n", " | ")
        self._emit(text)

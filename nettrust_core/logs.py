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

"""Blocklists and allowlists from files: formats, a compact index with provenance, a loader with
bounded memory and a watcher that swaps the running resolver's index (see README "Blocklists")."""

from .formats import FORMATS
from .index import ListIndex, Match
from .loader import FileReport, ListSpec, Loader, loader_for
from .watcher import ListWatcher

__all__ = ["FORMATS", "FileReport", "ListIndex", "ListSpec", "ListWatcher", "Loader", "Match", "loader_for"]

"""``nettrust lists update``: re-read every configured list, say what changed since the last run.

Reads each file (the same parsers the resolver uses), reports its entries, its invalid lines
with their numbers, skipped rules, and the entries added and removed since the previous run,
whose entries are kept (sorted, gzip) under ``policy.lists_state``.  It never downloads: the
files are what the administrator's own timer wrote.  The running resolver picks changes up by
itself within ``policy.lists_check_interval``; this command is the report (and a check for a
timer script: ``--strict`` fails on invalid lines).

Memory: the entries of one file are held as strings while it is compared (~100 bytes each),
in this process only, never in the resolver.
"""

from __future__ import annotations

import builtins

import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable

from .formats import PREFIX, Entry, parse
from .loader import ListSpec, files_of

SHOWN = 10


@dataclass
class FileChange:
    list: str
    path: str
    format: str
    action: str
    entries: int = 0
    added: builtins.list[tuple[int, str]] = field(default_factory=builtins.list)     # (line, entry), sorted
    removed: builtins.list[str] = field(default_factory=builtins.list)
    invalid: builtins.list[tuple[int, str]] = field(default_factory=builtins.list)   # (line, message)
    skipped: builtins.list[tuple[int, str]] = field(default_factory=builtins.list)
    error: str | None = None
    first_run: bool = False

    def as_dict(self) -> dict:
        return {"list": self.list, "path": self.path, "format": self.format,
                "action": self.action, "entries": self.entries, "error": self.error,
                "first_run": self.first_run,
                "added": [{"line": n, "entry": e} for n, e in self.added],
                "removed": self.removed,
                "invalid": [{"line": n, "message": m} for n, m in self.invalid],
                "skipped": [{"line": n, "message": m} for n, m in self.skipped]}


def entry_text(entry: Entry) -> str:
    return ("@@" if entry.allow else "") + PREFIX[entry.kind] + entry.name


def update(specs: tuple[ListSpec, ...], state_dir: str, *, save: bool = True,
           progress: Callable[[str, int, int], None] | None = None) -> list[FileChange]:
    """One :class:`FileChange` per file of every list; the snapshots are rewritten when
    ``save``.  ``progress(path, bytes_done, bytes_total)`` follows the reading."""
    out = []
    for spec in specs:
        for path in files_of(spec):
            out.append(_one(spec, path, state_dir, save, progress))
    return out


def _one(spec: ListSpec, path: str, state_dir: str, save: bool, progress) -> FileChange:
    change = FileChange(spec.name, path, spec.format, spec.action)
    entries: dict[str, int] = {}
    try:
        total = os.path.getsize(path)
        with open(path, "rb") as raw:
            lines = _lines(raw, path, total, progress)
            for item in parse(spec.format, lines):
                if isinstance(item, Entry):
                    entries.setdefault(entry_text(item), item.line)
                elif item.invalid:
                    change.invalid.append((item.line, item.message))
                else:
                    change.skipped.append((item.line, item.message))
    except OSError as exc:
        change.error = exc.strerror or str(exc)
        return change
    change.entries = len(entries)
    snapshot = _snapshot_path(state_dir, spec, path)
    old = _read_snapshot(snapshot)
    if old is None:
        change.first_run = True
        old = set()
    change.added = sorted((line, e) for e, line in entries.items() if e not in old)
    change.removed = sorted(e for e in old if e not in entries)
    if save:
        _write_snapshot(snapshot, sorted(entries))
    return change


def _lines(raw, path: str, total: int, progress):
    done = 0
    for number, line in enumerate(raw):
        done += len(line)
        if progress is not None and number & 0x3FFF == 0:
            progress(path, done, total)
        yield line.decode("utf-8", "replace")
    if progress is not None:
        progress(path, done, total)


def _snapshot_path(state_dir: str, spec: ListSpec, path: str) -> str:
    digest = hashlib.sha256(f"{spec.name}\0{path}\0{spec.format}".encode()).hexdigest()[:20]
    return os.path.join(state_dir, f"{digest}.entries.gz")


def _read_snapshot(path: str) -> set[str] | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return {line.rstrip("\n") for line in f}
    except FileNotFoundError:
        return None
    except (OSError, EOFError, UnicodeDecodeError):
        return None                     # damaged: start again


def _write_snapshot(path: str, entries: list[str]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".snapshot-")
    try:
        with os.fdopen(fd, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1) as z:
            z.write("".join(e + "\n" for e in entries).encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def format_change(c: FileChange, verbose: bool = False) -> list[str]:
    """The lines ``nettrust lists update`` prints for one file."""
    if c.error:
        return [f"{c.list}: {c.path}: ERROR {c.error} (the resolver keeps the version it loaded "
                "before, if any)"]
    since = "first run" if c.first_run else f"+{len(c.added)} -{len(c.removed)}"
    lines = [f"{c.list}: {c.path} ({c.format}, {c.action}): {c.entries} entries, {since}, "
             f"{len(c.invalid)} invalid, {len(c.skipped)} skipped"]
    limit = None if verbose else SHOWN
    for number, message in c.invalid[:limit]:
        lines.append(f"  {c.path}:{number}: invalid: {message}")
    if limit is not None and len(c.invalid) > limit:
        lines.append(f"  ... {len(c.invalid) - limit} more invalid line(s) (--verbose)")
    if verbose:
        for number, message in c.skipped:
            lines.append(f"  {c.path}:{number}: skipped: {message}")
    if not c.first_run:
        for number, entry in c.added[:limit]:
            lines.append(f"  + {entry}  (line {number})")
        if limit is not None and len(c.added) > limit:
            lines.append(f"  ... {len(c.added) - limit} more added")
        for entry in c.removed[:limit]:
            lines.append(f"  - {entry}")
        if limit is not None and len(c.removed) > limit:
            lines.append(f"  ... {len(c.removed) - limit} more removed")
    return lines

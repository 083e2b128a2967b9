"""Reading the configured lists into a :class:`~.index.ListIndex`, with a report of every file.

Files are streamed line by line; each file's entries become two compact arrays (8 bytes per key,
8 per source+line), kept per file so a reload re-reads only the files whose size, mtime or inode
changed.  ``max_entries`` bounds the whole: entries past it are refused, counted and reported.

A file that cannot be read keeps its last good version when one was loaded (the admin's timer
may be rewriting it: write to a temporary name and rename); the failure is reported.
"""

from __future__ import annotations

import builtins

import logging
import os
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..patterns import MAX_NAME_LENGTH
from .formats import DEEP, FAST_EXCLUDED, FAST_LINES, Entry, parse
from .index import MAX_SOURCES, SALT, HashTable, ListIndex, Shape, Source, key_of

log = logging.getLogger("nettrust.lists")
#: Problems kept per file with their line numbers (all are counted).
MAX_PROBLEMS_KEPT = 1000


@dataclass(frozen=True)
class ListSpec:
    """One ``[[policy.lists]]`` table."""

    name: str
    path: str
    format: str
    action: str = "deny"
    category: str | None = None


@dataclass
class FileReport:
    list: str
    path: str
    entries: int = 0
    invalid: int = 0
    skipped: int = 0
    refused: int = 0                        # past max_entries
    #: (line, "invalid"/"skipped", message), the first MAX_PROBLEMS_KEPT.
    problems: builtins.list[tuple[int, str, str]] = field(default_factory=builtins.list)
    error: str | None = None                # unreadable: the last good version is kept
    reloaded: bool = False                  # read this time (False: unchanged, reused)


@dataclass
class _Chunk:
    signature: tuple
    deny_keys: array
    deny_lines: array
    allow_keys: array
    allow_lines: array
    report: FileReport
    #: Which kinds each side holds (see index.Shape): lets lookups skip probes that cannot hit.
    deny_shape: Shape = field(default_factory=Shape)
    allow_shape: Shape = field(default_factory=Shape)


def files_of(spec: ListSpec) -> list[str]:
    """The files a list names: its path, or the regular files of its directory (sorted; hidden
    and backup files skipped)."""
    if os.path.isdir(spec.path):
        out = []
        for entry in sorted(os.scandir(spec.path), key=lambda e: e.name):
            if entry.name.startswith(".") or entry.name.endswith(("~", ".tmp", ".part")):
                continue
            if entry.is_file():
                out.append(entry.path)
        return out
    return [spec.path]


def signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Loader:
    """Builds indexes from the configured lists, reusing unchanged files' chunks."""

    def __init__(self, specs: Iterable[ListSpec], *, max_entries: int = 2_000_000) -> None:
        self.specs = tuple(specs)
        self.max_entries = max_entries
        self._chunks: dict[tuple[str, str], _Chunk] = {}
        self.generation = 0

    def signatures(self) -> dict[tuple[str, str], tuple | None]:
        """What the watcher compares: every file of every list and its stat signature."""
        return {(spec.name, path): signature(path) for spec in self.specs
                for path in files_of(spec)}

    def load(self, progress: Callable[[str, int], None] | None = None
             ) -> tuple[ListIndex, list[FileReport]]:
        """A new index and one report per file.  ``progress(path, bytes_read)`` is called as
        files are read (for a progress bar)."""
        sources: list[Source] = []
        chunks: list[tuple[int, _Chunk]] = []
        reports: list[FileReport] = []
        seen: set[tuple[str, str]] = set()
        budget = self.max_entries
        for spec in self.specs:
            for path in files_of(spec):
                key = (spec.name, path)
                seen.add(key)
                if len(sources) >= MAX_SOURCES:
                    reports.append(FileReport(spec.name, path, error=f"more than {MAX_SOURCES} "
                                              "list files: not loaded"))
                    continue
                index = len(sources)
                sources.append(Source(spec.name, path, spec.action, spec.category))
                chunk = self._chunk(spec, path, index, budget, progress)
                if chunk is None:
                    reports.append(FileReport(spec.name, path, error=_missing(path)))
                    continue
                budget -= len(chunk.deny_keys) + len(chunk.allow_keys)
                chunks.append((index, chunk))
                reports.append(chunk.report)
        for gone in set(self._chunks) - seen:      # a file left a listed directory
            del self._chunks[gone]
        self.generation += 1
        built = ListIndex(
            HashTable.from_parts([(c.deny_keys, c.deny_lines, i) for i, c in chunks],
                                 Shape.union(c.deny_shape for _, c in chunks)),
            HashTable.from_parts([(c.allow_keys, c.allow_lines, i) for i, c in chunks],
                                 Shape.union(c.allow_shape for _, c in chunks)),
            tuple(sources), self.generation)
        return built, reports

    def _chunk(self, spec: ListSpec, path: str, index: int, budget: int,
               progress) -> _Chunk | None:
        key = (spec.name, path)
        sig = signature(path)
        old = self._chunks.get(key)
        if old is not None and sig is not None and old.signature == sig \
                and old.report.refused == 0:
            old.report.reloaded, old.report.error = False, None
            return old
        try:
            chunk = _read(spec, path, sig, budget, progress)
        except OSError as exc:
            if old is not None:
                old.report.error = f"{exc.strerror or exc}; keeping the version loaded before"
                old.report.reloaded = False
                log.error("list %s: cannot read %s (%s): keeping the version loaded before",
                          spec.name, path, exc.strerror or exc)
                return old
            log.error("list %s: cannot read %s: %s", spec.name, path, exc.strerror or exc)
            return None
        self._chunks[key] = chunk
        return chunk


def _missing(path: str) -> str:
    return "missing" if not os.path.exists(path) else "unreadable"


def _read(spec: ListSpec, path: str, sig, budget: int, progress) -> _Chunk:
    report = FileReport(spec.name, path, reloaded=True)
    deny_keys, deny_lines, allow_keys, allow_lines = (array("q") for _ in range(4))
    list_allows = spec.action == "allow"
    fast = FAST_LINES.get(spec.format)
    deny_shape, allow_shape = Shape(), Shape()

    def add(number: int, kind: int, name: str, allow: bool) -> None:
        nonlocal budget
        if budget <= 0:
            report.refused += 1
            if report.refused == 1:
                _problem(report, number, "invalid", "policy.lists_max_entries reached: this "
                         "entry and every later one are not loaded")
            return
        budget -= 1
        if allow or list_allows:
            allow_keys.append(key_of(name, kind))
            allow_lines.append(number)
            allow_shape.add(kind, name)
        else:
            deny_keys.append(key_of(name, kind))
            deny_lines.append(number)
            deny_shape.add(kind, name)
        report.entries += 1

    def slow(items) -> None:
        for item in items:
            if isinstance(item, Entry):
                add(item.line, item.kind, item.name, item.allow)
            elif item.invalid:
                report.invalid += 1
                _problem(report, item.line, "invalid", item.message)
            else:
                report.skipped += 1
                _problem(report, item.line, "skipped", item.message)

    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        lines = _counting(f, path, progress)
        if fast is None:
            slow(parse(spec.format, lines))
        else:
            match, salts = fast[0].fullmatch, tuple(SALT[k] for k in fast[1])
            keys, numbers = (allow_keys, allow_lines) if list_allows else (deny_keys, deny_lines)
            shape = allow_shape if list_allows else deny_shape
            deep = DEEP in fast[1]
            per_line = len(salts)
            for number, line in enumerate(lines, 1):
                m = match(line)
                if m is not None:
                    name = m[1]
                    if len(name) <= MAX_NAME_LENGTH and name not in FAST_EXCLUDED \
                            and budget >= per_line:
                        h = hash(name)           # key_of(), inlined: the loop runs 1M times
                        for salt in salts:
                            keys.append(h ^ salt or 1)
                            numbers.append(number)
                        budget -= per_line
                        report.entries += per_line
                        if deep:
                            shape.add(DEEP, name)
                        continue
                # Anything else (comments, upper case, IDNA, errors): the parser, this line.
                slow(item._replace(line=number) for item in parse(spec.format, (line,)))
    if report.invalid:
        first = next(p for p in report.problems if p[1] == "invalid")
        log.warning("list %s: %s: %d invalid line(s), first at line %d: %s; the other lines "
                    "are loaded", spec.name, path, report.invalid, first[0], first[2])
    return _Chunk(sig, deny_keys, deny_lines, allow_keys, allow_lines, report, deny_shape,
                  allow_shape)


def _problem(report: FileReport, line: int, what: str, message: str) -> None:
    if len(report.problems) < MAX_PROBLEMS_KEPT:
        report.problems.append((line, what, message))


def _counting(f, path: str, progress):
    if progress is None:
        yield from f
        return
    read = 0
    for number, line in enumerate(f):
        read += len(line)
        if number & 0xFFFF == 0:
            progress(path, read)
        yield line
    progress(path, read)


def loader_for(config) -> Loader:
    """The loader of a configuration's ``[[policy.lists]]``."""
    p = config.policy
    return Loader(getattr(p, "lists", ()), max_entries=getattr(p, "lists_max_entries", 2_000_000))

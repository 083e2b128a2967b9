"""Reading a configuration file into a :class:`~.model.Config`, with errors that say where.

Every section and key is read through its declaration (:mod:`.model`): the key's kind converts
the written value, its checks run, then the section's cross-key checks.  Any refusal becomes a
:class:`~nettrust_core.errors.ConfigError` naming the file, the dotted key (``policy.allow[3]``)
and the line where that key or array element is written (:mod:`.locate`).
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any

from ..errors import ConfigError
from . import messages
from .declare import Section
from .kinds import Invalid
from .locate import Path, SourceMap, format_path, locate
from .model import REPLACED_KEYS, SCHEMA, SECTIONS, Config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at ``path``."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror or exc}",
                          file=name) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=name,
                          line=data.count(b"\n", 0, exc.start) + 1) from None
    return parse_config(text, path=name)


def parse_config(text: str, path: str = "<string>") -> Config:
    """Validate the configuration in ``text``; ``path`` is only used to name it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, path) from None
    source = SourceMap(text)
    doc = _Document(path, raw, source)
    for name, value in raw.items():
        if name not in SCHEMA:
            raise doc.error(messages.unknown_section(name, value, SCHEMA), (name,))
    values: dict[str, Any] = {}
    for spec in SECTIONS:
        read = _SectionReader(doc, spec).read()
        if spec.attr is None:
            values.update(read)
        else:
            values[spec.attr] = read
    return Config(path=path, **values, source=source)


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: str) -> ConfigError:
    message = str(exc)
    line = None
    match = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if match:
        line = int(match.group(1))
        message = f"{message[:match.start()]} (column {match.group(2)})"
        if message.startswith(("Cannot overwrite a value", "Cannot declare")):
            found = _duplicate(text, line)
            if found:
                key, first, table = found
                return ConfigError(messages.duplicate(key, first, line, table), file=path,
                                   key=key, line=line)
    elif message.endswith(" (at end of document)"):
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        message = message[:-len(" (at end of document)")] + " (at the end of the file)"
    return ConfigError(f"TOML syntax error: {message}", file=path, line=line)


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _key_parts(text: str) -> tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in re.findall(r""""[^"]*"|'[^']*'|[^.]+""", text))


def _duplicate(text: str, line: int) -> tuple[str, int | None, bool] | None:
    """The dotted key (or table) that ``line`` writes a second time, and the line of the first."""
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return None
    this = lines[line - 1]
    header = _HEADER.match(this)
    if header:
        path = _key_parts(header.group(1))
    else:
        key = _KEY.match(this)
        if not key:
            return None
        table: tuple[str, ...] = ()
        for before in reversed(lines[:line - 1]):
            h = _HEADER.match(before)
            if h:
                table = _key_parts(h.group(1))
                break
        path = table + _key_parts(key.group(1))
    # The lines before this one are what tomllib accepted; the first writing is among them.
    first = locate("\n".join(lines[:line - 1]) + "\n").get(path)
    return format_path(path), first, bool(header)


class _Document:
    def __init__(self, file: str, raw: dict[str, Any], source: SourceMap) -> None:
        self.file, self.raw, self.source = file, raw, source

    def error(self, message: str, path: Path, fallback: Path | None = None) -> ConfigError:
        paths = (path,) if fallback is None else (path, fallback)
        return ConfigError(message, file=self.file, key=format_path(path),
                           line=self.source.line(*paths))


class _SectionReader:
    """One table of the file, read key by key through the declaration."""

    def __init__(self, doc: _Document, spec: Section) -> None:
        self.doc, self.spec = doc, spec
        data = doc.raw.get(spec.name, {})
        if not isinstance(data, dict):
            raise doc.error(messages.wrong_type("a table", data), (spec.name,))
        self.data: dict[str, Any] = data
        for name in data:
            if name not in SCHEMA[spec.name]:
                raise doc.error(messages.unknown_key(spec.name, name, SCHEMA, REPLACED_KEYS),
                                (spec.name, name))
        self.values: dict[str, Any] = {}

    def read(self) -> Any:
        """The root's own keys as a dict; any other section as its dataclass, checked."""
        for declared in self.spec.keys:
            self.value(declared.name)
        if self.spec.attr is None:
            return self.values
        built = self.spec.cls(**self.values)
        for check in self.spec.checks:
            try:
                check(built)
            except Invalid as exc:
                raise self._located(exc, exc.key or "") from None
        return built

    def value(self, name: str) -> Any:
        """The value of key ``name``: read on first use (a key may use another's value)."""
        if name not in self.values:
            declared = self.spec.key(name)
            if name not in self.data:
                self.values[name] = declared.value
            else:
                try:
                    self.values[name] = declared.read(self.data[name], self.value)
                except Invalid as exc:
                    raise self._located(exc, exc.key or name) from None
        return self.values[name]

    def _located(self, exc: Invalid, key: str) -> ConfigError:
        path: Path = (self.spec.name, key) if exc.index is None else \
            (self.spec.name, key, exc.index)
        field = getattr(exc, "field", None)
        if exc.index is not None and field:
            path += (field,)
        fallback = None if exc.fallback is None else (self.spec.name, exc.fallback)
        return self.doc.error(exc.message, path, fallback)

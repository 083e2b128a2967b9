"""Where a key or an array element is written in a TOML document, to blame the right line.

``tomllib`` parses but keeps no positions, so this small scanner walks the same text and records
the 1-based line of every table header, key (dotted keys and inline tables included) and array
element, keyed by its path: ``("policy", "allow", 3)`` is the fourth element of ``policy.allow``.

It is consulted only to explain an error in a document that ``tomllib`` already accepted, so it
follows valid TOML and never raises: whatever it cannot follow is simply not found, and the
caller falls back to a shorter path, then to no line at all.
"""

from __future__ import annotations

import bisect
import re
import tomllib

from ..errors import NetTrustError

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[,\]}\n#]")
_PATH_PART = re.compile(r'"((?:[^"\\]|\\.)*)"|([^.\[\]"]+)|\[(\d+)\]')


class SourceMap:
    """Lines of the keys of one TOML text; scanned on first use only."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[Path, int] | None = None

    def line(self, *paths: Path) -> int | None:
        """The line of the first of ``paths`` written, else of the longest prefix of one written
        (an array element falls back to its key, a key to its table), else None."""
        if self._lines is None:
            self._lines = locate(self._text)
        for end in range(max(map(len, paths), default=0), 0, -1):
            for path in paths:
                if len(path) >= end and path[:end] in self._lines:
                    return self._lines[path[:end]]
        return None


def locate(text: str) -> dict[Path, int]:
    """Map every path written in ``text`` to the line where it is first written."""
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (_Lost, IndexError, ValueError, StopIteration):
        pass            # best effort: keep what was found before the scanner lost its way
    return scanner.lines


def format_path(path: Path) -> str:
    """``("policy", "allow", 3)`` -> ``"policy.allow[3]"``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{key}" if out else key
    return out


def parse_path(key: str) -> Path:
    """The inverse of :func:`format_path`: ``"policy.allow[3]"`` -> ``("policy", "allow", 3)``."""
    path: list[str | int] = []
    for match in _PATH_PART.finditer(key):
        quoted, bare, index = match.groups()
        if index is not None:
            path.append(int(index))
        else:
            path.append(bare if bare is not None else quoted.replace('\\"', '"'))
    return tuple(path)



class _Lost(NetTrustError, ValueError):
    """The scanner met something it does not follow."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[Path, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._arrays_of_tables: dict[Path, int] = {}     # path -> index of the latest [[path]]

    # -- positions ----------------------------------------------------------------------------

    def _record(self, path: Path, pos: int) -> None:
        self.lines.setdefault(path, bisect.bisect_left(self._newlines, pos) + 1)

    def _record_all(self, path: Path, pos: int) -> None:
        for end in range(1, len(path) + 1):
            self._record(path[:end], pos)

    # -- whitespace ---------------------------------------------------------------------------

    def _skip_spaces(self) -> None:
        s = self.s
        while self.i < len(s) and s[self.i] in " \t\r":
            self.i += 1

    def _skip_blank(self) -> None:
        """Spaces, comments and newlines."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip_spaces()
        if not self.s.startswith(token, self.i):
            raise _Lost(token)
        self.i += len(token)

    # -- grammar ------------------------------------------------------------------------------

    def document(self) -> None:
        table: Path = ()
        while True:
            self._skip_blank()
            if self.i >= len(self.s):
                return
            start = self.i
            if self.s.startswith("[[", start):
                self.i += 2
                key = self._key()
                self._expect("]]")
                path = self._resolve(key[:-1]) + key[-1:]
                index = self._arrays_of_tables.get(path, -1) + 1
                self._arrays_of_tables[path] = index
                table = path + (index,)
                self._record_all(table, start)
            elif self.s[start] == "[":
                self.i += 1
                table = self._resolve(self._key())
                self._expect("]")
                self._record_all(table, start)
            else:
                self._keyval(table)

    def _resolve(self, key: tuple[str, ...]) -> Path:
        """A header's key as a path, entering the latest table of any array of tables."""
        path: Path = ()
        for part in key:
            path += (part,)
            if path in self._arrays_of_tables:
                path += (self._arrays_of_tables[path],)
        return path

    def _key(self) -> tuple[str, ...]:
        parts = []
        while True:
            self._skip_spaces()
            start = self.i
            if self.s[start] in "\"'":
                self._skip_string(self.s[start])
                # Let tomllib decode the quoted key, escapes and all.
                parts.append(next(iter(tomllib.loads(self.s[start:self.i] + " = 0"))))
            else:
                match = _BARE_KEY.match(self.s, start)
                if match is None:
                    raise _Lost("key")
                parts.append(match.group())
                self.i = match.end()
            self._skip_spaces()
            if not self.s.startswith(".", self.i):
                return tuple(parts)
            self.i += 1

    def _keyval(self, table: Path) -> None:
        start = self.i
        path = table + self._key()
        self._record_all(path, start)
        self._expect("=")
        self._skip_spaces()
        self._value(path)

    def _value(self, path: Path) -> None:
        s, i = self.s, self.i
        if s.startswith('"""', i) or s.startswith("'''", i):
            self._skip_multiline_string(s[i:i + 3])
        elif s[i] in "\"'":
            self._skip_string(s[i])
        elif s[i] == "[":
            self._array(path)
        elif s[i] == "{":
            self._inline_table(path)
        else:                                   # number, boolean, date-time
            match = _SCALAR_END.search(s, i)
            self.i = len(s) if match is None else match.start()

    def _array(self, path: Path) -> None:
        self.i += 1
        index = 0
        while True:
            self._skip_blank()
            if self.s[self.i] == "]":
                self.i += 1
                return
            self._record(path + (index,), self.i)
            self._value(path + (index,))
            self._skip_blank()
            if self.s[self.i] == ",":
                self.i += 1
                index += 1
            elif self.s[self.i] == "]":
                self.i += 1
                return
            else:
                raise _Lost("array")

    def _inline_table(self, path: Path) -> None:
        self.i += 1
        while True:
            self._skip_blank()
            if self.s[self.i] == "}":
                self.i += 1
                return
            self._keyval(path)
            self._skip_blank()
            if self.s[self.i] == ",":
                self.i += 1
            elif self.s[self.i] == "}":
                self.i += 1
                return
            else:
                raise _Lost("inline table")

    def _skip_string(self, quote: str) -> None:
        s, i = self.s, self.i + 1
        while s[i] != quote:
            if s[i] == "\n":
                raise _Lost("string")
            i += 2 if (s[i] == "\\" and quote == '"') else 1
        self.i = i + 1

    def _skip_multiline_string(self, delimiter: str) -> None:
        s, i = self.s, self.i + 3
        while not s.startswith(delimiter, i):
            if i >= len(s):
                raise _Lost("multi-line string")
            i += 2 if (s[i] == "\\" and delimiter == '"""') else 1
        i += 3
        for _ in range(2):                     # up to two quotes may end the content
            if i < len(s) and s[i] == delimiter[0]:
                i += 1
        self.i = i

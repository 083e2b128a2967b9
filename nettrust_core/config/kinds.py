"""Kinds of configuration values: how one key's TOML value is read, written back and described.

A :class:`Kind` turns the value written in the file into the value the code uses (``"5m"`` ->
``300.0``, ``"192.0.2.0/24"`` -> an ``ip_network``), writes it back in file form for
``nettrust check --effective``, and describes itself for the README's reference.  A bad value
raises :class:`Invalid`; the loader adds the file, key and line.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Generic, Iterable, NamedTuple, TypeVar
import ipaddress

from ..durations import format_duration, parse_duration
from ..errors import ConfigError
from .messages import choices, did_you_mean, show, wrong_type

T = TypeVar("T")
#: The value of another key of the same section, by name (for kinds that depend on one).
Sibling = Callable[[str], Any]

#: nftables' standard priority names (inet family, filter-type chains).
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
PRIORITY_MIN, PRIORITY_MAX = -400, 400
_PRIORITY = re.compile(r"(raw|mangle|filter|security)\s*(?:([+-])\s*([0-9]+))?")


class Invalid(ConfigError):
    """A value is refused: ``message`` says why.  ``index`` blames an element of an array;
    ``key`` (with ``fallback``, the key to blame when that one is not written) blames another key
    of the section than the one being read; ``field`` a key of that element (array of tables).  The loader re-raises it with the file and line."""

    def __init__(self, message: str, *, index: int | None = None, key: str | None = None,
                 fallback: str | None = None, field: str | None = None) -> None:
        super().__init__(message, key=key)
        #: ``field``: a key inside the ``index``-th table of an array of tables.
        self.index, self.fallback, self.field = index, fallback, field


class Kind(Generic[T]):
    """The base: subclasses define ``read``, ``dump`` and ``describe``."""

    def read(self, value: Any, sibling: Sibling) -> T:
        raise NotImplementedError

    def dump(self, value: T) -> Any:
        """The value in file form (TOML/JSON types only)."""
        return value

    def describe(self) -> str:
        """The type, for the reference: "boolean", "integer 1..64", ..."""
        raise NotImplementedError


class Boolean(Kind[bool]):
    def read(self, value: Any, sibling: Sibling) -> bool:
        if not isinstance(value, bool):
            raise Invalid(wrong_type("a boolean (true or false)", value))
        return value

    def describe(self) -> str:
        return "boolean"


class Integer(Kind[int]):
    """An integer from ``low`` to ``high`` (no upper bound when ``high`` is None)."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high

    def read(self, value: Any, sibling: Sibling) -> int:
        expected = "an integer" if self.high is None else \
            f"an integer from {self.low} to {self.high}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(wrong_type(expected, value))
        if self.high is None and value < self.low:
            raise Invalid(f"must be at least {self.low}")
        if self.high is not None and not self.low <= value <= self.high:
            raise Invalid(f"{value} is outside {self.low}..{self.high}")
        return value

    def describe(self) -> str:
        return f"integer ≥ {self.low}" if self.high is None else \
            f"integer {self.low}..{self.high}"


class Text(Kind[Any]):
    """A string, passed through ``convert`` (which may normalise it, or refuse it with a
    ``ValueError``); with ``empty_is_none``, "" is then read as None (written back as "")."""

    def __init__(self, *, empty_is_none: bool = False,
                 convert: Callable[[str], str] | None = None) -> None:
        self.empty_is_none, self.convert = empty_is_none, convert

    def read(self, value: Any, sibling: Sibling) -> Any:
        if not isinstance(value, str):
            raise Invalid(wrong_type("a string", value))
        if self.convert is not None:
            try:
                value = self.convert(value)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        return None if self.empty_is_none and not value else value

    def dump(self, value: Any) -> Any:
        return value or ""

    def describe(self) -> str:
        return 'string ("" for none)' if self.empty_is_none else "string"


class Choice(Kind[str]):
    def __init__(self, values: Iterable[str]) -> None:
        self.values = tuple(values)

    def read(self, value: Any, sibling: Sibling) -> str:
        if not isinstance(value, str):
            raise Invalid(wrong_type("a string", value))
        if value not in self.values:
            raise Invalid(f"expected one of {choices(self.values)}, found {show(value)}"
                          f"{did_you_mean(value, self.values)}")
        return value

    def describe(self) -> str:
        return "one of " + choices(self.values)


class Duration(Kind[float]):
    """Seconds, written as a number or a string with units (``"1h30m"``); read as float seconds."""

    def read(self, value: Any, sibling: Sibling) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise Invalid(wrong_type('a duration (seconds, or a string like "30s", "5m", '
                                     '"1h30m")', value))
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    def dump(self, value: float) -> str:
        return format_duration(value)

    def describe(self) -> str:
        return "duration"


class Each(Kind[tuple[Any, ...]]):
    """An array of strings, each converted by ``convert`` (a bad one is blamed on its own line).

    ``unique`` drops repeats (first kept); ``always`` is put in front of what is written;
    ``uses`` names sibling keys passed to ``convert`` as keyword arguments.
    """

    def __init__(self, convert: Callable[..., Any], element: str, *, unique: bool = True,
                 always: tuple[Any, ...] = (), uses: tuple[str, ...] = ()) -> None:
        self.convert, self.element = convert, element
        self.unique, self.always, self.uses = unique, always, uses

    def read(self, value: Any, sibling: Sibling) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Invalid(wrong_type("an array of strings", value))
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise Invalid(wrong_type("a string", item), index=index)
            try:
                out.append(self.convert(item, **{name: sibling(name) for name in self.uses}))
            except ValueError as exc:
                raise Invalid(str(exc), index=index) from None
        items = self.always + tuple(out)
        return tuple(dict.fromkeys(items)) if self.unique else items

    def dump(self, value: tuple[Any, ...]) -> list[str]:
        return [str(item) for item in value]

    def describe(self) -> str:
        return f"array of {self.element}"


class Priority(Kind[int]):
    """A chain priority: an integer, or an nftables name with an offset (``"filter-10"``)."""

    def read(self, value: Any, sibling: Sibling) -> int:
        expected = (f"an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, or a name ("
                    f"{choices(PRIORITY_NAMES)}) optionally with an offset like \"filter-10\"")
        if isinstance(value, str):
            match = _PRIORITY.fullmatch(value.strip())
            if match is None:
                raise Invalid(f"expected {expected}, found {show(value)}")
            name, sign, offset = match.groups()
            number = PRIORITY_NAMES[name] + (int(offset) * (-1 if sign == "-" else 1)
                                             if sign else 0)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise Invalid(wrong_type(expected, value))
        if not PRIORITY_MIN <= number <= PRIORITY_MAX:
            raise Invalid(f"{show(value)} is {number}, outside {PRIORITY_MIN}..{PRIORITY_MAX}")
        return number

    def describe(self) -> str:
        return f'integer {PRIORITY_MIN}..{PRIORITY_MAX}, or a name like "filter-10"'


class HostPort(NamedTuple):
    """``metrics.listen``: an IP address and a port."""

    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


class Listen(Kind[HostPort]):
    """``ADDRESS:PORT``, the address an IP literal (IPv6 in brackets)."""

    def read(self, value: Any, sibling: Sibling) -> HostPort:
        if not isinstance(value, str):
            raise Invalid(wrong_type("a string", value))
        host, _, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            number = int(port)
            if not 1 <= number <= 65535:
                raise ValueError
        except ValueError:
            raise Invalid(f"expected ADDRESS:PORT like \"127.0.0.1:9531\" or \"[::1]:9531\", "
                          f"found {show(value)}") from None
        return HostPort(host, number)

    def dump(self, value: HostPort) -> str:
        return str(value)

    def describe(self) -> str:
        return "ADDRESS:PORT"


class Field(NamedTuple):
    """One key of the tables of a :class:`Tables` array."""

    name: str
    kind: Kind[Any]
    required: bool = False
    default: Any = None          # the value (already read) when not written


class Tables(Kind[tuple[Any, ...]]):
    """An array of tables (``[[policy.lists]]``), each read into ``build(**fields)``.

    A bad value is blamed on its own line (``policy.lists[2].format``); unknown and missing keys
    name the table.  ``build`` may refuse the whole table with a ``ValueError``.
    """

    def __init__(self, fields: tuple[Field, ...], build: Callable[..., Any], element: str,
                 dump: Callable[[Any], dict[str, Any]]) -> None:
        self.fields, self.build, self.element, self._dump = fields, build, element, dump

    def read(self, value: Any, sibling: Sibling) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Invalid(wrong_type(f"an array of tables ([[...]] with {self.element})", value))
        known = {f.name: f for f in self.fields}
        out = []
        for index, table in enumerate(value):
            if not isinstance(table, dict):
                raise Invalid(wrong_type("a table", table), index=index)
            for name in table:
                if name not in known:
                    raise Invalid(f"unknown key {name!r}{did_you_mean(name, known)}; known "
                                  f"keys: {', '.join(known)}", index=index, field=name)
            values = {}
            for f in self.fields:
                if f.name not in table:
                    if f.required:
                        raise Invalid(f"missing {f.name!r} (each table needs "
                                      f"{', '.join(g.name for g in self.fields if g.required)})",
                                      index=index)
                    values[f.name] = f.default
                    continue
                try:
                    values[f.name] = f.kind.read(table[f.name], sibling)
                except Invalid as exc:
                    raise Invalid(exc.message, index=index, field=f.name) from None
            try:
                out.append(self.build(**values))
            except ValueError as exc:
                raise Invalid(str(exc), index=index) from None
        return tuple(out)

    def dump(self, value: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [self._dump(item) for item in value]

    def describe(self) -> str:
        return f"array of tables ({self.element})"

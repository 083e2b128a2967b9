"""Domain names, name patterns and zones.

Names are compared in one canonical form, made by :func:`normalize_name`: lower case, no trailing
dot, internationalised labels IDNA-encoded (``bücher.de`` -> ``xn--bcher-kva.de``).

Pattern grammar (:func:`normalize_pattern`, :class:`PatternSet`):

==================  =========================================================================
``example.com``     that name only
``*.example.com``   names exactly one label below: ``www.example.com``, not ``example.com``,
                    not ``a.www.example.com``
``**.example.com``  names any depth below: ``www.example.com``, ``a.www.example.com``, not
                    ``example.com`` (list ``example.com`` too to include the apex)
``*`` or ``**``     every name
==================  =========================================================================

A wildcard is only ever the whole leftmost label; ``www*.example.com`` or ``a.*.example.com``
are refused.  Zones (:class:`ZoneSet`) are plain names with suffix semantics: a zone covers itself
and everything below it.

The matchers take names that are **already normalized**: normalize a query name once with
:func:`normalize_name` (cheap for names already in canonical form) and hand the result to every
matcher.  Matchers do not re-check, so an upper-case or trailing-dot name simply does not match.
Each lookup costs one dictionary probe per label of the name, whatever the number of patterns.
"""

from __future__ import annotations

import re
from encodings import idna
from typing import Final, Iterable, Iterator

from .errors import InvalidValue

MAX_NAME_LENGTH: Final = 253
MAX_LABEL_LENGTH: Final = 63

_LABEL = re.compile(r"[a-z0-9_-]+")
# A name already in canonical form: the fast path of normalize_name.
_CANONICAL = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
_OTHER_DOTS = re.compile("[\u3002\uff0e\uff61]")     # IDNA's ideographic and full-width dots
_EVERYTHING = ("*", "**")


def normalize_name(name: str) -> str:
    """Return the canonical form of a domain name, or raise :class:`ValueError` saying why not.

    Lower-cases, strips one trailing dot, IDNA-encodes non-ASCII labels (IDNA 2003, the
    standard library's ``encodings.idna``), and checks that every label is 1 to 63 characters of
    letters, digits, ``-`` and ``_``, and the whole name at most 253 characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"a domain name must be a string, not {type(name).__name__}")
    if len(name) <= MAX_NAME_LENGTH and _CANONICAL.fullmatch(name):
        return name
    try:
        return _canonical(name)
    except ValueError as exc:
        raise InvalidValue(f"invalid domain name {name!r}: {exc}") from None


def normalize_pattern(pattern: str) -> str:
    """Return the canonical form of a name pattern (see the module doc), or raise ValueError."""
    if not isinstance(pattern, str):
        raise TypeError(f"a name pattern must be a string, not {type(pattern).__name__}")
    if pattern in _EVERYTHING:
        return pattern
    prefix, rest = "", pattern
    for wildcard in ("**.", "*."):
        if pattern.startswith(wildcard):
            prefix, rest = wildcard, pattern[len(wildcard):]
            break
    try:
        if "*" in rest:
            raise InvalidValue("a wildcard must be the whole leftmost label ('*.example.com' for "
                             "one label below, '**.example.com' for any depth) or the whole "
                             "pattern ('*')")
        if rest.startswith(".") and not prefix:
            raise InvalidValue("a leading dot is not a wildcard; write '**.example.com' for the "
                             "names below example.com and add 'example.com' for the name itself")
        return prefix + _canonical(rest)
    except ValueError as exc:
        raise InvalidValue(f"invalid pattern {pattern!r}: {exc}") from None


def normalize_zone(zone: str) -> str:
    """Return the canonical form of a zone name; ``"."`` (the root, every name) is kept as is."""
    if not isinstance(zone, str):
        raise TypeError(f"a zone must be a string, not {type(zone).__name__}")
    if zone == ".":
        return zone
    if "*" in zone:
        raise InvalidValue(f"invalid zone {zone!r}: zones are plain names without wildcards; a "
                         "zone already covers every name below it")
    try:
        return _canonical(zone)
    except ValueError as exc:
        raise InvalidValue(f"invalid zone {zone!r}: {exc}") from None


def _canonical(name: str) -> str:
    """The slow path of normalization; ValueError messages say only what is wrong."""
    if not name.isascii():
        name = _OTHER_DOTS.sub(".", name)
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidValue("the name is empty")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if not label:
            raise InvalidValue("empty label (two dots in a row, or a leading dot)")
        if not label.isascii():
            try:
                label = idna.ToASCII(label).decode("ascii")
            except UnicodeError as exc:
                raise InvalidValue(f"label {label!r} cannot be IDNA-encoded ({exc})") from None
        label = label.lower()
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidValue(f"label {label[:20]!r}... is {len(label)} characters long; at "
                             f"most {MAX_LABEL_LENGTH} are allowed")
        if not _LABEL.fullmatch(label):
            bad = next(ch for ch in label if not _LABEL.fullmatch(ch))
            raise InvalidValue(f"label {label!r} contains {bad!r}; only letters, digits, '-' and "
                             "'_' are allowed")
        labels[index] = label
    result = ".".join(labels)
    if len(result) > MAX_NAME_LENGTH:
        raise InvalidValue(f"the name is {len(result)} characters long; at most "
                         f"{MAX_NAME_LENGTH} are allowed")
    return result


class _GivenSet:
    """What both matchers share: the distinct entries as given (canonical form → first spelling)."""

    __slots__ = ()
    _given: dict[str, str]

    def __iter__(self) -> Iterator[str]:
        return iter(self._given.values())

    def __len__(self) -> int:
        return len(self._given)

    def __bool__(self) -> bool:
        return bool(self._given)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<{len(self)} entries>)"


class PatternSet(_GivenSet):
    """A set of name patterns, matched in one dictionary probe per label.

    Built from pattern strings (:class:`ValueError` names the first bad one).
    :meth:`matches` returns the pattern, as it was given, that matched, preferring the most
    specific: an exact name, then ``*.parent``, then the nearest ``**.`` suffix, then ``*``/``**``.
    """

    __slots__ = ("_exact", "_one", "_deep", "_everything", "_given")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._exact: dict[str, str] = {}      # name -> pattern
        self._one: dict[str, str] = {}        # parent of "*.parent" -> pattern
        self._deep: dict[str, str] = {}       # suffix of "**.suffix" -> pattern
        self._everything: str | None = None
        self._given: dict[str, str] = {}      # canonical pattern -> pattern as given (first)
        for pattern in patterns:
            canonical = normalize_pattern(pattern)
            if canonical in self._given:
                continue
            self._given[canonical] = pattern
            if canonical in _EVERYTHING:
                self._everything = pattern
            elif canonical.startswith("**."):
                self._deep[canonical[3:]] = pattern
            elif canonical.startswith("*."):
                self._one[canonical[2:]] = pattern
            else:
                self._exact[canonical] = pattern

    def matches(self, name: str) -> str | None:
        """The pattern matching ``name`` (which must be normalized), or None."""
        found = self._exact.get(name)
        if found is not None:
            return found
        dot = name.find(".")
        if dot >= 0:
            parent = name[dot + 1:]
            found = self._one.get(parent)
            if found is not None:
                return found
            if self._deep:
                suffix = parent
                while True:
                    found = self._deep.get(suffix)
                    if found is not None:
                        return found
                    dot = suffix.find(".")
                    if dot < 0:
                        break
                    suffix = suffix[dot + 1:]
        return self._everything

    @property
    def patterns(self) -> tuple[str, ...]:
        """The distinct patterns, as given, in the order given."""
        return tuple(self._given.values())


class ZoneSet(_GivenSet):
    """A set of zones with suffix semantics: a zone matches itself and every name below it.

    :meth:`matches` returns the most specific zone (as given) containing the name.  The root
    zone ``"."`` contains every name.
    """

    __slots__ = ("_given", "_root")

    def __init__(self, zones: Iterable[str] = ()) -> None:
        self._given: dict[str, str] = {}      # canonical zone -> zone as given (first)
        for zone in zones:
            self._given.setdefault(normalize_zone(zone), zone)
        self._root = self._given.get(".")

    def matches(self, name: str) -> str | None:
        """The most specific zone containing ``name`` (which must be normalized), or None."""
        zones = self._given
        while True:
            found = zones.get(name)
            if found is not None:
                return found
            dot = name.find(".")
            if dot < 0:
                return self._root
            name = name[dot + 1:]

    @property
    def zones(self) -> tuple[str, ...]:
        """The distinct zones, as given, in the order given."""
        return tuple(self._given.values())

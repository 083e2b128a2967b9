"""Durations written the way people write them: ``90``, ``30s``, ``5m``, ``1h30m``, ``500ms``.

:func:`parse_duration` turns a configured value into float seconds; :func:`format_duration` turns
seconds back into the compact form, so ``parse_duration(format_duration(x))`` gives ``x`` back
(to the millisecond).
"""

from __future__ import annotations

import math
import re

from .errors import InvalidValue

#: Seconds per unit, largest first: components of a duration must follow this order.
UNITS: dict[str, float] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")
_COMPONENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)(ms|w|d|h|m|s)\s*")
_RANK = {unit: rank for rank, unit in enumerate(UNITS)}

_ACCEPTED = ("expected seconds as a non-negative number (90, 1.5) or a string of numbers with "
             "units w, d, h, m, s, ms, largest first (\"30s\", \"5m\", \"1h30m\", \"500ms\")")


def parse_duration(value: int | float | str) -> float:
    """Return ``value`` in seconds, as a float.

    Numbers are seconds.  Strings are either a bare number of seconds (``"90"``) or one or more
    ``<number><unit>`` components, each unit at most once and largest first (``"1h30m"``,
    ``"1d 12h"``); units are ``w d h m s ms``.  Negative, empty, infinite and unparseable
    values raise :class:`ValueError` saying what is accepted.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidValue(f"invalid duration {value!r}: {_ACCEPTED}")
    if not isinstance(value, str):
        if not math.isfinite(value) or value < 0:
            raise InvalidValue(f"invalid duration {value!r}: {_ACCEPTED}")
        return float(value)

    text = value.strip()
    if _NUMBER.match(text):
        return float(text)
    total = 0.0
    pos = 0
    last_rank = -1
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:
            raise InvalidValue(f"invalid duration {value!r}: {_ACCEPTED}")
        number, unit = match.groups()
        if _RANK[unit] <= last_rank:
            raise InvalidValue(f"invalid duration {value!r}: unit {unit!r} is repeated or out of "
                               f"order; {_ACCEPTED}")
        last_rank = _RANK[unit]
        total += float(number) * UNITS[unit]
        pos = match.end()
    if last_rank < 0:                       # empty or whitespace only
        raise InvalidValue(f"invalid duration {value!r}: {_ACCEPTED}")
    return total


def format_duration(seconds: int | float) -> str:
    """The compact form of ``seconds``: ``"1h5m"``, ``"45s"``, ``"1s500ms"``, ``"0s"``.

    Rounded to the millisecond; days are the largest unit used.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise InvalidValue(f"cannot format {seconds!r} as a duration: expected non-negative "
                           "seconds")
    millis = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"

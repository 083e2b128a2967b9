"""The words of configuration errors: how values are shown, and what to say about unknown names.

Pure functions of their arguments (the schema is passed in), so every message reads the same
whichever module finds the problem.
"""

from __future__ import annotations

import difflib
import json
from datetime import date, datetime, time
from typing import Any, Iterable, Mapping

Schema = Mapping[str, tuple[str, ...]]


def show(value: Any, limit: int | None = 40) -> str:
    """A value as it would be written in TOML, shortened to ``limit`` characters (None: whole)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (datetime, date, time)):
        text = value.isoformat()
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def choices(values: Iterable[str]) -> str:
    return ", ".join(show(c) for c in values)


def wrong_type(expected: str, value: Any) -> str:
    return f"expected {expected}, found {type_name(value)} ({show(value)})"


def type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (list, "an array"), (dict, "a table"),
                       (datetime, "a date-time"), (date, "a date"), (time, "a time")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` for the closest of ``known``, or ""."""
    close = difflib.get_close_matches(value, list(known), n=1)
    return f" (did you mean {show(close[0])}?)" if close else ""


def unknown_section(name: str, value: Any, schema: Schema) -> str:
    if not isinstance(value, dict):
        homes = [f"[{section}]" for section, keys in schema.items() if name in keys]
        if homes:
            return (f"{name!r} must be written under {' or '.join(homes)}, not before the "
                    "first section header")
        return f"unknown key {name!r}; the file holds only the sections {sections(schema)}"
    close = difflib.get_close_matches(name, list(schema), n=1)
    hint = f" (did you mean [{close[0]}]?)" if close else ""
    return f"unknown section [{name}]{hint}; known sections: {sections(schema)}"


def unknown_key(section: str, key: str, schema: Schema,
                replaced: Mapping[tuple[str, str], str]) -> str:
    if (section, key) in replaced:
        return f"{key!r} was replaced: write {replaced[section, key]}"
    known = schema[section]
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        hint = f" (did you mean {close[0]!r}?)"
    else:
        homes = [f"[{other}]" for other, keys in schema.items() if key in keys]
        hint = f" ({key!r} belongs in {' or '.join(homes)})" if homes else ""
    return f"unknown key {key!r} in [{section}]{hint}; known keys: {', '.join(known)}"


def sections(schema: Schema) -> str:
    return ", ".join(f"[{name}]" for name in schema)


def duplicate(key: str, first: int | None, second: int, table: bool = False) -> str:
    """A key (or table) written twice: TOML forbids it, and which value was meant is unknown."""
    where = f"lines {first} and {second}" if first else f"line {second} and before it"
    what = f"the table [{key}]" if table else f"the key {key}"
    return f"{what} is written twice, on {where}; keep one"

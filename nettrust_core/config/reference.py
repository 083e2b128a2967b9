"""The configuration reference, derived from the declaration (:mod:`.model`).

- The README's reference table is generated between ``<!-- config-reference -->`` and
  ``<!-- /config-reference -->``::

      python -m nettrust_core.config.reference --write README.md

- The annotated ``conf/nettrust.toml`` keeps its hand-written prose, but its keys must agree
  with the declaration: every declared key written (commented or not) with its default, no other
  key, even in a commented example.  ``--check README.md conf/nettrust.toml`` lists every
  difference (exit status 1); ``tests/unit/test_config.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from typing import Any, NamedTuple

from ..errors import ConfigError
from .declare import Key
from .messages import show
from .model import SECTIONS

START, END = "<!-- config-reference -->", "<!-- /config-reference -->"
_NOTE = ("<!-- generated from nettrust_core/config/model.py by "
         "`python -m nettrust_core.config.reference --write README.md`; do not edit by hand -->")
#: A key in the annotated file: ``key = value`` or, commented, ``#   key = value``.
_KEY_LINE = re.compile(r"(#\s{3})?([A-Za-z0-9_-]+)\s*=(.*)")


def table() -> str:
    """The reference table (Markdown): every declared key, in declaration order."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for spec in SECTIONS:
        for k in spec.keys:
            cells = (f"`{spec.name}.{k.name}`", k.describe(), f"`{show(k.default, None)}`", k.doc)
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def region() -> str:
    """What belongs between the markers, markers included."""
    return f"{START}\n{_NOTE}\n\n{table()}\n\n{END}"


def with_region(text: str) -> str:
    """``text`` (the README) with its reference region replaced by :func:`region`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"no {START} ... {END} region to write the reference into")
    return text[:start] + region() + text[end + len(END):]


class Written(NamedTuple):
    """A key written in the annotated file."""

    section: str
    key: str
    value: Any                  # as TOML reads it; None when a commented value does not parse
    commented: bool
    line: int


def written_keys(text: str) -> list[Written]:
    """Every ``key = value`` of the annotated file, and every commented example ``#   key = ...``
    (``#`` and three spaces, as the file writes them), with its section."""
    out, section = [], ""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.fullmatch(r"\[[A-Za-z0-9_-]+\]\s*", line):
            section = line.strip()[1:-1]
            continue
        match = _KEY_LINE.fullmatch(line.rstrip())
        if match is None or not section:
            continue
        snippet, index = line.lstrip("#").strip(), number + 1
        while snippet.count("[") > snippet.count("]") and index < len(lines):
            snippet += "\n" + lines[index].lstrip("#")
            index += 1
        try:
            value = next(iter(tomllib.loads(snippet).values()))
        except (tomllib.TOMLDecodeError, StopIteration):
            value = None
        out.append(Written(section, match.group(2), value, bool(match.group(1)), number + 1))
    return out


def annotated_differences(text: str, name: str = "conf/nettrust.toml") -> list[str]:
    """How the annotated file's keys disagree with the declaration (empty: they agree)."""
    declared: dict[tuple[str, str], Key[Any]] = {
        (spec.name, k.name): k for spec in SECTIONS for k in spec.keys}
    problems, stated = [], set()
    for w in written_keys(text):
        where = f"{name}:{w.line}: {w.section}.{w.key}"
        k = declared.get((w.section, w.key))
        if k is None:
            problems.append(f"{where}: not a declared key"
                            + (" (in a commented example)" if w.commented else ""))
        elif w.value == k.default:
            stated.add((w.section, w.key))
        elif not w.commented:
            problems.append(f"{where}: written as {show(w.value, None)}, but the default is "
                            f"{show(k.default, None)}")
    for (section, key), k in declared.items():
        if (section, key) not in stated:
            problems.append(f"{name}: {section}.{key}: missing; write it in [{section}] with "
                            f"its default: {key} = {show(k.default, None)}")
    return problems


def readme_differences(text: str, name: str = "README.md") -> list[str]:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return [f"{name}: no {START} ... {END} region"]
    if text[start:end + len(END)] != region():
        return [f"{name}: the configuration reference is out of date; run "
                "python -m nettrust_core.config.reference --write README.md"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nettrust_core.config.reference",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="README", help="rewrite the reference region in it")
    parser.add_argument("--check", metavar="FILE", nargs="+", default=[],
                        help="list differences from the declaration (README.md, *.toml)")
    args = parser.parse_args(argv)
    if args.write:
        with open(args.write, encoding="utf-8") as f:
            text = f.read()
        try:
            text = with_region(text)
        except ConfigError as exc:
            print(f"{args.write}: {exc.message}", file=sys.stderr)
            return 2
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
    problems = []
    for path in args.check:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        check = annotated_differences if path.endswith(".toml") else readme_differences
        problems += check(text, path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not (args.write or args.check):
        print(table())
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

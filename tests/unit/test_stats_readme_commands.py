"""Every ``nettrust stats …`` and ``nettrust why …`` command line the README shows runs, as
written, against a fixture database: synopses are expanded (``[x]`` with and without,
``a\\|b`` each, placeholders such as ADDRESS filled in), and each line must exit 0 and print."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from nettrust_core.cli import main
from testbed import stats_fixture

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDERS = {"ADDRESS": stats_fixture.GRANTED, "N": "3", "T": "1h", "WHAT": "blocked",
                "FILE": None}


def _split_alternatives(text: str) -> list[str]:
    """``a\\|b [c\\|d]`` -> ["a", "b [c\\|d]"]: split on ``\\|`` outside brackets."""
    out, depth, current = [], 0, ""
    i = 0
    while i < len(text):
        if text.startswith("\\|", i) and depth == 0:
            out.append(current)
            current = ""
            i += 2
            continue
        depth += {"[": 1, "]": -1}.get(text[i], 0)
        current += text[i]
        i += 1
    return out + [current]


def _items(text: str) -> list[str]:
    """Top-level words and [groups] of a synopsis."""
    items, depth, current = [], 0, ""
    for ch in text:
        if ch == " " and depth == 0:
            if current:
                items.append(current)
            current = ""
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        current += ch
    return items + ([current] if current else [])


def expand(synopsis: str) -> list[list[str]]:
    """Every concrete argument list a synopsis stands for."""
    choices = []
    for item in _items(synopsis):
        if item.startswith("[") and item.endswith("]"):
            options = [[]] + [alt for a in _split_alternatives(item[1:-1]) for alt in expand(a)]
        else:
            options = [[word] for word in _split_alternatives(item)]
            options = [[PLACEHOLDERS.get(w[0], w[0])] for w in options]
        choices.append(options)
    return [[w for part in combo for w in part] for combo in itertools.product(*choices)]


def readme_commands(text: str) -> list[str]:
    """Inline code spans and lines of code blocks that start ``nettrust stats``/``why``."""
    fence = r"^ *```[^\n]*\n(.*?)^ *```"
    blocks = re.findall(fence, text, re.S | re.M)
    prose = re.sub(fence, "", text, flags=re.S | re.M)
    spans = re.findall(r"`([^`]+)`", prose) + [line for b in blocks for line in b.splitlines()]
    found = []
    for span in spans:
        line = " ".join(span.split())
        if re.match(r"nettrust (stats|why)\b", line) and "…" not in line:
            found.append(line)
    return list(dict.fromkeys(found))


def run(argv, config, capsys):
    code = main(["-c", config, *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    db = stats_fixture.build(str(base / "stats.db"))
    path = base / "nettrust.toml"
    path.write_text(f'[stats]\nenabled = true\ndatabase = "{db}"\n')
    return str(path)


def test_the_readme_shows_the_commands_this_test_runs():
    lines = readme_commands(README.read_text())
    assert "nettrust stats summary --since 1h" in " | ".join(lines) or \
        any(line.startswith("nettrust stats [summary] [--since 1h]") for line in lines)
    assert any(line.startswith("nettrust why") for line in lines)
    assert len(lines) >= 8, lines


def test_every_readme_command_line_runs(config, capsys):
    ran = 0
    for line in readme_commands(README.read_text()):
        for argv in expand(line.removeprefix("nettrust ")):
            try:
                code, out, err = run(argv, config, capsys)
            except SystemExit as exc:           # argparse refused the line
                pytest.fail(f"README line {line!r} as {argv}: usage error {exc}")
            assert code == 0 and out.strip(), (line, argv, err)
            if "--json" in argv:
                json.loads(out)
            ran += 1
    assert ran >= 30


def test_a_broken_command_line_fails(config, capsys):
    """Control: the runner notices a line that does not work."""
    with pytest.raises(SystemExit):
        run(["stats", "summary", "--no-such-option"], config, capsys)
    assert expand("stats top domains\\|blocked [-n N]") == [
        ["stats", "top", "domains"], ["stats", "top", "domains", "-n", "3"],
        ["stats", "top", "blocked"], ["stats", "top", "blocked", "-n", "3"]]


def test_options_after_the_view_mean_the_same(config, capsys):
    before = run(["stats", "--json", "--since", "1h", "summary"], config, capsys)
    after = run(["stats", "summary", "--since", "1h", "--json"], config, capsys)
    assert before[0] == after[0] == 0
    hour, earlier = json.loads(after[1]), json.loads(before[1])
    assert abs(hour.pop("since") - earlier.pop("since")) < 60 and hour == earlier
    week = json.loads(run(["stats", "summary", "--json", "--since", "30d"], config, capsys)[1])
    assert (hour["queries"], week["queries"]) == (9, 10)      # old.example is 10 days old


def test_why_tells_refused_attempts_too(config, capsys):
    code, out, _ = run(["why", stats_fixture.REFUSED_ONLY], config, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (f"{stats_fixture.REFUSED_ONLY}: never granted, never answered; "
                        "3 refused connection attempts (in the recorded period)")
    refused = [line for line in lines if "alice" in line]
    assert len(refused) == 3 and all("443" in line and "refused" in line for line in refused)
    code, out, _ = run(["stats", "why", stats_fixture.GRANTED, "--json"], config, capsys)
    story = json.loads(out)
    assert [g["name"] for g in story["grants"]] == ["c1.fw.test", "www.fw.test"]
    assert [(r["user"], r["port"], r["verdict"]) for r in story["refused"]] == [("bob", 22,
                                                                               "refused")]
    text = run(["stats", "why", stats_fixture.GRANTED], config, capsys)[1]
    assert "grants:" in text and "answers naming it:" in text
    assert "refused connection attempts:" in text and "bob" in text

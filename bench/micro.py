"""The micro-benchmarks that live beside the harness (issue 5b's scripts), run and read back.

``bench/fw_write.py``: µs per answer-path firewall write for 1, 4 and 16 addresses, sets empty
and pre-filled.  ``bench/restart.py``: seconds until a restarted NetTrust has picked up 1M live
grants.  Each runs as its own process with its own namespace; a missing script or a failure is
reported, not fatal, and its full output goes into the report.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testbed.lab import SYSTEM_PYTHON

HERE = Path(__file__).parent
_FW_ROW = re.compile(r"^\s+(\d+) \((IPv4|IPv4\+IPv6)\)\s+([0-9.]+) \[[^\]]*\]\s+([0-9.]+) \[", re.MULTILINE)


@dataclass
class MicroResult:
    name: str
    status: str = "not run"           # "ok", "failed (…)", "missing", "skipped (…)"
    output: str = ""
    figures: dict[str, float] = field(default_factory=dict)


def _run(name: str, args: list[str], timeout: float, label: str | None = None) -> MicroResult:
    script = HERE / f"{name}.py"
    result = MicroResult(label or name)
    if not script.exists():
        result.status = f"missing: {script.name} does not exist yet"
        return result
    try:
        proc = subprocess.run([SYSTEM_PYTHON, str(script), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired as exc:
        result.status = f"failed: no result within {timeout:.0f} s"
        out = exc.stdout or ""
        result.output = out.decode(errors="replace") if isinstance(out, bytes) else out
        return result
    result.output = proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.stderr.strip() else "")
    result.status = "ok" if proc.returncode == 0 else f"failed: exit {proc.returncode}"
    return result


def _json_tail(output: str) -> dict[str, float]:
    """The numbers of the script's last line when that line is a JSON object (its summary)."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    try:
        data = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fw_write(calls: int, fill: int, timeout: float = 600) -> MicroResult:
    """µs per grant() call; figures ``us_<n>[_mixed]_empty`` / ``_filled`` and ``fill``.

    ``--no-control``: the control-plane timings (a dump of the 1M set) are not a target here."""
    result = _run("fw_write", ["--calls", str(calls), "--fill", str(fill), "--no-control"], timeout)
    result.figures = _json_tail(result.output)
    if "us_1_empty" not in result.figures:      # an older fw_write: read its table
        for n, family, empty, filled in _FW_ROW.findall(result.output):
            suffix = "" if family == "IPv4" else "_mixed"
            result.figures[f"us_{n}{suffix}_empty"] = float(empty)
            result.figures[f"us_{n}{suffix}_filled"] = float(filled)
    result.figures["fill"] = fill
    if result.status == "ok" and "us_1_empty" not in result.figures:
        result.status = "failed: output not understood"
    return result


def restart(args: list[str], timeout: float = 600, label: str = "restart") -> MicroResult:
    """Seconds to pick up the live grants after a restart (figure ``seconds``).

    Understood outputs: a last line that is a JSON object with ``seconds`` (and optionally
    ``grants``), or a line mentioning "restart" with a number of seconds.
    """
    result = _run("restart", args, timeout, label)
    result.figures = _json_tail(result.output)
    if "seconds" not in result.figures:
        for line in result.output.splitlines():
            match = re.search(r"restart\D*?([0-9]+(?:\.[0-9]+)?)\s*s\b", line, re.IGNORECASE)
            if match:
                result.figures["seconds"] = float(match.group(1))
    if result.status == "ok" and "seconds" not in result.figures:
        result.status = "failed: output not understood (expected a JSON last line with 'seconds')"
    return result

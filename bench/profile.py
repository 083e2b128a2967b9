"""``--profile``: where NetTrust's answer path spends its time, sampled with py-spy.

py-spy (``pip install py-spy``) attaches to the running Unbound and samples the embedded
interpreter during the cache-miss phase; the report lists the functions holding the largest
share of the samples that were inside Python (inclusive), which is what a hotspot hunt needs
first.  Without py-spy the report says how to get it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def py_spy() -> str | None:
    venv = REPO / ".venv" / "bin" / "py-spy"
    return shutil.which("py-spy") or (str(venv) if venv.exists() else None)


class Sampler:
    """py-spy recording one process for ``seconds``; :meth:`summary` reads the result."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        tool = py_spy()
        self.missing = tool is None
        self.proc = None if tool is None else subprocess.Popen(
            [tool, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250",
             "--format", "raw", "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self, top: int = 25) -> str:
        if self.missing:
            return "py-spy not found: `pip install py-spy` (or into the repo's .venv), then rerun with --profile"
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            return f"py-spy wrote nothing (exit {self.proc.returncode})"
        total = in_python = 0
        inclusive: Counter[str] = Counter()
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            frames = {re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f}
            if frames:
                in_python += n
            for frame in frames:
                inclusive[frame] += n
        rows = [f"{total} samples, {in_python} ({in_python / max(total, 1):.0%}) inside Python "
                f"(the rest: Unbound's C code, or idle).  py-spy sees no frame of compiled code "
                f"(the answer path's modules, `operate` included, when built): it charges their "
                f"time to the last interpreted frame entered; the stage table below times them.",
                "",
                "| share of Python samples (inclusive) | function |", "|---:|---|"]
        rows += [f"| {n / max(in_python, 1):.1%} | `{frame}` |" for frame, n in inclusive.most_common(top)]
        return "\n".join(rows)

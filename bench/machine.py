"""What the benchmark ran on: figures from different machines are not comparable."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit(repo: Path) -> str:
    out = _first_line(["git", "-C", str(repo), "log", "-1", "--format=%h %cI %s"])
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return out + (" (with uncommitted changes)" if dirty else "")


def describe(repo: Path) -> dict[str, str]:
    """Name → value for the report's machine section."""
    try:
        debian = "Debian " + Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = platform.platform()
    mem_kb = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal:")), 0)
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} online; load average at start "
                 f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "OS": debian,
        "kernel": platform.release(),
        "Python (Unbound's)": _first_line(["/usr/bin/python3", "--version"]),
        "Unbound": _first_line(["unbound", "-V"]),
        "dnsmasq": _first_line(["dnsmasq", "--version"]),
        "NSD": _first_line(["nsd", "-v"]),
        "dnsperf": _first_line(["sh", "-c", "dnsperf -h 2>&1 | grep -i '^version'"]),
        "NetTrust commit": _git_commit(repo),
    }

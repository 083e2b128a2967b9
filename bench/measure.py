"""One measured phase: dnsperf in the lab's host namespace, and the CPU the servers spent on it.

Server CPU is utime+stime from ``/proc/<pid>/stat`` of every resolver process in the host
namespace (all threads included), read before and after the phase and divided by the completed
queries: on a shared, noisy machine it is the stable figure, while QPS swings with whatever
else runs.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from testbed import netns

SERVER_COMMANDS = ("unbound", "dnsmasq", "pdns_recursor")
_TICK = os.sysconf("SC_CLK_TCK")
_LATENCY_LINE = re.compile(r"^> (\S+) \S+ \S+ ([0-9.]+)$", re.MULTILINE)


def server_pids(ns_name: str) -> list[int]:
    """PIDs of the resolver processes (by command name) living in network namespace ``ns_name``."""
    inode = netns.netns_inode(ns_name)
    if inode is None:
        return []
    pids = []
    for pid in netns.pids_in_netns(inode):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in SERVER_COMMANDS:
            pids.append(pid)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of ``pids`` (threads included) in seconds; a vanished PID counts 0."""
    return sum(cpu_each(pids))


def _times(stat_path: str) -> tuple[float, float] | None:
    """(utime, stime) in seconds from a ``/proc/.../stat`` file; None once it is gone."""
    try:
        stat = Path(stat_path).read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()   # the command name may contain spaces
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK   # fields 14 and 15 of proc(5)


def cpu_each(pids: list[int]) -> list[float]:
    """utime+stime of each of ``pids`` in seconds (0 for a vanished one)."""
    return [sum(_times(f"/proc/{pid}/stat") or (0.0,)) for pid in pids]


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """(utime, stime) in seconds of each thread of ``pid``, by thread id ({} once it is gone)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return {}
    found = {tid: _times(f"/proc/{pid}/task/{tid}/stat") for tid in tids}
    return {tid: t for tid, t in found.items() if t is not None}


def thread_split(pid: int, before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu` readings: Unbound's thread (the main
    one: one worker) in user and kernel mode, and every other thread (NetTrust's)."""
    spent = {tid: (u - before.get(tid, (0.0, 0.0))[0], k - before.get(tid, (0.0, 0.0))[1])
             for tid, (u, k) in after.items()}
    user, kernel = spent.pop(pid, (0.0, 0.0))
    return {"worker_user": user, "worker_kernel": kernel,
            "others": sum(u + k for u, k in spent.values())}


@dataclass
class Phase:
    """What one dnsperf run measured."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)   # seconds, only with latency=True
    #: CPU seconds of each server process, busiest first: with several processes behind
    #: so-reuseport, how evenly the kernel spread dnsperf's client ports over them.
    cpu_split: list[float] = field(default_factory=list)

    @property
    def busiest_share(self) -> float:
        """The busiest server process's share of the CPU (1/n: perfectly even; NaN: one)."""
        if len(self.cpu_split) < 2 or not self.cpu:
            return float("nan")
        return self.cpu_split[0] / self.cpu

    @property
    def qps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu / self.completed * 1e6 if self.completed else float("nan")

    def percentile_ms(self, p: float) -> float:
        """The ``p``-th percentile latency in ms (nearest rank), NaN without samples."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1e3

    @property
    def failed(self) -> int:
        """Answers other than NOERROR (lost queries not included: dnsperf also counts the ones
        still in flight when the phase's time is up as lost)."""
        return sum(n for code, n in self.rcodes.items() if code != "NOERROR")


def dnsperf(lab, queries: Path, *, seconds: float, runs: int | None = None, max_qps: int | None = None,
            clients: int = 16, outstanding: int = 200, latency: bool = False,
            source: str | None = None) -> Phase:
    """Run dnsperf against 127.0.0.1:53 from the host namespace and measure the servers' CPU.

    ``runs``: passes through the file at most (1 = every query once: unique names stay unique).
    Several ``clients`` (source ports) let SO_REUSEPORT spread queries over threads/processes.
    """
    argv = ["dnsperf", "-s", "127.0.0.1", "-d", str(queries), "-l", f"{seconds:g}",
            "-c", str(clients), "-q", str(outstanding), "-t", "2"]
    if source is not None:           # a client address other than 127.0.0.1 (gateway mode)
        argv += ["-a", source]
    if runs is not None:
        argv += ["-n", str(runs)]
    if max_qps is not None:
        argv += ["-Q", str(max_qps)]
    if latency:
        argv.append("-v")
    pids = server_pids(lab.host_ns)
    before = cpu_each(pids)
    out = lab.run("host", argv, timeout=seconds + 60).stdout
    phase = parse(out)
    spent = [a - b for a, b in zip(cpu_each(pids), before, strict=True)]
    phase.cpu = sum(spent)
    phase.cpu_split = sorted(spent, reverse=True)
    return phase


def parse(out: str) -> Phase:
    """The figures of dnsperf's report (and per-query latencies when it ran with ``-v``)."""
    def number(label: str) -> str:
        match = re.search(rf"^\s*{re.escape(label)}:\s+([0-9.]+)", out, re.MULTILINE)
        if match is None:
            raise ValueError(f"dnsperf output has no {label!r}:\n{out[-2000:]}")
        return match.group(1)

    phase = Phase(sent=int(number("Queries sent")), completed=int(number("Queries completed")),
                  lost=int(number("Queries lost")), seconds=float(number("Run time (s)")))
    codes = re.search(r"^\s*Response codes:\s+(.*)$", out, re.MULTILINE)
    if codes:
        for code, count in re.findall(r"([A-Z]+) (\d+) \(", codes.group(1)):
            phase.rcodes[code] = int(count)
    phase.latencies = [float(m.group(2)) for m in _LATENCY_LINE.finditer(out)]
    return phase


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]     # drop NaN
    return statistics.median(values) if values else float("nan")

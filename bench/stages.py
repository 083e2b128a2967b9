"""``--profile``: NetTrust's answer path by stage, timed inside Unbound (bench/stages_module.py).

NetTrust default runs once more after the rounds, with the adapter wrapped in thread-CPU timers,
through the warm-up and the cache-miss phase; the report gets one row per stage: CPU per call,
calls per judged answer, CPU per judged answer.  Not part of any ratio: the timers cost a little
themselves (measured, and subtracted), and the figures are there to say where a miss's CPU goes
between Unbound's own work, which neither py-spy (blind to the compiled core) nor the in-process
driver (hot caches) can.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from testbed.product import NetTrustHost

from .configs import NETTRUST_DEFAULT, NetTrust

SCRIPT = Path(__file__).with_name("stages_module.py")
#: Stages timed inside another (its timers' cost is taken off the outer one too).
INNER = {"operate MODDONE": ("authorize",), "authorize": ("firewall write",)}
#: Table order, and what each stage holds.
ROWS = (
    ("operate NEW", "the query: name decoded, blocklists"),
    ("operate MODDONE", "the answer, everything below included"),
    ("authorize", "the core's judgement, the write included"),
    ("firewall write", "the netlink batch, the kernel's work included"),
)


class _TimedHost(NetTrustHost):
    def __init__(self, lab, config_text: str, out: Path) -> None:
        super().__init__(lab, config_text, name="nettrust_stages")
        self.out = out
        staged = self.code_dir / "unbound_module" / SCRIPT.name
        shutil.copyfile(SCRIPT, staged)
        os.chmod(staged, 0o644)

    @property
    def script(self) -> Path:
        return self.code_dir / "unbound_module" / SCRIPT.name

    def env(self, instance: int = 0) -> dict[str, str]:
        return {**super().env(instance), "NETTRUST_STAGES_OUT": str(self.out)}


class NetTrustStages(NetTrust):
    key = "nettrust_stages"
    label = "NetTrust default, stages timed"

    def __init__(self, lab) -> None:
        super().__init__(lab, config_text=NETTRUST_DEFAULT)
        self.key, self.label = type(self).key, type(self).label
        run_dir = Path(lab.work_dir) / "run"
        run_dir.mkdir(exist_ok=True)
        run_dir.chmod(0o1777)               # written by Unbound as the unbound user
        self.out = run_dir / "stages.json"

    def make_host(self) -> NetTrustHost:
        self.out.unlink(missing_ok=True)
        return _TimedHost(self.lab, self.config_text, self.out)

    def summary(self, miss_cpu_us: float, threads: dict[str, float] | None = None,
                misses: int = 0) -> str:
        """The markdown table of what the stopped Unbound wrote (or why there is none);
        ``threads`` (:func:`bench.measure.thread_split` over the ``misses`` of the phase) adds
        where the rest of the process's CPU went."""
        try:
            found = json.loads(self.out.read_text())
        except (OSError, ValueError) as exc:
            return f"stage timings unavailable: {exc}"
        stages, timer_ns = found["stages"], found["timer_ns"]
        answers = stages.get("authorize", [0, 0])[1]
        if not answers:
            return "stage timings unavailable: no answer was judged"
        rows = [f"{answers:,} answers judged; each timer's own cost, {timer_ns / 1000:.2f} µs per "
                f"call (measured on an empty call), is subtracted from its stage and the stages "
                f"around it.  The same phase's CPU per miss, the whole Unbound process: "
                f"{miss_cpu_us:.1f} µs.", "",
                "| stage | µs per call | calls per answer | µs per answer | what it holds |",
                "|---|---:|---:|---:|---|"]
        per_answer: dict[str, float] = {}
        for name, what in ROWS:
            ns, calls = stages.get(name, [0, 0])
            if not calls:
                continue
            timers = calls + sum(stages.get(inner, [0, 0])[1] for inner in INNER.get(name, ()))
            per_call = max(ns - timers * timer_ns, 0.0) / calls / 1000
            rows.append(f"| {name} | {per_call:.1f} | {calls / answers:.2f} | "
                        f"{per_call * calls / answers:.1f} | {what} |")
            per_answer[name] = per_call * calls / answers
        if "operate MODDONE" in per_answer and "authorize" in per_answer:
            rows.append(f"| answer outside the judgement | | | "
                        f"{per_answer['operate MODDONE'] - per_answer['authorize']:.1f} | Unbound's "
                        f"objects read (client, records), the verdict carried out |")
        spent = threads["worker_user"] + threads["worker_kernel"] if threads else 0.0
        if threads and misses and spent:
            # The timers ran on Unbound's thread: their own cost comes off its total as well.
            timer_us = sum(calls for _, calls in stages.values()) / answers * timer_ns / 1000
            worker = spent * 1e6 / misses - timer_us
            operate = per_answer.get("operate NEW", 0.0) + per_answer.get("operate MODDONE", 0.0)
            rows += [f"| Unbound's thread, per miss | | | {worker:.1f} | everything it did: "
                     f"{threads['worker_kernel'] / spent:.0%} in the kernel (its packets, the "
                     f"firewall writes) |",
                     f"| Unbound's thread outside `operate` | | | {worker - operate:.1f} | "
                     f"Unbound's own resolution, pythonmod's calls into Python, the packets |",
                     f"| NetTrust's other threads, per miss | | | "
                     f"{threads['others'] * 1e6 / misses:.1f} | the lifecycle, expiry and "
                     f"statistics threads (a thread that ended during the phase is not counted) |"]
        return "\n".join(rows)

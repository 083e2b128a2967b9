"""The race: resolve, then connect at once — did the first SYN find the grant already there?

Three kinds of trial against a running NetTrust, each a fresh A query followed the moment the
answer arrives by a TCP connect to the answered address, where :mod:`bench.race_sink` accepts:

- ``fresh``: names never asked before (a cache miss: the grant is written before the answer);
- ``hit``: names resolved once before (answered from Unbound's cache, no firewall work);
- ``near_expiry``: TTL-2 s names resolved once, then asked again 1.6–2.2 s later, i.e. just
  before and just after the cached copy expires.

:mod:`bench.race_client` runs the trials inside the host namespace; its failures are connects
refused by the firewall or needing a SYN retransmission.  The internet namespace's listen
overflow counters are read around the run: a SYN dropped by a full accept queue would be the
lab's fault, not the firewall's, and the report says how many there were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from testbed.lab import SYSTEM_PYTHON

from .zone import ZONE, BenchZone

CLIENT = Path(__file__).with_name("race_client.py")
SINK = Path(__file__).with_name("race_sink.py")
SINK_PORT = 9

#: Grants as short as the product allows, so the near-expiry trials test the cache-hit
#: invariant (cached copy dies before its grant) with one second of margin, not the default 40 s.
RACE_CONFIG = '[grants]\nmin_ttl = "1s"\ngrace = "1s"\n'


@dataclass
class RaceResult:
    label: str
    trials: int = 0
    seconds: float = 0.0
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    listen_overflows: int = 0      # SYNs the far end's full accept queues dropped (not the firewall)

    @property
    def failed(self) -> int:
        return sum(n for counts in self.kinds.values() for outcome, n in counts.items() if outcome != "ok")

    def add(self, out: dict) -> None:
        self.trials += out["trials"]
        self.seconds += out["seconds"]
        for kind, counts in out["kinds"].items():
            mine = self.kinds.setdefault(kind, {})
            for outcome, n in counts.items():
                mine[outcome] = mine.get(outcome, 0) + n
        self.failures += out["failures"][: max(0, 20 - len(self.failures))]


def plan(zone: BenchZone, trials: int, first_name: int) -> list[list[str]]:
    """The client invocations (lines of trials): fresh + priming, hits, near-expiry waves.

    ``first_name``: the n-names from here on are unused by the other workloads.
    """
    fresh = trials * 4 // 10
    hits = trials * 3 // 10
    near = min(trials - fresh - hits, zone.short_names)
    if first_name + fresh + hits > zone.names:
        raise ValueError("the bench zone is too small for this many race trials")
    fresh_names = [f"n{i}.{ZONE}" for i in range(first_name, first_name + fresh)]
    hit_names = [f"n{i}.{ZONE}" for i in range(first_name + fresh, first_name + fresh + hits)]
    first = [f"prime {n}" for n in hit_names] + [f"fresh {n}" for n in fresh_names]
    second = [f"hit {n}" for n in hit_names]
    third = []
    wave = 1000
    for w, start in enumerate(range(0, near, wave)):
        names = [f"t{i}.{ZONE}" for i in range(start, min(near, start + wave))]
        t0 = w * 2.5
        third += [f"prime {n} {t0:.3f}" for n in names]
        third += [f"near_expiry {n} {t0 + 1.6 + 0.6 * k / len(names):.4f}" for k, n in enumerate(names)]
    return [first, second, third]


def listen_overflows(lab) -> int:
    """TcpExt ListenOverflows + ListenDrops of the internet namespace."""
    lines = lab.run("net", ["cat", "/proc/net/netstat"]).stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
            return row.get("ListenOverflows", 0) + row.get("ListenDrops", 0)
    return 0


def run(lab, label: str, zone: BenchZone, trials: int, first_name: int) -> RaceResult:
    """Run the planned trials against the NetTrust already answering in ``lab``."""
    result = RaceResult(label)
    sink = lab.spawn("net", [SYSTEM_PYTHON, "-I", str(SINK), "--port", str(SINK_PORT)], log_name="race-sink")
    try:
        if not sink.wait_for_log("READY", timeout=10):
            raise RuntimeError(f"the race's listener did not start:\n{sink.log_tail()}")
        before = listen_overflows(lab)
        for lines in plan(zone, trials, first_name):
            if not lines:
                continue
            out = lab.run("host", [SYSTEM_PYTHON, "-I", str(CLIENT), "--port", str(SINK_PORT)],
                          input="\n".join(lines) + "\n", timeout=600).stdout
            result.add(json.loads(out))
        result.listen_overflows = listen_overflows(lab) - before
    finally:
        sink.stop()
    return result

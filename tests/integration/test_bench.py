"""The benchmark harness in its quickest form, so it cannot rot: every configuration, workload,
the race and the firewall micro-benchmark run once and the report carries every target.

Figures are not checked (the machine is shared); what is checked is that the harness measures
what it claims: queries answered, a verdict per target, the race's trials all counted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI
from testbed.errors import LabError
from testbed.zones import normalise_extra_zones

REPO = Path(__file__).resolve().parents[2]


def test_extra_zones_must_be_new_children_of_test():
    records = ["n1 IN A 198.18.12.1"]
    assert normalise_extra_zones({"Bench.test.": records}) == {"bench.test": records}
    for bad in ({"fw.test": []}, {"a.b.test": []}, {"bench.example": []}, {"bench.test": "n1 IN A 1.2.3.4"}):
        with pytest.raises(LabError):
            normalise_extra_zones(bad)


@pytest.mark.integration
def test_quick_benchmark_writes_a_report_with_every_target(tmp_path):
    missing = [tool for tool in ("dnsperf", "dnsmasq") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        message = f"bench needs {', '.join(missing)} (apt-get install dnsperf dnsmasq-base)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    report = tmp_path / "bench.md"
    proc = subprocess.run(["/usr/bin/python3", "-m", "bench", "--quick", "--profile", "--output", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = report.read_text()
    for label in ("Unbound plain (2 threads)", "Unbound plain x2 processes",
                  "Unbound + no-op Python module", "no-op module + NetTrust's ruleset",
                  "NetTrust default",
                  "NetTrust x2 processes", "NetTrust gateway (per-client)", "NetTrust + statistics",
                  "NetTrust + statistics (cache_hits = false)", "dnsmasq --nftset"):
        assert f"| {label} |" in text
    targets = text.split("## Targets", 1)[1].split("##", 1)[0]
    rows = [ln for ln in targets.splitlines() if ln.startswith("| ") and "verdict" not in ln]
    verdict = re.compile(r"\*\*(met|missed)\*\*|n/a|not measured|not run")
    # Issue 17's targets: own CPU per miss, miss QPS (default, best ×2), hit QPS per deployment
    # (default, x2, x2 against Unbound in the same shape), statistics (2 configurations × hits
    # and miss CPU), gateway, write (×2), latency, race, restart.
    assert len(rows) == 17 and all(verdict.search(r) for r in rows), targets
    assert "Unbound plain x2 processes (Unbound in the same shape)" in targets
    assert "NetTrust's own CPU per cache miss" in targets
    assert "cache-hit QPS, NetTrust x2 processes ≥ 0.95× plain Unbound" in targets
    assert "several processes: busiest one's share" in text
    assert "first connects" in text and "1000 trials" in text
    assert "### fw_write: ok" in text
    assert "| 1 | Unbound plain (2 threads) | miss |" in text
    # --profile: the adapter's stages timed inside Unbound (bench/stages.py), every judged
    # answer passing each stage once and costing something in each.
    stages = text.split("## Inside Unbound", 1)[1].split("##", 1)[0]
    for stage in ("operate NEW", "operate MODDONE", "authorize", "firewall write"):
        row = re.search(rf"^\| {stage} \| ([0-9.]+) \| ([0-9.]+) \|", stages, re.MULTILINE)
        assert row is not None, stages
        assert float(row.group(1)) > 0 and float(row.group(2)) == 1.0, stages
    # ... and the rest of the process's CPU per miss, split by thread: Unbound's thread did
    # work beyond `operate` (its own resolution), and its total is positive.
    worker = re.search(r"^\| Unbound's thread, per miss \| \| \| ([0-9.]+) \|", stages, re.MULTILINE)
    outside = re.search(r"^\| Unbound's thread outside `operate` \| \| \| (-?[0-9.]+) \|", stages,
                        re.MULTILINE)
    assert worker is not None and outside is not None, stages
    assert float(worker.group(1)) > float(outside.group(1)) > 0, stages
    assert re.search(r"^\| NetTrust's other threads, per miss \| \| \| [0-9.]+ \|", stages, re.MULTILINE)
    print(proc.stdout, file=sys.stderr)

"""Measure the answer-path write per extra namespace (the ``namespaces`` backend).

    ip netns exec SCRATCH python3 namespaces_cost.py MAX_NAMESPACES  → JSON, microseconds

Creates MAX_NAMESPACES throwaway namespaces (``ntcost<pid>-<k>``), each given the ruleset, and
times a one-address grant (a fresh address each time, as an answer writes) through a
:class:`NamespacesBackend` of 1..MAX namespaces: best and median of 5 rounds of 2000.  Run it
from a scratch namespace (the script's own namespace is skipped by the backend and never
written).  Removes its namespaces afterwards.  Test helper, not product code.
"""

import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time

from nettrust_core.firewall.base import Grant, RulesetSpec
from nettrust_core.firewall.namespaces import NamespacesBackend


def rounds(backend, n=2000, count=5):
    out = []
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    k = 0
    for _ in range(count):
        start = time.perf_counter()
        for _i in range(n):
            k += 1
            backend.grant([Grant(ipaddress.IPv4Address(base + k), 300.0, "cost.test")])
        out.append((time.perf_counter() - start) / n * 1e6)
    return round(min(out), 2), round(statistics.median(out), 2)


def main(most: int) -> None:
    names = [f"ntcost{os.getpid()}-{k}" for k in range(most)]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        result = {}
        for count in range(1, most + 1):
            backend = NamespacesBackend(RulesetSpec(), names[:count], scan_interval=3600)
            backend.ensure()
            assert len(backend.members) == count
            result[count] = rounds(backend)
            backend.close()
        print(json.dumps(result))
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))

#!/usr/bin/env python3
"""Micro-benchmark of the nftables backend's answer path, in a throwaway network namespace.

    sudo /usr/bin/python3 bench/fw_write.py [--calls 20000] [--fill 1000000]

Prints µs per ``grant()`` call (one acked netlink batch) for 1, 4 and 16 addresses, with the grant
sets empty and pre-filled with ``--fill`` elements, then the time of ``list_grants()``,
``status()``, an idempotent ``ensure()`` and ``flush_grants()`` at that size.  Run as root from
the root namespace: it creates ``ntfw-bench-<random>``, re-runs itself inside, and deletes it
(the root namespace's firewall is never touched).  Use /usr/bin/python3: the interpreter
Unbound embeds.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "integration")]

from nettrust_core.firewall.base import Grant, RulesetSpec  # noqa: E402
from nettrust_core.firewall.nftables import NftablesBackend  # noqa: E402

POOL = 40_000            # distinct addresses the timed calls cycle through (inserts, then refreshes)


def pool(version: int, base: str) -> list:
    start = int(ipaddress.ip_address(base))
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return [make(start + i) for i in range(POOL)]


def batches(n: int, mixed: bool, v4: list, v6: list, calls: int) -> list[list[Grant]]:
    """``calls`` grant lists of ``n`` addresses (half IPv6 when ``mixed``), 1 h, a comment."""
    out, i = [], 0
    for _ in range(calls):
        addrs = []
        for k in range(n):
            src = v6 if mixed and k % 2 else v4
            addrs.append(src[i % POOL])
            i += 1
        out.append([Grant(a, 3600.0, "bench.example.com") for a in addrs])
    return out


def time_grants(backend: NftablesBackend, work: list[list[Grant]], rounds: int = 3) -> list[float]:
    """µs per call for each round over ``work`` (after a warm-up)."""
    for g in work[:1000]:
        backend.grant(g)
    results = []
    for _ in range(rounds):
        t = time.perf_counter()
        for g in work:
            backend.grant(g)
        results.append((time.perf_counter() - t) / len(work) * 1e6)
    return results


def fill(backend: NftablesBackend, count: int, chunk: int = 50_000) -> float:
    """Pre-fill allow4 with ``count`` elements (10.0.0.0 upwards) in big batches; seconds."""
    t = time.perf_counter()
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for start in range(0, count, chunk):
        backend.grant([Grant(ipaddress.IPv4Address(base + i), 3600.0, "fill.example.com")
                       for i in range(start, min(count, start + chunk))])
    return time.perf_counter() - t


def timed(label: str, func):
    t = time.perf_counter()
    result = func()
    print(f"  {label:<34} {time.perf_counter() - t:8.3f} s", flush=True)
    return result


def inside(args) -> None:
    spec = RulesetSpec(table="bench")
    backend = NftablesBackend(spec)
    backend.ensure()
    v4, v6 = pool(4, "100.64.0.0"), pool(6, "2001:db8:100::")
    cases = [(1, False), (4, False), (16, False), (4, True), (16, True)]
    work = {c: batches(c[0], c[1], v4, v6, args.calls) for c in cases}
    rows: dict = {}
    for phase in ("empty", "filled"):
        if phase == "filled":
            backend.flush_grants()
            secs = fill(backend, args.fill)
            print(f"filled allow4 with {args.fill:,} elements in {secs:.2f} s "
                  f"({args.fill / secs:,.0f} elements/s)", flush=True)
        else:
            backend.flush_grants()
        for case in cases:
            rows[phase, case] = time_grants(backend, work[case])
    print(f"\ngrant(): µs per call, {args.calls} calls x 3 rounds (median [min-max]); "
          f"set {args.fill:,} = pre-filled")
    print(f"  {'addresses':<22}{'empty set':>24}{f'{args.fill:,} present':>26}")
    for case in cases:
        label = f"{case[0]} {'(IPv4+IPv6)' if case[1] else '(IPv4)'}"
        cells = []
        for phase in ("empty", "filled"):
            r = rows[phase, case]
            cells.append(f"{statistics.median(r):6.2f} [{min(r):.2f}-{max(r):.2f}]")
        print(f"  {label:<22}{cells[0]:>24}{cells[1]:>26}")
    print(f"\ncontrol plane with {args.fill:,} + grants present:")
    grants = timed("list_grants()", backend.list_grants)
    print(f"  {'':<34} {len(grants):,} elements")
    timed("status()", backend.status)
    timed("status(count_elements=False)", lambda: backend.status(count_elements=False))
    timed("ensure() (idempotent)", backend.ensure)
    timed("flush_grants()", backend.flush_grants)
    print(f"repairs={backend.repairs} errors={backend.errors}")
    backend.remove()
    backend.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--fill", type=int, default=1_000_000)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args)
        return 0
    if os.geteuid() != 0:
        print("fw_write: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    from netns_util import NetNS
    with NetNS("ntfw-bench") as ns:
        print(f"namespace {ns.name}; {sys.executable} {sys.version.split()[0]}; "
              f"kernel {os.uname().release}", flush=True)
        argv = [sys.executable, os.path.abspath(__file__), "--inside",
                "--calls", str(args.calls), "--fill", str(args.fill)]
        return subprocess.run(["ip", "netns", "exec", ns.name, *argv]).returncode


if __name__ == "__main__":
    sys.exit(main())

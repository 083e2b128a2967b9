#!/usr/bin/env python3
"""Micro-benchmark of the nftables backend's answer path, in a throwaway network namespace.

    sudo /usr/bin/python3 bench/fw_write.py [--calls 20000] [--fill 1000000] [--no-control]

Prints µs per ``grant()`` call (one acked netlink batch) for 1, 4 and 16 addresses, with the grant
sets empty and pre-filled with ``--fill`` elements, and the ratio; then one ``lookup()`` and the
time of ``list_grants()``, ``status()``, an idempotent ``ensure()`` and ``flush_grants()`` at
that size; last, the figures as one JSON line.  :func:`measure` returns them as a dict.  Run as
root from the root namespace: it works in a namespace ``ntfw-bench-<random>`` it creates and
deletes (the root namespace's firewall is never touched).  Use /usr/bin/python3: the interpreter
Unbound embeds.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
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


def time_round(backend: NftablesBackend, work: list[list[Grant]]) -> float:
    """µs per grant() call over ``work``."""
    t = time.perf_counter()
    for g in work:
        backend.grant(g)
    return (time.perf_counter() - t) / len(work) * 1e6


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


CASES = [(1, False), (4, False), (16, False), (4, True), (16, True)]


def case_key(case: tuple[int, bool]) -> str:
    return f"{case[0]}{'_mixed' if case[1] else ''}"


def run_inside(calls: int, fill_count: int, control: bool = True) -> dict:
    """The whole benchmark, in the current (throwaway) namespace: a dict of figures.

    ``us_<n>[_mixed]_empty`` / ``_filled``: median µs per grant() of n addresses (IPv4, or half
    IPv6), sets empty / holding ``fill_count`` elements; ``ratio_<n>[_mixed]``: filled / empty;
    ``us_lookup``: one GETSETELEM (what an answer pays per unknown address while a restart's
    adoption runs); ``s_<verb>``: control-plane seconds at that size.
    """
    # Two tables, timed in alternation, so that load from other processes on a shared machine
    # hits both alike: "empty" keeps only what the timed calls add, "filled" holds fill_count.
    phases = {"empty": NftablesBackend(RulesetSpec(table="bench_empty")),
              "filled": NftablesBackend(RulesetSpec(table="bench_filled"))}
    for b in phases.values():
        b.ensure()
    backend = phases["filled"]
    out: dict = {"calls": calls, "fill": fill_count}
    out["fill_per_s"] = round(fill_count / fill(backend, fill_count))
    v4, v6 = pool(4, "100.64.0.0"), pool(6, "2001:db8:100::")
    for case in CASES:
        work = batches(case[0], case[1], v4, v6, calls)
        rounds: dict = {phase: [] for phase in phases}
        for b in phases.values():
            for g in work[:1000]:                 # warm-up
                b.grant(g)
        for _ in range(3):
            for phase, b in phases.items():
                rounds[phase].append(time_round(b, work))
        for phase, r in rounds.items():
            out[f"us_{case_key(case)}_{phase}"] = round(statistics.median(r), 2)
            out[f"range_{case_key(case)}_{phase}"] = (round(min(r), 2), round(max(r), 2))
    phases["empty"].remove()
    phases["empty"].close()
    for case in CASES:
        k = case_key(case)
        out[f"ratio_{k}"] = round(out[f"us_{k}_filled"] / out[f"us_{k}_empty"], 3)
    probe = [ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + i * 7) for i in range(5000)]
    t = time.perf_counter()
    for a in probe:
        backend.lookup(a)
    out["us_lookup"] = round((time.perf_counter() - t) / len(probe) * 1e6, 2)
    if control:
        for verb, func in (("list_grants", backend.list_grants), ("status", backend.status),
                           ("status_no_count", lambda: backend.status(count_elements=False)),
                           ("ensure", backend.ensure), ("flush_grants", backend.flush_grants)):
            t = time.perf_counter()
            result = func()
            out[f"s_{verb}"] = round(time.perf_counter() - t, 3)
            if verb == "list_grants":
                out["listed"] = len(result)
    out["repairs"], out["errors"] = backend.repairs, backend.errors
    backend.remove()
    backend.close()
    return out


def measure(calls: int = 20_000, fill_count: int = 1_000_000, control: bool = True) -> dict:
    """Run :func:`run_inside` in a namespace of its own (created and deleted here); root only."""
    from netns_util import NetNS
    with NetNS("ntfw-bench") as ns:
        return ns.run(run_inside, calls, fill_count, control, timeout=1800)


def print_figures(f: dict) -> None:
    print(f"filled the set with {f['fill']:,} elements at {f['fill_per_s']:,} elements/s")
    print(f"\ngrant(): µs per call, {f['calls']} calls x 3 rounds (median [min-max]); "
          f"filled = {f['fill']:,} present; ratio = filled / empty")
    filled = f"{f['fill']:,} present"
    print(f"  {'addresses':<22}{'empty set':>24}{filled:>26}{'ratio':>8}")
    for case in CASES:
        k = case_key(case)
        label = f"{case[0]} {'(IPv4+IPv6)' if case[1] else '(IPv4)'}"
        cells = []
        for phase in ("empty", "filled"):
            lo, hi = f[f"range_{k}_{phase}"]
            cells.append(f"{f[f'us_{k}_{phase}']:6.2f} [{lo:.2f}-{hi:.2f}]")
        print(f"  {label:<22}{cells[0]:>24}{cells[1]:>26}{f[f'ratio_{k}']:>8.2f}")
    print(f"\nlookup() of one element (GETSETELEM), {f['fill']:,} present: {f['us_lookup']:.2f} µs")
    if "s_list_grants" in f:
        print(f"control plane with {f['fill']:,} + grants present:")
        for verb in ("list_grants", "status", "status_no_count", "ensure", "flush_grants"):
            print(f"  {verb + '()':<34} {f[f's_{verb}']:8.3f} s")
    print(f"repairs={f['repairs']} errors={f['errors']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--fill", type=int, default=1_000_000)
    ap.add_argument("--no-control", action="store_true",
                    help="skip the control-plane timings (list_grants of --fill takes ~30 s)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("fw_write: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    print(f"{sys.executable} {sys.version.split()[0]}; kernel {os.uname().release}", flush=True)
    figures = measure(args.calls, args.fill, not args.no_control)
    print_figures(figures)
    print(json.dumps({k: v for k, v in figures.items() if isinstance(v, (int, float))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Micro-benchmark of the nftables backend's answer path, in a throwaway network namespace.

    sudo /usr/bin/python3 bench/fw_write.py [--calls 20000] [--fill 1000000] [--no-control]
    sudo /usr/bin/python3 bench/fw_write.py --compare [--calls 3000]

Prints µs per ``grant()`` call (one acked netlink batch) for 1, 4 and 16 addresses, with the grant
sets empty and pre-filled with ``--fill`` elements, and the ratio; then one ``lookup()`` and the
time of ``list_grants()``, ``status()``, an idempotent ``ensure()`` and ``flush_grants()`` at
that size; last, the figures as one JSON line.  :func:`measure` returns them as a dict.  Run as
root from the root namespace: it works in a namespace ``ntfw-bench-<random>`` it creates and
deletes (the root namespace's firewall is never touched).  Use /usr/bin/python3: the interpreter
Unbound embeds.

``--compare`` instead times one answer-path write three ways in one run, for the figures in
:mod:`nettrust_core.netlink.nftables`: 1, 4 and 16 IPv4 elements with a timeout, an expiration
and a comment added to one set by our hand-written batch (``grant()``), by libnftables
(python3-nftables: ``cmd`` with one ``add element`` statement, and ``json_cmd``) and by pyroute2
(python3-pyroute2 0.7.2, whose ``NFTables`` has no set-element verb: its own NEWSETELEM message
class sent through ``NFTSocket._command``); then the chain listing the read side does, by our
GETCHAIN dump and by libnftables' ``list chains`` JSON.
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
sys.path[:0] = [REPO]

from nettrust_core.firewall.base import Grant, RulesetSpec  # noqa: E402
from nettrust_core.firewall.nftables import NftablesBackend  # noqa: E402
from nettrust_core.netlink import nftables_state as nft_state  # noqa: E402
from nettrust_core.netlink.nftables import NftablesSocket  # noqa: E402

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
    """Pre-fill the grant sets with ``count`` elements (10.0.0.0 upwards, spread over the sets
    as the answers spread them) in big batches; seconds."""
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
    from testbed.throwaway_netns import NetNS
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


# -- --compare: the same write three ways ------------------------------------------------------
COMPARE_SIZES = (1, 4, 16)
COMPARE_WAYS = ("netlink", "nft_cmd", "nft_json", "pyroute2")
COMMENT = "bench.example.com"


def _writers(table: str, backend: NftablesBackend) -> dict:
    """One function per way, each adding a list of IPv4 addresses (1 h timeout and expiration,
    a comment) to ``table``'s allow4 set and raising if the kernel refused."""
    import nftables
    from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_NEWSETELEM, nft_set_elem_list_msg
    from pyroute2.nftables.main import NFTables

    from nettrust_core.netlink.nftables import comment_udata

    nft = nftables.Nftables()
    nft.set_json_output(True)
    pr2 = NFTables(nfgen_family=1)                       # NFPROTO_INET
    udata = comment_udata(COMMENT)

    def netlink(addrs):
        backend.grant([Grant(a, 3600.0, COMMENT) for a in addrs])

    def nft_cmd(addrs):
        elems = ", ".join(f'{a} timeout 3600s expires 3600s comment "{COMMENT}"' for a in addrs)
        rc, _out, err = nft.cmd(f"add element inet {table} allow4 {{ {elems} }}")
        if rc:
            raise RuntimeError(err)

    def nft_json(addrs):
        elem = [{"elem": {"val": str(a), "timeout": 3600, "expires": 3600, "comment": COMMENT}}
                for a in addrs]
        rc, _out, err = nft.json_cmd({"nftables": [{"add": {"element": {
            "family": "inet", "table": table, "name": "allow4", "elem": elem}}}]})
        if rc:
            raise RuntimeError(err)

    def pyroute2(addrs):
        elements = [{"attrs": [["NFTA_SET_ELEM_KEY", {"attrs": [["NFTA_DATA_VALUE", a.packed]]}],
                               ["NFTA_SET_ELEM_TIMEOUT", 3600000],
                               ["NFTA_SET_ELEM_EXPIRATION", 3600000],
                               ["NFTA_SET_ELEM_USERDATA", udata]]} for a in addrs]
        pr2._command(nft_set_elem_list_msg, {"add": NFT_MSG_NEWSETELEM}, "add",
                     {"table": table, "set": "allow4", "elements": elements})

    def close():
        pr2.close()

    return {"netlink": netlink, "nft_cmd": nft_cmd, "nft_json": nft_json, "pyroute2": pyroute2,
            "_close": close}


def _pyroute2_element_verb() -> str:
    """What pyroute2's high-level NFTables API says when asked for a set element."""
    from pyroute2.nftables.main import NFTables
    pr2 = NFTables(nfgen_family=1)
    try:
        pr2.set_elem("add", table="t", set="allow4")
    except Exception as exc:                    # noqa: BLE001 - the exact error is the figure
        return f"{type(exc).__name__}: {exc}"
    finally:
        pr2.close()
    return "no error"


def _chain_listings() -> dict:
    """The read side's chain listing: our GETCHAIN dump vs libnftables ``list chains`` JSON,
    with four more tables of two base chains each (as docker or a host firewall would add)."""
    import nftables
    nft = nftables.Nftables()
    nft.set_json_output(True)
    for i in range(4):
        rc, _out, err = nft.cmd(
            f"add table ip other{i}\n"
            f"add chain ip other{i} natout {{ type nat hook output priority -100; }}\n"
            f"add chain ip other{i} filt {{ type filter hook forward priority 0; }}")
        if rc:
            raise RuntimeError(err)

    def via_json():
        rc, out, err = nft.json_cmd({"nftables": [{"list": {"chains": {}}}]})
        if rc:
            raise RuntimeError(err)
        return [(c["family"], c["table"], c["name"], c.get("hook"), c.get("prio"), c.get("type"),
                 c.get("policy")) for c in (i["chain"] for i in out["nftables"] if "chain" in i)]

    sock = NftablesSocket()
    ways = {"netlink": lambda: nft_state.chains(sock), "libnftables_json": via_json}
    out = {}
    for way, func in ways.items():
        func()
        rounds = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(300):
                func()
            rounds.append((time.perf_counter() - t) / 300 * 1e6)
        out[f"us_chains_{way}"] = round(min(rounds), 1)
    out["chains_listed"] = len(via_json())
    sock.close()
    for i in range(4):
        nft.cmd(f"delete table ip other{i}")
    return out


def compare_inside(calls: int) -> dict:
    """The comparison, in the current (throwaway) namespace: a dict of figures.

    ``us_<way>_<n>``: the best of 5 rounds (ways interleaved, so load hits all alike) of µs per
    call adding n elements, ``median_<way>_<n>`` their median; ``ratio_<way>_<n>``: best over
    the hand-written batch's best.  The best round is the least disturbed by other processes on
    a shared machine; the median shows how much they disturbed.
    """
    import importlib.metadata
    import subprocess
    table = "bench_cmp"
    backend = NftablesBackend(RulesetSpec(table=table))
    backend.ensure()
    nft_version = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout
    out: dict = {"calls": calls, "pyroute2": importlib.metadata.version("pyroute2"),
                 "libnftables": nft_version.strip(), "pyroute2_set_elem": _pyroute2_element_verb(),
                 "loadavg": os.getloadavg()[0]}
    writers = _writers(table, backend)
    try:
        v4 = pool(4, "100.64.0.0")
        for n in COMPARE_SIZES:
            work = [[v4[(i * n + k) % POOL] for k in range(n)] for i in range(calls)]
            rounds: dict = {way: [] for way in COMPARE_WAYS}
            for way in COMPARE_WAYS:                  # warm-up (and the first inserts)
                for addrs in work[:200]:
                    writers[way](addrs)
            for _ in range(5):
                for way in COMPARE_WAYS:
                    write = writers[way]
                    t = time.perf_counter()
                    for addrs in work:
                        write(addrs)
                    rounds[way].append((time.perf_counter() - t) / calls * 1e6)
            for way, r in rounds.items():
                out[f"us_{way}_{n}"] = round(min(r), 1)
                out[f"median_{way}_{n}"] = round(statistics.median(r), 1)
            for way in COMPARE_WAYS:
                out[f"ratio_{way}_{n}"] = round(out[f"us_{way}_{n}"] / out[f"us_netlink_{n}"], 1)
        out.update(_chain_listings())
        out["errors"] = backend.errors
    finally:
        writers["_close"]()
        backend.remove()
        backend.close()
    return out


def compare(calls: int) -> dict:
    """Run :func:`compare_inside` in a namespace of its own (created and deleted here); root only."""
    from testbed.throwaway_netns import NetNS
    with NetNS("ntfw-cmp") as ns:
        return ns.run(compare_inside, calls, timeout=1800)


def print_comparison(f: dict) -> None:
    print(f"adding n IPv4 elements (timeout, expiration, comment) to one set: µs per call, "
          f"best of 5 rounds x {f['calls']} calls [median]; ratio of the best to the "
          "hand-written batch's")
    labels = {"netlink": "hand-written netlink batch (grant)",
              "nft_cmd": "libnftables cmd('add element …')",
              "nft_json": "libnftables json_cmd(add element)",
              "pyroute2": "pyroute2 NFTSocket NEWSETELEM"}
    print(f"  {'way':<38}" + "".join(f"{f'n={n}':>27}" for n in COMPARE_SIZES))
    for way in COMPARE_WAYS:
        cells = "".join(f"{f[f'us_{way}_{n}']:>9.1f} [{f[f'median_{way}_{n}']:>7.1f}] "
                        f"{f[f'ratio_{way}_{n}']:>5.1f}x" for n in COMPARE_SIZES)
        print(f"  {labels[way]:<38}{cells}")
    print(f"pyroute2 {f['pyroute2']} NFTables.set_elem(...): {f['pyroute2_set_elem']}; "
          f"{f['libnftables']}; load average at the start {f['loadavg']:.2f}")
    print(f"chain listing ({f['chains_listed']} chains, best of 5 x 300): GETCHAIN dump "
          f"{f['us_chains_netlink']} µs, libnftables list chains JSON "
          f"{f['us_chains_libnftables_json']} µs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=None,
                    help="calls per case (default 20000; 3000 with --compare)")
    ap.add_argument("--fill", type=int, default=1_000_000)
    ap.add_argument("--compare", action="store_true",
                    help="time the answer-path write by hand-written netlink, libnftables, pyroute2")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the control-plane timings (list_grants of --fill takes ~30 s)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("fw_write: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    print(f"{sys.executable} {sys.version.split()[0]}; kernel {os.uname().release}", flush=True)
    if args.compare:
        figures = compare(args.calls or 3000)
        print_comparison(figures)
        print(json.dumps(figures))
        return 0
    figures = measure(args.calls or 20_000, args.fill, not args.no_control)
    print_figures(figures)
    print(json.dumps({k: v for k, v in figures.items() if isinstance(v, (int, float))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

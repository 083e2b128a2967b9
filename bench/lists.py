"""Blocklists at scale (issue 15): load time and memory for 100k and 1M entries, and the answer
path's name check with a million entries against none.

    nice -n 10 python3 bench/lists.py            # 100k and 1M; ~1 minute
    python3 bench/lists.py --sizes 100000 --json

Each size is loaded in a fresh child process (so RSS is that load's alone): the list file is a
hosts file of synthetic names (3-4 labels, like real ad and tracker lists).  Reported: the time
of ``Loader.load()`` (parse + index), the process RSS growth after it and its peak growth during
it (VmHWM), and the same names held the naive way (a dict name -> packed line) for comparison.

The check: ``Policy.check_name`` on 200,000 names (4 labels; 10 % of them listed) with no list,
a million-entry hosts list (exact names: one probe per name), the same million names as AdBlock
``||name^`` rules (the name and every name below: a probe per plausible suffix) — ns per call —
and the same probes against a plain dict for reference.
No network, no root, no Unbound: pure library code.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                       # resets VmHWM to the current RSS
    except OSError:
        pass


def name(i: int) -> str:
    return f"t{i * 2654435761 % 1000003:x}.ads{i % 9973}.example{i % 97}.com"


def write_list(path: Path, n: int, fmt: str = "hosts") -> None:
    line = "0.0.0.0 {}\n" if fmt == "hosts" else "||{}^\n"
    with open(path, "w") as f:
        f.write(f"# synthetic {fmt} list\n")
        for i in range(n):
            f.write(line.format(name(i)))


def child_load(path: str, n: int) -> dict:
    from nettrust_core.lists import ListSpec, Loader
    gc.collect()
    base = rss_kib()
    reset_peak()
    started = time.perf_counter()
    loader = Loader([ListSpec("bench", path, "hosts")], max_entries=n + 10)
    index, reports = loader.load()
    seconds = time.perf_counter() - started
    after, peak = rss_kib(), rss_kib("VmHWM")
    out = {"entries": len(index), "load_s": round(seconds, 3),
           "rss_mib": round((after - base) / 1024, 1), "peak_mib": round((peak - base) / 1024, 1),
           "table_mib": round((index.deny.nbytes() + index.allow.nbytes()) / 2**20, 1)}
    # A reload as the watcher does it: the file changed, the old index stays in use meanwhile.
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    reset_peak()
    started = time.perf_counter()
    new, _ = loader.load()
    out["reload_s"] = round(time.perf_counter() - started, 3)
    out["reload_peak_mib"] = round((rss_kib("VmHWM") - base) / 1024, 1)
    del index, new, reports, loader
    gc.collect()
    base = rss_kib()
    started = time.perf_counter()
    naive = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) == 2:
                naive[fields[1]] = number << 16
    out["dict_load_s"] = round(time.perf_counter() - started, 3)
    out["dict_rss_mib"] = round((rss_kib() - base) / 1024, 1)
    return out


def child_check(path: str, n: int) -> dict:
    from nettrust_core.config import parse_config
    from nettrust_core.lists import ListSpec, Loader
    from nettrust_core.policy import Policy
    config = parse_config('[policy]\ndeny = ["**.doubleclick.net", "tracker.example"]\n')
    full, _ = Loader([ListSpec("bench", path, "hosts")], max_entries=n + 10).load()
    adblock = Path(path + ".adblock")
    write_list(adblock, n, "adblock")
    deep, _ = Loader([ListSpec("bench", str(adblock), "adblock")], max_entries=2 * n + 10).load()
    adblock.unlink()
    rnd = random.Random(15)
    queries = [name(rnd.randrange(n)) if rnd.random() < 0.1 else
               f"www{rnd.randrange(10**6)}.cdn{rnd.randrange(999)}.site{rnd.randrange(99)}.org"
               for _ in range(200_000)]
    naive = {name(i): i for i in range(n)}

    def dict_probes(queries):
        # The same probes against a plain dict: what the compact table trades speed for.
        for q in queries:
            if q not in naive:
                suffix = q
                while (dot := suffix.find(".")) >= 0:
                    suffix = suffix[dot + 1:]
                    if suffix in naive:
                        break

    runs = {"patterns only (no lists)": Policy(config).check_name,
            f"{n} hosts entries (exact names)": Policy(config, full).check_name,
            f"{n} AdBlock rules (name + below)": Policy(config, deep).check_name}
    times: dict[str, list[float]] = {label: [] for label in runs}
    times["plain dict, same probes (reference)"] = []
    for _ in range(7):                     # interleaved rounds: load on the machine hits all
        for label, check in runs.items():
            started = time.perf_counter()
            for q in queries:
                check(q)
            times[label].append((time.perf_counter() - started) / len(queries) * 1e9)
        started = time.perf_counter()
        dict_probes(queries)
        times["plain dict, same probes (reference)"].append(
            (time.perf_counter() - started) / len(queries) * 1e9)
    return {label: {"median": round(sorted(t)[len(t) // 2]), "best": round(min(t))}
            for label, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        what, path, n = args.child
        result = (child_load if what == "load" else child_check)(path, int(n))
        print(json.dumps(result))
        return 0
    results: dict = {"load": {}, "check_ns": {}}
    with tempfile.TemporaryDirectory(prefix="nettrust-bench-lists-") as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"hosts-{n}"
            write_list(path, n)
            for what in ("load", "check"):
                if what == "check" and n != max(args.sizes):
                    continue
                proc = subprocess.run([sys.executable, __file__, "--child", what, str(path),
                                       str(n)], capture_output=True, text=True, check=True)
                results[what if what == "load" else "check_ns"][n] = json.loads(proc.stdout)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("load (fresh process per size; RSS growth with the loader kept, as in the resolver; "
          "peaks during the load and during a reload while the old index is still held)")
    print(f"{'entries':>10} {'load s':>7} {'RSS MiB':>8} {'peak MiB':>9} {'table MiB':>10} "
          f"{'reload s':>9} {'peak MiB':>9} {'dict s':>7} {'dict MiB':>9}")
    for r in results["load"].values():
        print(f"{r['entries']:>10} {r['load_s']:>7} {r['rss_mib']:>8} {r['peak_mib']:>9} "
              f"{r['table_mib']:>10} {r['reload_s']:>9} {r['reload_peak_mib']:>9} "
              f"{r['dict_load_s']:>7} {r['dict_rss_mib']:>9}")
    for n, r in results["check_ns"].items():
        print(f"\nPolicy.check_name, ns per call (7 interleaved rounds x 200k names of 4 labels, "
              f"10 % listed), index of {n}:")
        print(f"  {'':<40} {'median':>7} {'best':>7}")
        for label, ns in r.items():
            print(f"  {label:<40} {ns['median']:>7} {ns['best']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark run: one lab, every configuration in interleaved rounds, the race, the
micro-benchmarks, then the printed tables and the markdown report."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.lab import Lab, missing_prerequisites

from . import machine, micro, profile, race
from .configs import (NOT_SUPPORTED, Dnsmasq, NetTrust, NetTrustGateway, NetTrustStats,
                      PassThroughModule, PassThroughRuleset, PlainUnbound, PlainUnboundProcesses,
                      Unavailable)
from .measure import Phase, dnsperf, server_pids, thread_cpu, thread_split
from .report import Results
from .stages import NetTrustStages
from .zone import BenchZone, write_queries

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("unbound", "nft", "dnsperf", "dnsmasq")


@dataclass
class Settings:
    quick: bool = False
    rounds: int = 3
    seconds: float = 8.0             # throughput phases
    latency_seconds: float = 5.0     # fixed-rate phases
    rate: int = 1000                 # QPS of the fixed-rate phases
    clients: int = 16
    outstanding: int = 200
    names: int = 120_000
    short_names: int = 3_000
    hit_names: int = 1_999           # odd: successive passes reach every dnsperf client port
    warm_passes: int = 16
    race_trials: int = 10_000
    fw_calls: int = 10_000
    fw_fill: int = 1_000_000
    restart: bool = True
    restart_grants: int = 1_000_000
    profile: bool = False            # py-spy on NetTrust default during the last round's misses
    only: tuple[str, ...] = ()       # development A/B: these configurations only, no race/micro
    started: str = ""

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if not quick:
            return cls()
        return cls(quick=True, rounds=1, seconds=1.0, latency_seconds=1.0, rate=500, names=20_000,
                   short_names=300, hit_names=199, race_trials=1_000, fw_calls=1_000, fw_fill=10_000,
                   restart=False)


class Workload:
    """The query files of one run; which names each phase uses (none is shared by two)."""

    def __init__(self, directory: Path, s: Settings) -> None:
        directory.mkdir(exist_ok=True)
        self.directory = directory
        latency_names = int(s.rate * s.latency_seconds * 1.2) + 100
        race_names = s.race_trials * 7 // 10
        miss_end = s.names - latency_names - race_names
        if miss_end <= s.hit_names:
            raise ValueError("the bench zone is too small for these settings")
        self.hit = directory / "hit.txt"
        self.miss = directory / "miss.txt"
        self.lat_miss = directory / "lat_miss.txt"
        write_queries(self.hit, range(0, s.hit_names))
        self.miss_queries = write_queries(self.miss, range(s.hit_names, miss_end), ("A", "AAAA"))
        write_queries(self.lat_miss, range(miss_end, miss_end + latency_names))
        self.race_first = miss_end + latency_names


def measure(lab, server, work: Workload, s: Settings, sample: bool = False) -> dict[str, Phase]:
    """Start ``server``, run every phase, stop it (also on failure).

    ``sample``: py-spy the server during the miss phase (``server.profile`` gets the summary)."""
    server.start()
    src = {"source": getattr(server, "client_source", None)}
    try:
        dnsperf(lab, work.hit, seconds=120, runs=s.warm_passes, clients=s.clients, **src)  # warm-up
        hit = dnsperf(lab, work.hit, seconds=s.seconds, clients=s.clients, outstanding=s.outstanding,
                      **src)
        sampler = (profile.Sampler(server_pids(lab.host_ns)[0], s.seconds, work.directory / "profile.raw")
                   if sample else None)
        phases = {
            "hit": hit,
            "miss": dnsperf(lab, work.miss, seconds=s.seconds, runs=1, clients=s.clients,
                            outstanding=s.outstanding, **src),
            "lat_miss": dnsperf(lab, work.lat_miss, seconds=s.latency_seconds, runs=1, max_qps=s.rate,
                                clients=4, latency=True, **src),
            "lat_hit": dnsperf(lab, work.hit, seconds=s.latency_seconds, max_qps=s.rate, clients=4,
                               latency=True, **src),
        }
        if isinstance(server, Dnsmasq):
            server.elements = server.set_size()
        if sampler is not None:
            server.profile = sampler.summary()
        return phases
    finally:
        server.stop()


def progress(n: int, rounds: int, label: str, phases: dict[str, Phase]) -> None:
    h, m, lm = phases["hit"], phases["miss"], phases["lat_miss"]
    split = "" if h.busiest_share != h.busiest_share else \
        f"   busiest process: {h.busiest_share:.0%} of hit CPU, {m.busiest_share:.0%} of miss CPU"
    print(f"round {n}/{rounds}  {label:<30} hit {h.qps:>8,.0f} q/s {h.cpu_us_per_query:5.1f} µs/q   "
          f"miss {m.qps:>7,.0f} q/s {m.cpu_us_per_query:5.1f} µs/q   miss p50 {lm.percentile_ms(50):.3f} ms"
          + split, flush=True)


def run(s: Settings, output: Path) -> Results:
    t0 = time.monotonic()
    problems = missing_prerequisites(TOOLS)
    if problems:
        raise SystemExit("bench: cannot run:\n  - " + "\n  - ".join(problems) +
                         "\n(sudo bench/run installs the packages)")
    zone = BenchZone(s.names, s.short_names)
    results = Results(settings=asdict(s), labels={}, notes=dict(NOT_SUPPORTED),
                      machine=machine.describe(REPO))
    with Lab(extra_zones=zone.lab_zones()) as lab:
        print(f"lab {lab.token}: bench.test with {s.names:,} names ready in {lab.timings['total']:.1f} s",
              flush=True)
        work = Workload(lab.work_dir / "bench", s)
        servers = [PlainUnbound(lab), PlainUnboundProcesses(lab), PassThroughModule(lab),
                   PassThroughRuleset(lab),
                   NetTrust(lab), NetTrust(lab, instances=2),
                   NetTrustGateway(lab), NetTrustStats(lab),
                   NetTrustStats(lab, cache_hits=False), Dnsmasq(lab)]
        if s.only:
            servers = [srv for srv in servers if srv.key in s.only]
        results.labels = {srv.key: srv.label for srv in servers}
        for n in range(s.rounds):
            this_round: dict[str, dict[str, Phase]] = {}
            for server in servers[n % len(servers):] + servers[:n % len(servers)]:
                if server.key in results.unavailable:
                    continue
                try:
                    sample = s.profile and n == s.rounds - 1 and server.key == "nettrust"
                    this_round[server.key] = measure(lab, server, work, s, sample)
                    if sample:
                        results.profile = f"{server.label}, cache-miss phase:\n\n{server.profile}"
                except Unavailable as why:
                    results.unavailable[server.key] = str(why)
                    print(f"round {n + 1}/{s.rounds}  {server.label:<30} {why}", flush=True)
                    continue
                progress(n + 1, s.rounds, server.label, this_round[server.key])
            results.rounds.append({k: this_round[k] for k in results.labels if k in this_round})
        if s.profile:
            results.stages = stage_timings(lab, work, s)
        if s.only:
            results.notes["partial run"] = f"--only {','.join(s.only)}: no race, no micro-benchmarks"
        else:
            run_races(lab, results, servers, zone, work, s)
    if not s.only:
        run_micro(results, s)
    results.seconds = time.monotonic() - t0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(results.markdown())
    return results


def stage_timings(lab, work: Workload, s: Settings) -> str:
    """NetTrust default once more, its adapter's stages timed inside Unbound (bench.stages)."""
    server = NetTrustStages(lab)
    server.start()
    try:
        dnsperf(lab, work.hit, seconds=120, runs=s.warm_passes, clients=s.clients)
        pid = server_pids(lab.host_ns)[0]            # one process: NetTrust default
        before = thread_cpu(pid)
        miss = dnsperf(lab, work.miss, seconds=s.seconds, runs=1, clients=s.clients,
                       outstanding=s.outstanding)
        threads = thread_split(pid, before, thread_cpu(pid))
    finally:
        server.stop()
    print(f"stages timed: miss {miss.qps:,.0f} q/s {miss.cpu_us_per_query:.1f} µs/q", flush=True)
    return server.summary(miss.cpu_us_per_query, threads, miss.completed)


def run_races(lab, results: Results, servers: list, zone: BenchZone, work: Workload, s: Settings) -> None:
    """The race (resolve, then connect at once), one and two processes; the peer's insert note."""
    dnsmasq = servers[-1]
    results.notes["dnsmasq --nftset"] = (f"added {getattr(dnsmasq, 'elements', 0):,} IPv4 elements "
                                         f"in the last round (proof the peer really inserts)")
    for instances in (1, 2):
        host = NetTrust(lab, instances=instances, config_text=race.RACE_CONFIG)
        if host.key in results.unavailable:
            continue
        host.start()
        try:
            outcome = race.run(lab, f"{host.label} (grants min_ttl 1s, grace 1s)", zone,
                               s.race_trials, work.race_first)
        finally:
            host.stop()
        results.races.append(outcome)
        print(f"race {outcome.label}: {outcome.failed} of {outcome.trials} first connects failed "
              f"({outcome.seconds:.1f} s)", flush=True)


def run_micro(results: Results, s: Settings) -> None:
    """The micro-benchmarks: the firewall write, restarts with 1M grants (kernel and Redis trackers)."""
    results.micro.append(micro.fw_write(s.fw_calls, s.fw_fill))
    print(f"fw_write: {results.micro[-1].status}", flush=True)
    if s.restart:
        # No synchronous-dump baseline (issue 5b's before/after figure): it alone takes ~30 s per size.
        results.micro.append(micro.restart(["--grants", str(s.restart_grants), "--no-baseline"]))
        print(f"restart: {results.micro[-1].status}", flush=True)
        # The fleet's shared tracker (issue 19): read back from a redis-server, one instance.
        results.micro.append(micro.restart(["--grants", str(s.restart_grants), "--no-baseline",
                                            "--tracker", "redis", "--instances", "1"],
                                           label="restart-redis"))
        print(f"restart (tracker = redis): {results.micro[-1].status}", flush=True)
    else:
        results.micro.append(micro.MicroResult("restart", status="skipped (--quick)"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description="NetTrust against plain Unbound "
                                 "and dnsmasq --nftset: throughput, CPU, latency, race, micro-benchmarks.")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 1 s phases, small zone (< 1 min)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3; 1 with --quick)")
    ap.add_argument("--seconds", type=float, help="length of each throughput phase")
    ap.add_argument("--profile", action="store_true",
                    help="sample NetTrust default with py-spy during the last round's cache misses")
    ap.add_argument("--only", help="development A/B: comma-separated configuration keys (plain, plain_x2, "
                    "passthrough, passthrough_ruleset, nettrust, nettrust_x2, nettrust_gateway, nettrust_stats, "
                    "nettrust_stats_nohits, dnsmasq); skips the race and micro-benchmarks")
    ap.add_argument("--output", type=Path, help="markdown report (default bench/results/<UTC time>.md)")
    args = ap.parse_args(argv)
    s = Settings.for_mode(args.quick)
    if args.rounds is not None:
        s.rounds = max(1, args.rounds)
    if args.seconds is not None:
        s.seconds = args.seconds
    s.profile = args.profile
    if args.only:
        s.only = tuple(k.strip() for k in args.only.split(",") if k.strip())
    now = dt.datetime.now(dt.timezone.utc)
    s.started = now.strftime("%Y-%m-%d %H:%M UTC")
    output = args.output or REPO / "bench" / "results" / f"{now:%Y-%m-%d-%H%M}.md"
    results = run(s, output)
    print()
    print(results.tables())
    print()
    print(results.targets_table())
    for mode, why in results.notes.items():
        print(f"{mode}: {why}")
    print(f"\nreport: {output}  ({results.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tables, ratios and the verdict on each target, as printed text and as a markdown report.

Every ratio is formed within one round (a configuration against plain Unbound or dnsmasq
measured minutes apart on the same machine) and the median over rounds is shown: absolute
QPS on a shared machine swings far more than ratios do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .measure import Phase, median

PHASES = ("hit", "miss", "lat_miss", "lat_hit")
PLAIN, DNSMASQ, NETTRUST = "plain", "dnsmasq", "nettrust"
GATEWAY = "nettrust_gateway"
STATS = "nettrust_stats"
STATS_NOHITS = "nettrust_stats_nohits"
PASSTHROUGH = "passthrough"
RULESET = "passthrough_ruleset"           # the no-op module under NetTrust's ruleset: the hits' floor

Round = dict[str, dict[str, Phase]]      # configuration key -> phase name -> what it measured


@dataclass
class Results:
    settings: dict
    labels: dict[str, str]                       # configuration key -> label, in table order
    rounds: list[Round] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    races: list = field(default_factory=list)    # bench.race.RaceResult
    micro: list = field(default_factory=list)    # bench.micro.MicroResult
    machine: dict[str, str] = field(default_factory=dict)
    profile: str = ""                            # bench.profile summary (--profile)
    stages: str = ""                             # bench.stages summary (--profile)
    seconds: float = 0.0

    # ------------------------------------------------------------ figures

    def measured(self) -> list[str]:
        return [k for k in self.labels if any(k in r for r in self.rounds)]

    def figure(self, key: str, phase: str, metric) -> float:
        """Median over rounds of ``metric(Phase)``."""
        return median([metric(r[key][phase]) for r in self.rounds if key in r])

    def ratio(self, key: str, base: str, phase: str, metric) -> float:
        """Median over rounds of metric(key) / metric(base), both from the same round."""
        values = []
        for r in self.rounds:
            if key in r and base in r:
                b = metric(r[base][phase])
                values.append(metric(r[key][phase]) / b if b else float("nan"))
        return median(values)

    def difference(self, key: str, base: str, phase: str, metric) -> float:
        return median([metric(r[key][phase]) - metric(r[base][phase])
                       for r in self.rounds if key in r and base in r])

    def best_nettrust_miss(self) -> str | None:
        """The NetTrust deployment with the highest median cache-miss QPS ratio to plain."""
        keys = [k for k in self.measured() if k.startswith(NETTRUST) and k not in (GATEWAY, STATS, STATS_NOHITS)]
        if not keys:
            return None
        return max(keys, key=lambda k: _nan_low(self.ratio(k, PLAIN, "miss", qps)))

    # ------------------------------------------------------------ targets

    def targets(self) -> list[tuple[str, str, str]]:
        """(target, measured, verdict) for every target of issues 5 and 17."""
        rows = []
        have = self.measured()
        if NETTRUST in have and PASSTHROUGH in have:
            d = self.difference(NETTRUST, PASSTHROUGH, "miss", cpu)
            rows.append(("NetTrust's own CPU per cache miss (NetTrust default − no-op module) ≤ 35 µs",
                         f"{d:.1f} µs", _verdict(d <= 35, d)))
        else:
            rows.append(("NetTrust's own CPU per cache miss ≤ 35 µs", "—",
                         "not measured (needs NetTrust default and the no-op module)"))
        if NETTRUST in have:
            r = self.ratio(NETTRUST, PLAIN, "miss", qps)
            rows.append(("cache-miss QPS, NetTrust default ≥ 0.5× plain Unbound",
                         f"{r:.2f}× (CPU/q {_x(self.ratio(NETTRUST, PLAIN, 'miss', cpu))})",
                         _verdict(r >= 0.5, r)))
        best = self.best_nettrust_miss()
        if best is not None:
            label = self.labels[best]
            for base, goal, name in ((DNSMASQ, 2.0, "dnsmasq --nftset"), (PLAIN, 0.7, "plain Unbound")):
                r = self.ratio(best, base, "miss", qps)
                rows.append((f"cache-miss QPS, best NetTrust ({label}) ≥ {goal:g}× {name}",
                             f"{r:.2f}× (CPU/q {_x(self.ratio(best, base, 'miss', cpu))})",
                             _verdict(r >= goal, r)))
        # Cache hits run no NetTrust code: what the ruleset alone costs them is their ceiling.
        floor = (f"; the ruleset alone: {self.ratio(RULESET, PLAIN, 'hit', qps):.2f}×"
                 if RULESET in have else "")
        for key in [k for k in have if k.startswith(NETTRUST) and k not in (GATEWAY, STATS, STATS_NOHITS)]:
            r = self.ratio(key, PLAIN, "hit", qps)
            hit_cpu = _x(self.ratio(key, PLAIN, "hit", cpu))
            rows.append((f"cache-hit QPS, {self.labels[key]} ≥ 0.95× plain Unbound",
                         f"{r:.2f}× (CPU/q {hit_cpu}{floor})", _verdict(r >= 0.95, r)))
            same = key.replace(NETTRUST, PLAIN, 1)     # nettrust_x2 -> plain_x2: the same shape
            if key != NETTRUST and same in have:
                r = self.ratio(key, same, "hit", qps)
                rows.append((f"cache-hit QPS, {self.labels[key]} ≥ 0.95× {self.labels[same]} "
                             "(Unbound in the same shape)",
                             f"{r:.2f}× (CPU/q {_x(self.ratio(key, same, 'hit', cpu))})",
                             _verdict(r >= 0.95, r)))
        for key, how in ((STATS, "cache hits streamed (dnstap)"),
                         (STATS_NOHITS, "cache_hits = false: hits only in Unbound's counters")):
            if key not in have or NETTRUST not in have:
                continue
            r = self.ratio(key, NETTRUST, "hit", qps)
            rows.append((f"statistics on, {how}: hit QPS ≥ 0.85× statistics off",
                         f"{r:.2f}× (CPU/q {_x(self.ratio(key, NETTRUST, 'hit', cpu))})",
                         _verdict(r >= 0.85, r)))
            c = self.ratio(key, NETTRUST, "miss", cpu)
            rows.append((f"statistics on, {how}: miss CPU/q ≤ 1.15× statistics off", _x(c),
                         _verdict(c <= 1.15, c)))
        if NETTRUST not in have or (STATS not in have and STATS_NOHITS not in have):
            rows.append(("statistics on: hit QPS ≥ 0.85×, miss CPU ≤ 1.15× statistics off", "—",
                         f"not measured ({self.unavailable.get(STATS, 'not run')})"))
        if GATEWAY in self.measured():
            r = self.ratio(GATEWAY, PLAIN, "hit", qps)
            rows.append(("cache-hit QPS with per-client callbacks ≥ 0.3× plain",
                         f"{r:.2f}× (CPU/q {_x(self.ratio(GATEWAY, PLAIN, 'hit', cpu))})",
                         _verdict(r >= 0.3, r)))
        else:
            rows.append(("cache-hit QPS with per-client callbacks ≥ 0.3× plain", "—",
                         f"not measured ({self.unavailable.get(GATEWAY, 'not run')})"))
        fw = next((m for m in self.micro if m.name == "fw_write"), None)
        if fw is not None and "us_1_empty" in fw.figures:
            empty, filled = fw.figures["us_1_empty"], fw.figures["us_1_filled"]
            rows.append(("answer-path firewall write ≤ 10 µs per answer (1 address, empty set)",
                         f"{empty:.2f} µs", _verdict(empty <= 10, empty)))
            grow = filled / empty
            small = "" if fw.figures["fill"] >= 1e6 else " (not at 1M: quick run)"
            rows.append((f"same with {fw.figures['fill']:,.0f} elements ≤ 1.2× empty",
                         f"{grow:.2f}× ({filled:.2f} µs)", _verdict(grow <= 1.2, grow) + small))
        else:
            rows.append(("answer-path firewall write ≤ 10 µs; 1M elements ≤ 1.2× empty", "—",
                         f"not measured ({fw.status if fw else 'not run'})"))
        d = self.difference(NETTRUST, PLAIN, "lat_miss", lambda p: p.percentile_ms(50))
        rows.append(("added p50 latency per cache miss ≤ +0.07 ms (NetTrust default − plain)",
                     f"{d:+.3f} ms", _verdict(d <= 0.07, d)))
        if self.races:
            failed = sum(r.failed for r in self.races)
            trials = sum(r.trials for r in self.races)
            rows.append(("0 failed first connects in the race", f"{failed} of {trials}",
                         _verdict(failed == 0, failed)))
        else:
            rows.append(("0 failed first connects in the race", "—", "not run"))
        rs = next((m for m in self.micro if m.name == "restart"), None)
        if rs is not None and "seconds" in rs.figures:
            s = rs.figures["seconds"]
            grants = rs.figures.get("grants")
            measured = f"{s:.1f} s" + (f" ({grants:,.0f} grants)" if grants else "")
            if "adopted_seconds" in rs.figures:   # restart.py: answering exactly vs reading all back
                measured += f"; background adoption done after {rs.figures['adopted_seconds']:.0f} s"
            rows.append(("restart with 1M grants ≤ 10 s: answering, every answer exact", measured,
                         _verdict(s <= 10, s)))
            one = rs.figures.get("adopted_one_seconds")
            if one is not None:     # the "exact": the tracker holds every live grant
                rows.append(("restart with 1M grants ≤ 10 s: adoption complete, one process",
                             f"{one:.1f} s", _verdict(one <= 10, one)))
        else:
            rows.append(("restart with 1M grants ≤ 10 s", "—",
                         f"not measured ({rs.status if rs else 'not run'})"))
        rr = next((m for m in self.micro if m.name == "restart-redis"), None)
        if rr is not None and "adopted_seconds" in rr.figures:
            a = rr.figures["adopted_seconds"]
            rows.append(('restart with 1M grants, fleet.tracker = "redis": adoption complete ≤ 5 s',
                         f"{a:.1f} s (answering exactly after {rr.figures.get('seconds', 0):.2f} s)",
                         _verdict(a <= 5, a)))
        return rows

    # ------------------------------------------------------------ rendering

    def tables(self) -> str:
        """The throughput/latency table and the ratio table (markdown, also printed)."""
        keys = self.measured()
        out = ["| configuration | hit QPS | hit CPU µs/q | miss QPS | miss CPU µs/q "
               "| miss latency p50 / p99 / p99.9 ms | hit latency p50 / p99 / p99.9 ms | lost / not NOERROR |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k in keys:
            phases = [p for r in self.rounds if k in r for p in r[k].values()]
            errors = f"{sum(p.lost for p in phases)} / {sum(p.failed for p in phases)}"
            out.append(f"| {self.labels[k]} | {self.figure(k, 'hit', qps):,.0f} "
                       f"| {self.figure(k, 'hit', cpu):.1f} | {self.figure(k, 'miss', qps):,.0f} "
                       f"| {self.figure(k, 'miss', cpu):.1f} "
                       f"| {_pcts(self, k, 'lat_miss')} | {_pcts(self, k, 'lat_hit')} | {errors} |")
        for k, why in self.unavailable.items():
            out.append(f"| {self.labels.get(k, k)} | {why} | | | | | | |")
        out += ["", "| ratios (median of per-round ratios) | hit QPS ×plain | miss QPS ×plain "
                "| hit QPS ×dnsmasq | miss QPS ×dnsmasq | hit CPU/q ×plain | miss CPU/q ×plain | p50 miss − plain |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k in keys:
            cells = [self.ratio(k, PLAIN, "hit", qps), self.ratio(k, PLAIN, "miss", qps),
                     self.ratio(k, DNSMASQ, "hit", qps), self.ratio(k, DNSMASQ, "miss", qps),
                     self.ratio(k, PLAIN, "hit", cpu), self.ratio(k, PLAIN, "miss", cpu)]
            d = self.difference(k, PLAIN, "lat_miss", lambda p: p.percentile_ms(50))
            out.append(f"| {self.labels[k]} | " + " | ".join(_x(c) for c in cells) + f" | {d:+.3f} ms |")
        spread = [k for k in keys if not math.isnan(self.figure(k, "hit", _busiest))]
        if spread:
            # Several processes behind so-reuseport: the kernel hashes each dnsperf client port
            # to one of them; an uneven share saturates one process while the other idles.
            out += ["", "| several processes: busiest one's share of the server CPU | hits | misses |",
                    "|---|---:|---:|"]
            out += [f"| {self.labels[k]} | {self.figure(k, 'hit', _busiest):.0%} "
                    f"| {self.figure(k, 'miss', _busiest):.0%} |" for k in spread]
        return "\n".join(out)

    def targets_table(self) -> str:
        out = ["| target | measured | verdict |", "|---|---:|---|"]
        out += [f"| {t} | {m} | {v} |" for t, m, v in self.targets()]
        return "\n".join(out)

    def race_table(self) -> str:
        out = []
        for race in self.races:
            out.append(f"**{race.label}**: {race.trials} trials in {race.seconds:.1f} s, "
                       f"{race.failed} failed first connects; SYNs dropped by the far end's full "
                       f"accept queue meanwhile: {race.listen_overflows}")
            out.append("")
            out.append("| kind | trials | ok | failures by outcome |")
            out.append("|---|---:|---:|---|")
            for kind, counts in race.kinds.items():
                bad = ", ".join(f"{o} {n}" for o, n in counts.items() if o != "ok") or "—"
                out.append(f"| {kind} | {sum(counts.values())} | {counts.get('ok', 0)} | {bad} |")
            if race.failures:
                out.append("")
                out.append("First failures: " + "; ".join(
                    f"{f['kind']} {f['name']} → {f['address']}: {f['outcome']}"
                    for f in race.failures[:10]))
            out.append("")
        return "\n".join(out)

    def markdown(self) -> str:
        s = self.settings
        parts = [
            f"# NetTrust benchmark — {s['started']}", "",
            f"Mode: {'quick (smoke run; figures not meaningful)' if s['quick'] else 'full'}; "
            f"{len(self.rounds)} interleaved round(s); phases of {s['seconds']} s (throughput) and "
            f"{s['latency_seconds']} s at {s['rate']} QPS (latency); {s['clients']} dnsperf clients, "
            f"{s['outstanding']} outstanding; zone bench.test with {s['names']:,} names; "
            f"whole run {self.seconds:.0f} s.", "",
            "## Targets", "", self.targets_table(), "",
            "## Throughput, CPU and latency (median over rounds)", "", self.tables(), "",
            "Other modes: " + "; ".join(f"{k}: {v}" for k, v in self.notes.items()), "",
            "## Race: resolve, then connect at once", "", self.race_table() or "not run", "",
            "## Micro-benchmarks", "",
        ]
        if self.profile:
            parts[-2:-2] = ["## Profile (py-spy)", "", self.profile, ""]
        if self.stages:
            parts[-2:-2] = ["## Inside Unbound: the answer path by stage (thread CPU, cache-miss phase)",
                            "", self.stages, ""]
        for m in self.micro:
            parts += [f"### {m.name}: {m.status}", "", "```", m.output.strip() or "(no output)", "```", ""]
        parts += ["## Machine", "", "| | |", "|---|---|",
                  *(f"| {k} | {v} |" for k, v in self.machine.items()), "",
                  "## Method", "", METHOD, "", "## Every round", "", self.rounds_table(), ""]
        return "\n".join(parts)

    def rounds_table(self) -> str:
        out = ["| round | configuration | phase | QPS | CPU µs/q | completed | lost / not NOERROR "
               "| p50 / p99 ms |",
               "|---:|---|---|---:|---:|---:|---:|---:|"]
        for n, r in enumerate(self.rounds, 1):
            for k, phases in r.items():
                for name, p in phases.items():
                    lat = (f"{p.percentile_ms(50):.3f} / {p.percentile_ms(99):.3f}" if p.latencies else "")
                    out.append(f"| {n} | {self.labels[k]} | {name} | {p.qps:,.0f} | {p.cpu_us_per_query:.1f} "
                               f"| {p.completed} | {p.lost} / {p.failed} | {lat} |")
        return "\n".join(out)


METHOD = """\
- Every configuration is started fresh in every round (empty cache, empty sets) and measured with
  the same dnsperf workloads from the lab's host namespace against 127.0.0.1:53; the order of the
  configurations rotates from round to round.  The upstream is NSD in the lab's internet
  namespace serving `bench.test` (unsigned, ~100k names with distinct A/AAAA addresses).
- **hit**: a set of names first resolved (several passes, so every client port — and so every
  SO_REUSEPORT process — has them cached), then asked over and over for the phase.
- **miss**: A and AAAA of names never asked before in this server's life, each once.
- **lat_miss / lat_hit**: dnsperf at a fixed rate with per-query latencies (`-v`), unique names
  / cached names; percentiles by nearest rank.
- **CPU µs/q**: utime+stime of every resolver process in the host namespace over the phase
  (`/proc/<pid>/stat`), divided by the completed queries.
- "Unbound + no-op Python module" runs `python validator iterator` with one thread and a module
  that only passes queries on (`bench/passthrough_module.py`): against plain Unbound it shows what
  any Python module costs, against NetTrust what NetTrust's own answer path costs.
- "no-op module + NetTrust's ruleset" is that module with NetTrust's ruleset loaded (NetTrust
  started and stopped: the ruleset stays) and nothing of NetTrust running: on cache hits, where
  no NetTrust code runs, what the firewall alone costs per query (the netfilter hooks the
  ruleset registers -- its output chain, and conntrack, which its `ct state` rules switch on --
  for the query and its answer on loopback): the floor of every NetTrust deployment's hit rate.
- dnsmasq 2.90 forwards to the same NSD and adds every `bench.test` answer to nftables sets
  (`--nftset`, sets with a 1 h default timeout, matched by an accepting output chain).  NetTrust
  runs with its default configuration as `testbed.product.NetTrustHost` renders it; its ruleset
  is removed after each of its phases so the others run with an open firewall.
- Race: see `bench/race.py`; a failure is a connect refused by the firewall, or one that needed
  a SYN retransmission (no SYN-ACK within 0.8 s, or retransmissions in TCP_INFO)."""


def qps(p: Phase) -> float:
    return p.qps


def cpu(p: Phase) -> float:
    return p.cpu_us_per_query


def _busiest(p: Phase) -> float:
    return p.busiest_share


def _pcts(res: Results, key: str, phase: str) -> str:
    vals = [res.figure(key, phase, lambda p, q=q: p.percentile_ms(q)) for q in (50, 99, 99.9)]
    return " / ".join("—" if math.isnan(v) else f"{v:.3f}" for v in vals)


def _x(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.2f}×"


def _nan_low(v: float) -> float:
    return -1.0 if math.isnan(v) else v


def _verdict(ok: bool, value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "not measured"
    return "**met**" if ok else "**missed**"

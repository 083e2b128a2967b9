"""bench/report.py: every target of the performance issue gets a row and the right verdict.

The figures are made up (two rounds of phases with chosen query counts and CPU seconds); what
is tested is the arithmetic and the verdicts a benchmark run prints, not the machine.
"""

from bench.measure import Phase
from bench.report import Results


def _phase(qps: float, cpu_us: float) -> Phase:
    return Phase(sent=int(qps), completed=int(qps), seconds=1.0, cpu=cpu_us * qps / 1e6)


def _round(nettrust_miss_cpu: float, x2_hit_qps: float, stats_hit_qps: float) -> dict:
    def phases(hit_qps, hit_cpu, miss_qps, miss_cpu):
        return {"hit": _phase(hit_qps, hit_cpu), "miss": _phase(miss_qps, miss_cpu),
                "lat_miss": _phase(100, 1), "lat_hit": _phase(100, 1)}
    return {
        "plain": phases(100_000, 3.0, 30_000, 40.0),
        "passthrough": phases(97_000, 3.1, 15_000, 42.0),
        "nettrust": phases(96_000, 3.2, 16_000, nettrust_miss_cpu),
        "nettrust_x2": phases(x2_hit_qps, 3.3, 24_000, nettrust_miss_cpu),
        "nettrust_stats": phases(stats_hit_qps, 4.0, 15_000, nettrust_miss_cpu * 1.1),
    }


def _results(**kw) -> Results:
    labels = {"plain": "Unbound plain (2 threads)", "passthrough": "Unbound + no-op Python module",
              "nettrust": "NetTrust default", "nettrust_x2": "NetTrust x2 processes",
              "nettrust_stats": "NetTrust + statistics"}
    return Results(settings={}, labels=labels, rounds=[_round(**kw), _round(**kw)])


def _rows(res: Results) -> dict[str, tuple[str, str]]:
    return {t: (m, v) for t, m, v in res.targets()}


def test_every_issue_17_target_has_a_row_with_its_verdict():
    rows = _rows(_results(nettrust_miss_cpu=70.0, x2_hit_qps=74_000, stats_hit_qps=90_000))
    own = rows["NetTrust's own CPU per cache miss (NetTrust default − no-op module) ≤ 35 µs"]
    assert own[0] == "28.0 µs" and own[1] == "**met**"
    assert rows["cache-hit QPS, NetTrust default ≥ 0.95× plain Unbound"][1] == "**met**"
    x2 = rows["cache-hit QPS, NetTrust x2 processes ≥ 0.95× plain Unbound"]
    assert x2[0].startswith("0.74×") and x2[1] == "**missed**"
    hits = rows["statistics on, cache hits streamed (dnstap): hit QPS ≥ 0.85× statistics off"]
    assert hits[0].startswith("0.94×") and hits[1] == "**met**"
    assert rows["statistics on, cache hits streamed (dnstap): miss CPU/q ≤ 1.15× statistics off"][1] == "**met**"
    assert "cache-miss QPS, NetTrust default ≥ 0.5× plain Unbound" in rows
    assert any(t.startswith("cache-miss QPS, best NetTrust (NetTrust x2 processes) ≥ 0.7×") for t in rows)


def test_a_missed_target_says_not_met():
    rows = _rows(_results(nettrust_miss_cpu=142.0, x2_hit_qps=99_000, stats_hit_qps=60_000))
    own = rows["NetTrust's own CPU per cache miss (NetTrust default − no-op module) ≤ 35 µs"]
    assert own[0] == "100.0 µs" and own[1] == "**missed**"
    hits = rows["statistics on, cache hits streamed (dnstap): hit QPS ≥ 0.85× statistics off"]
    assert hits[1] == "**missed**"
    assert rows["cache-hit QPS, NetTrust x2 processes ≥ 0.95× plain Unbound"][1] == "**met**"


def test_hit_targets_name_the_rulesets_own_cost_when_it_was_measured():
    res = _results(nettrust_miss_cpu=70.0, x2_hit_qps=74_000, stats_hit_qps=90_000)
    assert "the ruleset alone" not in _rows(res)["cache-hit QPS, NetTrust default ≥ 0.95× plain Unbound"][0]
    res.labels["passthrough_ruleset"] = "no-op module + NetTrust's ruleset"
    for r in res.rounds:
        r["passthrough_ruleset"] = {"hit": _phase(92_000, 3.3), "miss": _phase(15_000, 42.0)}
    rows = _rows(res)
    assert rows["cache-hit QPS, NetTrust default ≥ 0.95× plain Unbound"][0] == (
        "0.96× (CPU/q 1.07×; the ruleset alone: 0.92×)")
    assert rows["cache-hit QPS, NetTrust x2 processes ≥ 0.95× plain Unbound"][0].endswith(
        "; the ruleset alone: 0.92×)")


def test_the_busiest_process_share_is_reported_for_several_processes():
    res = _results(nettrust_miss_cpu=70.0, x2_hit_qps=74_000, stats_hit_qps=90_000)
    for r in res.rounds:
        r["nettrust_x2"]["hit"].cpu_split = [0.6, 0.2]          # 75 % in one process
        r["nettrust_x2"]["hit"].cpu = 0.8
        r["nettrust_x2"]["miss"].cpu_split = [0.5, 0.5]
        r["nettrust_x2"]["miss"].cpu = 1.0
    tables = res.tables()
    assert "| NetTrust x2 processes | 75% | 50% |" in tables
    assert "| NetTrust default | " in tables and "| NetTrust default | 7" not in tables


def test_restart_rows_judge_answering_adoption_and_the_shared_tracker_apart():
    from bench.micro import MicroResult
    res = _results(nettrust_miss_cpu=70.0, x2_hit_qps=99_000, stats_hit_qps=90_000)
    res.micro = [MicroResult("restart", "ok", figures={"seconds": 0.4, "grants": 1e6,
                                                       "adopted_seconds": 35.0,
                                                       "adopted_one_seconds": 41.0}),
                 MicroResult("restart-redis", "ok", figures={"seconds": 0.5, "adopted_seconds": 4.2})]
    rows = _rows(res)
    assert rows["restart with 1M grants ≤ 10 s: answering, every answer exact"][1] == "**met**"
    one = rows["restart with 1M grants ≤ 10 s: adoption complete, one process"]
    assert one == ("41.0 s", "**missed**")
    shared = rows['restart with 1M grants, fleet.tracker = "redis": adoption complete ≤ 5 s']
    assert shared[0].startswith("4.2 s") and shared[1] == "**met**"


def test_x2_hits_are_also_judged_against_unbound_in_the_same_shape():
    """With "Unbound plain x2 processes" measured, the x2 hit target gets a second row against
    it: the shape's own cost (two one-thread processes) is not NetTrust's."""
    res = _results(nettrust_miss_cpu=70.0, x2_hit_qps=74_000, stats_hit_qps=90_000)
    for r in res.rounds:
        r["plain_x2"] = {"hit": _phase(76_000, 4.3), "miss": _phase(31_000, 41.0),
                         "lat_miss": _phase(100, 1), "lat_hit": _phase(100, 1)}
    res.labels["plain_x2"] = "Unbound plain x2 processes"
    rows = _rows(res)
    same = rows["cache-hit QPS, NetTrust x2 processes ≥ 0.95× Unbound plain x2 processes "
                "(Unbound in the same shape)"]
    assert same[0].startswith("0.97×") and same[1] == "**met**"
    assert rows["cache-hit QPS, NetTrust x2 processes ≥ 0.95× plain Unbound"][1] == "**missed**"
    assert not any("same shape" in t and "NetTrust default" in t for t in rows)

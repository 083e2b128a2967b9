"""The per-hit cost of gateway mode's reply_cache callback, alone (issue 13): cache-hit QPS and
Unbound CPU per query of plain Unbound, NetTrust default (no callback) and NetTrust gateway
(per-client callbacks), interleaved rounds in one lab; the ratios are formed within a round.

    sudo /usr/bin/python3 -m bench.gateway_hits [--rounds 3] [--seconds 5]

A smaller sibling of ``bench/run`` (which measures the same configuration among all others).
"""

from __future__ import annotations

import argparse
import statistics

from testbed.lab import Lab

from .configs import NetTrust, NetTrustGateway, PlainUnbound
from .measure import dnsperf
from .zone import BenchZone, write_queries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway_hits")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--names", type=int, default=1999)
    args = ap.parse_args(argv)
    zone = BenchZone(max(args.names + 100, 3000), 300)
    rows: dict[str, list[tuple[float, float]]] = {}
    with Lab(extra_zones=zone.lab_zones()) as lab:
        hit = lab.work_dir / "hit.txt"
        write_queries(hit, range(0, args.names))
        servers = [PlainUnbound(lab), NetTrust(lab), NetTrustGateway(lab)]
        for n in range(args.rounds):
            for server in servers[n % 3:] + servers[:n % 3]:
                server.start()
                try:
                    src = {"source": getattr(server, "client_source", None)}
                    dnsperf(lab, hit, seconds=60, runs=4, clients=16, **src)        # warm-up
                    p = dnsperf(lab, hit, seconds=args.seconds, clients=16, outstanding=200, **src)
                finally:
                    server.stop()
                rows.setdefault(server.key, []).append((p.qps, p.cpu_us_per_query))
                print(f"round {n + 1} {server.label:<32} {p.qps:>9,.0f} q/s "
                      f"{p.cpu_us_per_query:6.2f} µs/q  lost {p.lost}", flush=True)
    plain = rows["plain"]
    print()
    for key, values in rows.items():
        qps = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        rq = statistics.median(v[0] / p[0] for v, p in zip(values, plain, strict=True))
        rc = statistics.median(v[1] / p[1] for v, p in zip(values, plain, strict=True))
        print(f"{key:<18} hit {qps:>9,.0f} q/s ({rq:.2f}x plain)  CPU {cpu:6.2f} µs/q "
              f"({rc:.2f}x plain, +{cpu - statistics.median(p[1] for p in plain):.2f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

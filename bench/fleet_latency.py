#!/usr/bin/env python3
"""The fleet's publish-to-apply latency for 1, 3 and 10 followers (issue 19).

    sudo /usr/bin/python3 bench/fleet_latency.py [--followers 1 3 10] [--entries 2000] [--rate 400]

A redis-server with TLS and client certificates required runs in a hub namespace; each follower
is a real ``nettrust follow`` in its own namespace (its own nftables ruleset), linked to the hub
by a veth.  The master's publisher (:class:`nettrust_core.fleet.publisher.Publisher`, the module
a master resolver runs, driven here without Unbound) offers ``--entries`` one-address grants at
``--rate`` per second, each stamped with the wall clock at which the answer path would have
enqueued it; every follower measures, after its kernel write, the time since that stamp (its
status file's ``latency_p50``/``latency_p99``).  Prints, per follower count, the median of the
followers' p50s and the largest of their p99s, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO]

from testbed.throwaway_netns import NetNS  # noqa: E402

PORT = 6392
PYTHON = "/usr/bin/python3"
ENV = {**os.environ, "PYTHONPATH": f"{REPO}:/usr/lib/python3/dist-packages"}

FOLLOWER = """[firewall]
resolver_user = ""
table = "ntlat"
[lifecycle]
liveness = false
unauthorized = false
[fleet]
role = "follower"
node = "{node}"
prefix = "{prefix}"
redis_url = "rediss://10.98.{k}.1:{port}/0"
ca_file = "{certs}/ca.crt"
cert_file = "{certs}/node.crt"
key_file = "{certs}/node.key"
status_file = "{status}"
"""

PUBLISH = r"""
import ipaddress, sys, time
from collections import Counter
from nettrust_core.config import parse_config
from nettrust_core.firewall.base import Grant
from nettrust_core.fleet.connect import connect
from nettrust_core.fleet.keys import Keys
from nettrust_core.fleet.publisher import Publisher
certs, prefix, entries, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
config = parse_config(f'''[fleet]
role = "master"
node = "bench"
prefix = "{prefix}"
redis_url = "rediss://127.0.0.1:PORT/0"
ca_file = "{certs}/ca.crt"
cert_file = "{certs}/node.crt"
key_file = "{certs}/node.key"
''')
counters = Counter()
pub = Publisher(lambda: connect(config.fleet, name="bench-publisher"), Keys(prefix), "bench",
                queue_size=65536, retention=3600, counters=counters, config=config)
pub.start()
deadline = time.monotonic() + 10
while not pub.connected and time.monotonic() < deadline:
    time.sleep(0.01)
base = int(ipaddress.IPv4Address(sys.argv[5]))          # each run its own addresses
start = time.monotonic()
for i in range(entries):
    at = start + i / rate
    while (d := at - time.monotonic()) > 0:
        time.sleep(d)
    grant = Grant(ipaddress.IPv4Address(base + i), 300.0, "lat.bench")
    pub.offer((time.time(), (grant,), f"n{i}.lat.bench", "", i + 1, ""))
while not pub.queue.empty():
    time.sleep(0.01)
time.sleep(0.5)
pub.stop()
print(dict(counters))
"""


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run(n: int, entries: int, rate: float, certs: str, hub: NetNS, spokes: list[NetNS],
        work: Path) -> dict:
    prefix = f"lat{n}"
    procs, files = [], []
    try:
        for k in range(1, n + 1):
            status = work / f"{prefix}-f{k}.json"
            cfg = work / f"{prefix}-f{k}.toml"
            cfg.write_text(FOLLOWER.format(node=f"f{k}", prefix=prefix, k=k, port=PORT,
                                           certs=certs, status=status))
            log = open(work / f"{prefix}-f{k}.log", "wb")
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", spokes[k - 1].name, PYTHON, "-m", "nettrust_core.cli",
                 "-c", str(cfg), "follow", "--log-level", "warning"], stdout=log,
                stderr=subprocess.STDOUT, env=ENV, start_new_session=True))
            files.append(status)
        deadline = time.monotonic() + 30
        while not all(_status(f).get("connected") for f in files):
            if time.monotonic() > deadline:
                raise RuntimeError(f"followers not connected: {[_status(f) for f in files]}")
            time.sleep(0.1)
        code = PUBLISH.replace("PORT", str(PORT))
        pub = subprocess.run(["ip", "netns", "exec", hub.name, PYTHON, "-c", code, certs, prefix,
                              str(entries), str(rate), f"20.{n}.0.0"], env=ENV, capture_output=True, text=True,
                             timeout=600)
        if pub.returncode != 0:
            raise RuntimeError(pub.stderr)
        deadline = time.monotonic() + 20
        while not all(_status(f).get("latency_samples", 0) >= entries
                      and _status(f).get("time", 0) > time.time() - 1.5 for f in files):
            if time.monotonic() > deadline:
                raise RuntimeError(f"followers did not apply every entry: "
                                   f"{[_status(f).get('latency_samples') for f in files]}")
            time.sleep(0.2)
        time.sleep(1.2)                           # the status files' next refresh
        stats = [_status(f) for f in files]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(15)
    p50s = [s["latency_p50"] * 1000 for s in stats]
    p99s = [s["latency_p99"] * 1000 for s in stats]
    return {"followers": n, "entries": entries, "rate": rate,
            "p50_ms": round(statistics.median(p50s), 3), "p99_ms": round(max(p99s), 3),
            "p50_ms_each": [round(x, 3) for x in p50s], "p99_ms_each": [round(x, 3) for x in p99s],
            "applied": [s["counters"].get("elements_written", 0) for s in stats]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--followers", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=400.0, help="entries per second")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("fleet_latency: needs root (network namespaces)", file=sys.stderr)
        return 2
    from nettrust_core.fleet.certs import make_ca, make_cert
    most = max(args.followers)
    results = []
    with tempfile.TemporaryDirectory(prefix="nt-fleetlat-") as tmp, NetNS("ntlh") as hub:
        os.chmod(tmp, 0o755)
        make_ca(tmp)
        make_cert(tmp, "server", server_names=["127.0.0.1", *(f"10.98.{k}.1" for k in range(1, most + 1))])
        make_cert(tmp, "node")
        spokes: list[NetNS] = []
        redis = None
        try:
            hub.sh("ip", "link", "set", "lo", "up")
            for k in range(1, most + 1):
                ns = NetNS("ntlf")
                spokes.append(ns)
                ns.sh("ip", "link", "set", "lo", "up")
                ns.sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", f"h{k}",
                      "netns", hub.name)
                ns.sh("ip", "addr", "add", f"10.98.{k}.2/24", "dev", "v0")
                ns.sh("ip", "link", "set", "v0", "up")
                hub.sh("ip", "addr", "add", f"10.98.{k}.1/24", "dev", f"h{k}")
                hub.sh("ip", "link", "set", f"h{k}", "up")
            redis = subprocess.Popen(
                ["ip", "netns", "exec", hub.name, "redis-server", "--bind", "*", "--port", "0",
                 "--tls-port", str(PORT), "--tls-cert-file", f"{tmp}/server.crt",
                 "--tls-key-file", f"{tmp}/server.key", "--tls-ca-cert-file", f"{tmp}/ca.crt",
                 "--tls-auth-clients", "yes", "--protected-mode", "no", "--save", "",
                 "--appendonly", "no", "--dir", tmp],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            for n in args.followers:
                results.append(run(n, args.entries, args.rate, tmp, hub, spokes, Path(tmp)))
                print(json.dumps(results[-1]), file=sys.stderr)
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait(10)
            for ns in spokes:
                ns.delete()
    print(f"publish-to-apply latency ({args.entries} one-address entries at {args.rate:g}/s; "
          "TLS, client certificates; each follower a `nettrust follow` with its own nftables)")
    print(f"  {'followers':>9} {'p50':>9} {'p99':>9}   (p50: median of the followers', "
          "p99: the largest)")
    for r in results:
        print(f"  {r['followers']:>9} {r['p50_ms']:>6.2f} ms {r['p99_ms']:>6.2f} ms")
    print(json.dumps({"latency": [{k: r[k] for k in ("followers", "p50_ms", "p99_ms")}
                                  for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

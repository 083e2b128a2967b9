#!/usr/bin/env python3
"""Where a restart's read-back of the shared tracker (``fleet.tracker = "redis"``) goes.

    sudo /usr/bin/python3 bench/tracker_readback.py [--grants 1000000] [--per-name 4]
        [--old-values] [--text-fields] [--profile]

Starts a redis-server with TLS and client certificates required in a throwaway network namespace
(loopback only), fills one host hash with ``--grants`` live grants (``--per-name`` per name) the way the
writer thread stores them (``--old-values``: without the registrable domain, as it stored them
before; the read-back then computes it; ``--text-fields``: text addresses in the older hash, as
stored before addresses were packed), then runs the resolver's start-up read
(:class:`nettrust_core.fleet.tracker_redis.RedisAdoption`, the module the resolver runs) into a
fresh tracker and times its phases: connecting, the HGETALL reply, decoding, the tracker merge
(under its lock), then the whole adoption again as the resolver runs it.
``--profile``: cProfile of the whole read.  The figure is the adoption's own ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO]

from testbed.throwaway_netns import NetNS  # noqa: E402

PORT = 6391
KEY = "nettrust:hosts:bench"

CHILD = r"""
import cProfile, json, pstats, sys, time
sys.path.insert(0, sys.argv[1])
from nettrust_core.config import parse_config
from nettrust_core.fleet import connect as fleet_connect
from nettrust_core.fleet import tracker_redis
from nettrust_core.grants.tracker import GrantTracker, Owner
from nettrust_core.registrable import registrable_domain
certs, grants, profile, per_name = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
old_values, text_fields = sys.argv[6] == "1", sys.argv[7] == "1"
LEGACY = KEY + ":text"
FILLED = LEGACY if text_fields else KEY
config = parse_config(f'''[fleet]
tracker = "redis"
node = "bench"
redis_url = "rediss://127.0.0.1:{PORT}/0"
ca_file = "{certs}/ca.crt"
cert_file = "{certs}/bench.crt"
key_file = "{certs}/bench.key"
''')
connect = lambda: fleet_connect.connect(config.fleet)
client = connect()
until = time.time() + 3600
pipe = client.pipeline(transaction=False)
for i in range(grants):
    name = f"bulk{i // per_name}.example"
    tail = name if old_values else f"{name} {registrable_domain(name)}"
    address = bytes([20, i >> 16 & 255, i >> 8 & 255, i & 255])
    pipe.hset(FILLED, ".".join(map(str, address)) if text_fields else address,
              f"{until + i / 1e6:.3f} {tail}")
    if i % 20000 == 19999:
        pipe.execute()
pipe.execute()
out = {"grants": grants, "hlen": client.hlen(FILLED)}
# Phases, each on its own (a fresh connection, as a restart has).
import gc
t = time.perf_counter(); c = connect(); c.ping(); out["connect_s"] = time.perf_counter() - t
gc.disable()                                # as RedisAdoption does while it reads
t = time.perf_counter(); raw = tracker_redis.fetch(c, [KEY, LEGACY]); out["hgetall_s"] = time.perf_counter() - t
tracker = GrantTracker(owner_of=lambda q: Owner(q, registrable_domain(q)))
t = time.perf_counter()
live, _dead, _dead_text = tracker_redis.parse_hosts(raw[0], time.time(), tracker.clock(),
                                                    tracker.owner_for, raw[1])
out["decode_s"] = time.perf_counter() - t
t = time.perf_counter()
with tracker.lock:
    for version, incoming, owners in live:
        tracker.load(version, incoming, owners)
out["load_s"] = time.perf_counter() - t
gc.enable()
del raw, live, tracker
# The whole adoption as the resolver runs it.
class Backend:
    def list_grants(self): return []
tracker = GrantTracker(owner_of=lambda q: Owner(q, registrable_domain(q)))
adoption = tracker_redis.RedisAdoption(Backend(), tracker, connect, KEY, LEGACY)
prof = cProfile.Profile() if profile else None
if prof: prof.enable()
adoption.run()
if prof:
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(14)
out["adoption_s"] = adoption.seconds
out["adopted"] = adoption.adopted
out["complete"] = tracker.complete
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grants", type=int, default=1_000_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--per-name", type=int, default=4,
                    help="grants per question name (an answer's addresses; names cost an owner "
                    "each)")
    ap.add_argument("--old-values", action="store_true",
                    help="values without the registrable domain (as written before it was "
                    "stored)")
    ap.add_argument("--text-fields", action="store_true",
                    help="text addresses in the older hash (as stored before they were packed)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("tracker_readback: needs root (a network namespace)", file=sys.stderr)
        return 2
    from nettrust_core.fleet.certs import make_ca, make_cert
    with tempfile.TemporaryDirectory(prefix="nt-readback-") as tmp, NetNS("ntrb") as ns:
        make_ca(tmp)
        make_cert(tmp, "server", server_names=["127.0.0.1"])
        make_cert(tmp, "bench")
        ns.sh("ip", "link", "set", "lo", "up")
        redis = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, "redis-server", "--bind", "127.0.0.1", "--port", "0",
             "--tls-port", str(PORT), "--tls-cert-file", f"{tmp}/server.crt",
             "--tls-key-file", f"{tmp}/server.key", "--tls-ca-cert-file", f"{tmp}/ca.crt",
             "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            env = {**os.environ, "PYTHONPATH": f"{REPO}:/usr/lib/python3/dist-packages"}
            code = CHILD.replace("{PORT}", str(PORT)).replace("KEY", repr(KEY))
            proc = subprocess.run(["ip", "netns", "exec", ns.name, "/usr/bin/python3", "-c", code,
                                   REPO, tmp, str(args.grants), "1" if args.profile else "0",
                                   str(args.per_name), "1" if args.old_values else "0",
                                   "1" if args.text_fields else "0"],
                                  env=env, capture_output=True, text=True, timeout=900)
        finally:
            redis.terminate()
            redis.wait(10)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    if args.profile:
        print(proc.stderr, file=sys.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"shared tracker read-back, {out['grants']:,} grants, {args.per_name} per name, "
          f"{'old values' if args.old_values else 'values with the domain'}, "
          f"{'text addresses (older hash)' if args.text_fields else 'packed addresses'} "
          "(TLS, client certificates)")
    for k in ("connect_s", "hgetall_s", "decode_s", "load_s", "adoption_s"):
        print(f"  {k[:-2]:>9}: {out[k]:.2f} s")
    print(json.dumps(out))
    return 0 if out["complete"] and out["adopted"] >= args.grants else 1


if __name__ == "__main__":
    sys.exit(main())

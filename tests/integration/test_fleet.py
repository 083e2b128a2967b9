"""The fleet end to end (issue 19): a master Unbound with the module publishing into a real
redis-server (TLS, client certificates required), three followers in their own namespaces
running ``nettrust follow`` with their own nftables rulesets, and each follower's host as the
client behind it, resolving through the master.

Run alone (it is heavy): ``/work/wt/heavy ./run-tests -q tests/integration/test_fleet.py``.
``FLEET_RACE_TRIALS`` sets the resolve-then-connect trials (default 2000; the closing note's
figure is with 10000).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from fleet_util import (MASTER, FollowerNode, fleet_certs, MasterHost, client_names, fleet_section,
                        in_host, start_redis)
from lab_util import wait_for
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_sets import grant_set_of

from testbed.lab import SYSTEM_PYTHON, Lab

pytestmark = pytest.mark.integration

RACE = Path(__file__).parents[2] / "bench"
TRIALS = int(os.environ.get("FLEET_RACE_TRIALS", "2000"))
NAMES = max(TRIALS, 2000) + 1400     # the latency probes and the hold-off use the last 1400


def _address(i: int) -> str:
    return f"198.18.{i // 250}.{i % 250 + 1}"


EXTRA = {"fw.test": [f"r{i} 300 IN A {_address(i)}" for i in range(NAMES)]
         + ["lateone 300 IN A 198.51.100.61", "outage 300 IN A 198.51.100.62",
            "after 300 IN A 198.51.100.63", "denied 300 IN A 198.51.100.64"]}
MASTER_CONFIG = f"""
[grants]
max_per_domain = 4000000
max_per_set = {max(262144, 2 * int(os.environ.get("FLEET_RESTART_GRANTS", "200000")))}
min_ttl = "1s"
grace = "2s"
[lifecycle]
liveness = false
unauthorized = false
"""


@pytest.fixture(scope="module")
def fleet():
    with Lab(extra_records=EXTRA) as lab:
        certs = fleet_certs(Path(lab.work_dir) / "certs", ("m1", "f1", "f2", "f3", "tool"),
                            rogue=("f1",))
        redis = start_redis(lab, certs)
        followers = []
        try:
            followers = [FollowerNode(lab, i, certs) for i in (1, 2, 3)]
            for f in followers:
                f.start()
            master = MasterHost(lab, MASTER_CONFIG + fleet_section(
                certs, "m1", "master", hold="1s",
                followers=[f"f{i}=10.99.{i}.0/24" for i in (1, 2, 3)]), name="master")
            master.start()
            wait_for(lambda: {"m1-publisher", "m1-acks"} <= _client_names(lab),
                     "the master's publisher and ack reader to connect")
            yield {"lab": lab, "certs": certs, "redis": redis, "followers": followers,
                   "master": master}
        finally:
            lab.stop_unbound()
            for f in followers:
                f.close()


_client_names = client_names


def _tool(fleet):
    """A redis-py client with the tool's certificate (what an operator would use)."""
    import redis
    certs = fleet["certs"]
    return redis.Redis(host=MASTER, port=6390, ssl=True, ssl_ca_certs=str(certs / "ca.crt"),
                       ssl_certfile=str(certs / "tool.crt"), ssl_keyfile=str(certs / "tool.key"),
                       socket_timeout=5)


def _in_host(fleet, fn, *args):
    """``fn(*args)`` inside the lab's host namespace (where redis listens)."""
    return in_host(fleet["lab"], fn, *args)


# -- 1. first SYN through the follower ---------------------------------------------------------
def test_resolve_through_master_connect_through_follower_first_syn(fleet):
    f1 = fleet["followers"][0]
    assert f1.connect(_address(NAMES - 1)) == "ConnectionRefusedError"     # control: unanswered
    assert f1.resolve(f"r{NAMES - 2}.fw.test")             # warm Unbound's cache of fw.test
    # One uncounted window first: on a fresh CI machine the first 16 trials once all timed out
    # at the client's 0.8 s (a one-off start-up stall; every later trial passed) — the claim is
    # the steady state's first SYN, so the warm-up is printed, not asserted.
    warm = _race(fleet, range(NAMES - 200, NAMES - 136))
    print("warm-up through follower:", json.dumps(warm["kinds"]))
    result = _race(fleet, range(TRIALS))
    counts = result["kinds"]["fresh"]
    print("race through follower, hold 1s:", json.dumps(result["kinds"]),
          f"{result['seconds']:.1f} s")
    for f in fleet["followers"]:
        st = f.status()
        print(f"{f.node} publish-to-apply p50/p99 (s): {st['latency_p50']} {st['latency_p99']} "
              f"({st['latency_samples']} entries)")
    print("master answer latency, hold 1s:", _answer_latency(fleet, range(NAMES - 1400, NAMES - 1200)))
    assert counts.get("ok", 0) == TRIALS, result["failures"][:5]


def _race(fleet, numbers, follower=0):
    lab, f = fleet["lab"], fleet["followers"][follower]
    sink = lab.spawn("net", [SYSTEM_PYTHON, "-I", str(RACE / "race_sink.py"), "--port", "9"],
                     log_name="race-sink")
    try:
        assert sink.wait_for_log("READY", timeout=10)
        trials = "".join(f"fresh r{i}.fw.test\n" for i in numbers)
        out = f.ns.sh(SYSTEM_PYTHON, "-I", str(RACE / "race_client.py"), "--server", MASTER,
                      "--port", "9", "--window", "16", input=trials, timeout=1200).stdout
    finally:
        sink.stop()
    return json.loads(out)


def _answer_latency(fleet, numbers) -> str:
    """p50/p99 of the master's answer time for fresh names, asked one by one from f1."""
    code = ("import time, dns.message, dns.query\nts = []\n"
            f"for i in {list(numbers)!r}:\n"
            "    q = dns.message.make_query(f'r{i}.fw.test', 'A')\n"
            "    t = time.perf_counter()\n"
            f"    dns.query.udp(q, {MASTER!r}, timeout=3)\n"
            "    ts.append(time.perf_counter() - t)\n"
            "ts.sort()\n"
            "print(f'p50 {ts[len(ts)//2]*1000:.2f} ms p99 {ts[int(len(ts)*0.99)]*1000:.2f} ms')\n")
    return fleet["followers"][0].python(code).stdout.strip()


def _restart_master(fleet, **fleet_keys):
    lab = fleet["lab"]
    lab.stop_unbound()
    master = MasterHost(lab, MASTER_CONFIG + fleet_section(
        fleet["certs"], "m1", "master", followers=[f"f{i}=10.99.{i}.0/24" for i in (1, 2, 3)],
        **fleet_keys), name=f"master-{len(fleet_keys)}-{int(time.time())}")
    master.start()
    wait_for(lambda: {"m1-publisher", "m1-acks"} <= _client_names(lab),
             "the master's publisher and ack reader to connect")
    fleet["master"] = master
    return master


def test_without_the_hold_the_race_is_lost_sometimes(fleet):
    """The control of the race: the same trials with ``hold = "0s"`` (figures only: how often
    the follower loses depends on the machine's load)."""
    _restart_master(fleet, hold="0s")
    try:
        result = _race(fleet, range(NAMES - 1200, NAMES - 400))
        print("master answer latency, hold 0s:",
              _answer_latency(fleet, range(NAMES - 400, NAMES - 200)))
        print("race through follower, hold 0s:", json.dumps(result["kinds"]),
              f"{result['seconds']:.1f} s")
    finally:
        _restart_master(fleet, hold="1s")


# -- 2. a late follower, and replayed shorter entries -------------------------------------------
def test_late_follower_gets_live_grants_and_replays_shorten_nothing(fleet):
    f1, f3 = fleet["followers"][0], fleet["followers"][2]
    f3.stop()
    r = _in_host(fleet, lambda: _tool(fleet).delete("nettrust:cursor:f3"))
    assert r in (0, 1)
    assert f1.resolve("lateone.fw.test") == ["198.51.100.61"]      # granted while f3 is away
    f3.start()                                                   # no cursor: the snapshot
    assert f3.status()["counters"].get("snapshot_loads") == 1
    assert f3.connect("198.51.100.61") is True
    before = f3.element_timeout("198.51.100.61")
    assert before is not None and before > 200
    # A replayed (older, shorter) entry for the same address, as a master's clock skew or a
    # replay would produce: the follower must not cut the grant.
    _in_host(fleet, lambda: _tool(fleet).xadd("nettrust:grants", {
        "k": "g", "a": "198.51.100.61", "e": f"{time.time() + 5:.3f}", "n": "lateone.fw.test",
        "o": "m1", "s": "0", "h": "", "t": f"{time.time():.3f}"}) and None)
    wait_for(lambda: f3.status()["counters"].get("elements_kept", 0) >= 1, "the replay applied")
    after = f3.element_timeout("198.51.100.61")
    assert after is not None and after > 200, (before, after)


# -- 3. Redis down and back ------------------------------------------------------------------
def test_redis_down_keeps_grants_fails_new_names_closed_and_resyncs(fleet):
    lab, f1 = fleet["lab"], fleet["followers"][0]
    assert f1.resolve("r0.fw.test") == [_address(0)]
    fleet["redis"].stop()
    wait_for(lambda: not f1.status().get("connected"), "f1 to notice the outage")
    started = time.monotonic()
    assert f1.resolve("outage.fw.test") == ["198.51.100.62"]    # the master keeps answering
    assert time.monotonic() - started < 2.0
    assert f1.connect(_address(0)) is True                       # existing grant kept
    assert f1.connect("198.51.100.62") == "ConnectionRefusedError"   # new name: fail closed
    fleet["redis"] = start_redis(lab, fleet["certs"])
    back = time.monotonic()
    for f in fleet["followers"]:
        f.wait_connected(timeout=10)
    print(f"followers resynced {time.monotonic() - back:.1f} s after Redis came back")
    wait_for(lambda: _in_host(fleet, lambda: _tool(fleet).exists("nettrust:config")),
             "the master to republish its configuration")
    time.sleep(1.0)                     # the master's ack reader reconnects (0.2 s back-off)
    assert f1.resolve("after.fw.test") == ["198.51.100.63"]
    assert f1.connect("198.51.100.63") is True


# -- 4. certificates ----------------------------------------------------------------------------
def test_follower_without_certificate_or_from_another_ca_is_refused(fleet):
    certs, f2 = fleet["certs"], fleet["followers"][1]
    code = (f"import redis\nkw = dict(host={MASTER!r}, port=6390, ssl=True, "
            f"ssl_ca_certs={str(certs / 'ca.crt')!r}, socket_timeout=3)\n"
            "def ping(**more):\n"
            "    try:\n"
            "        return redis.Redis(**kw, **more).ping()\n"
            "    except Exception as exc:\n"
            "        return type(exc).__name__\n"
            f"print(ping(ssl_certfile={str(certs / 'f2.crt')!r}, ssl_keyfile={str(certs / 'f2.key')!r}))\n"
            "print(ping())\n"
            f"print(ping(ssl_certfile={str(certs / 'rogue/f1.crt')!r}, "
            f"ssl_keyfile={str(certs / 'rogue/f1.key')!r}))\n")
    good, none, rogue = f2.python(code).stdout.split()
    assert good == "True"                                   # control
    assert none == "ConnectionError" and rogue == "ConnectionError"
    # The agent itself with a rogue certificate never connects.
    f2.stop()
    f2.write_config(certs, cert="rogue/f1")
    try:
        f2.start(wait=False)
        time.sleep(3)
        assert not f2.status().get("connected")
        assert "Redis unreachable" in f2.proc.log_text() or "SSL" in f2.proc.log_text()
    finally:
        f2.stop()
        f2.write_config(certs)
        f2.start()


# -- 5. configuration document ---------------------------------------------------------------
def test_config_change_reaches_followers_and_invalid_one_is_refused(fleet):
    master, followers, certs = fleet["master"], fleet["followers"], fleet["certs"]
    v0 = followers[0].wait_connected()["config_version"]
    assert v0 >= 1
    changed = Path(fleet["lab"].work_dir) / "fleet" / "master2.toml"
    changed.write_text(MASTER_CONFIG + '[policy]\ndeny_networks = ["198.51.100.64/32"]\n'
                       + fleet_section(certs, "tool", "master"))
    out = master.lab.run("host", [SYSTEM_PYTHON, "-m", "nettrust_core.cli", "-c", str(changed),
                                  "fleet", "publish-config"],
                         env={"PYTHONPATH": f"{master.code_dir}:/usr/lib/python3/dist-packages"})
    assert f"configuration version {v0 + 1}" in out.stdout
    for f in followers:
        wait_for(lambda f=f: f.status().get("config_version") == v0 + 1, f"{f.node} v{v0 + 1}")
    # The new document's deny_networks hold on the followers even for a master still granting.
    assert followers[0].resolve("denied.fw.test") == ["198.51.100.64"]
    assert followers[0].connect("198.51.100.64") == "ConnectionRefusedError"
    # An invalid document (digest broken) announced: refused, the last good one kept.
    _in_host(fleet, lambda: (_tool(fleet).set("nettrust:config", json.dumps(
        {"version": v0 + 2, "digest": "0" * 64, "body": {"mode": "denylist"}})),
        _tool(fleet).xadd("nettrust:grants", {"k": "c", "v": str(v0 + 2)})) and None)
    for f in followers:
        wait_for(lambda f=f: f.status()["counters"].get("config_refused", 0) >= 1,
                 f"{f.node} to refuse the bad document")
        assert f.status()["config_version"] == v0 + 1


# -- killed follower catches up from its cursor ------------------------------------------------
def test_killed_follower_catches_up_from_its_cursor(fleet):
    f2, f1 = fleet["followers"][1], fleet["followers"][0]
    f2.stop(signal.SIGKILL)
    assert f1.resolve("r1.fw.test") == [_address(1)]           # published while f2 is dead
    f2.start()
    st = f2.status()
    assert st["counters"].get("snapshot_loads", 0) == 0          # resumed from its cursor
    wait_for(lambda: f2.connect(_address(1)) is True, "f2 to apply the missed grant", timeout=5)


# -- 6. the shared tracker ----------------------------------------------------------------------
RESTART_GRANTS = int(os.environ.get("FLEET_RESTART_GRANTS", "200000"))


def test_shared_tracker_makes_a_restart_exact_within_seconds(fleet):
    """``tracker = "redis"``: a restarted resolver reads its host tracker back from Redis.
    The hash is filled here as the writer thread fills it (RESTART_GRANTS live grants), and a
    name answered before the restart must be in it (the writer works)."""
    master = _restart_master(fleet, hold="1s", tracker="redis")
    f1 = fleet["followers"][0]
    assert f1.resolve(f"r{NAMES - 3}.fw.test") == [_address(NAMES - 3)]
    wait_for(lambda: _in_host(fleet, lambda: _tool(fleet).hexists(
        "nettrust:hostmap:m1", ipaddress.ip_address(_address(NAMES - 3)).packed)),
        "the writer thread to store the grant")

    def fill(n):
        from nettrust_core.config import load_config
        from nettrust_core.firewall.base import Grant
        from nettrust_core.registrable import registrable_domain
        from nettrust_core.ruleset import make_backend
        backend = make_backend(load_config(str(master.config_path)), 0)
        for start in range(0, n, 50000):     # the kernel holds them too, as after a real run
            backend.grant([Grant(ipaddress.ip_address(f"10.{i >> 16 & 255}.{i >> 8 & 255}."
                                                      f"{i & 255}"), 3000.0, "bulk.example")
                           for i in range(start, min(n, start + 50000))])
        backend.close()
        client = _tool(fleet)
        until = time.time() + 3000
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            # 4 per name (an answer's usual few addresses: a name costs an owner each, so this
            # is the costly shape), as the writer stores them (packed address -> "expiry name
            # domain"); every 16th name as stored before: text address in the older hash, no
            # domain (the read-back reads both hashes and computes the domain).
            name = f"bulk{i // 4}.example"
            address = ipaddress.ip_address(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            if i // 4 % 16 == 0:
                pipe.hset("nettrust:hosts:m1", str(address), f"{until + i / 1e6:.3f} {name}")
            else:
                pipe.hset("nettrust:hostmap:m1", address.packed,
                          f"{until + i / 1e6:.3f} {name} {registrable_domain(name)}")
            if i % 10000 == 9999:
                pipe.execute()
        for i in range(50):                 # expired: the read-back deletes them from their hash
            pipe.hset("nettrust:hostmap:m1", bytes([11, 0, 0, i]), f"{time.time() - 1:.3f} gone.ex")
            pipe.hset("nettrust:hosts:m1", f"11.0.1.{i}", f"{time.time() - 1:.3f} gone.example")
        pipe.execute()
        return client.hlen("nettrust:hostmap:m1") + client.hlen("nettrust:hosts:m1") - 100

    def stored():
        client = _tool(fleet)
        return (client.hexists("nettrust:hostmap:m1", bytes([11, 0, 0, 7])),
                client.hexists("nettrust:hosts:m1", "11.0.1.7"),
                client.hexists("nettrust:hostmap:m1", bytes([10, 0, 0, 5])),
                client.hexists("nettrust:hosts:m1", "10.0.0.1"))

    assert _in_host(fleet, fill, RESTART_GRANTS) >= RESTART_GRANTS
    assert _in_host(fleet, stored) == (True, True, True, True)
    master.stop()
    started = time.monotonic()
    master.start()
    log_line = wait_for(lambda: re.search(r"(\d+) live grants adopted from the shared tracker "
                                          r"in ([\d.]+) s", master.log()), "adoption", 60)
    print(f"restart with {RESTART_GRANTS} grants in the shared tracker: {log_line.group(1)} "
          f"adopted in {log_line.group(2)} s (Unbound start to adoption logged: "
          f"{time.monotonic() - started:.1f} s)")
    assert int(log_line.group(1)) >= RESTART_GRANTS + 1
    assert float(log_line.group(2)) < 5.0 * max(1.0, RESTART_GRANTS / 1e6)
    # The expired fields went, each from its own hash; the live ones stay.
    wait_for(lambda: _in_host(fleet, stored) == (False, False, True, True),
             "expired fields deleted from both hashes")

    # The hash outlives the kernel's sets (a reboot, a flush while stopped). Trusted, it would
    # keep the next answers for its addresses from being written, and their connects refused:
    # sampled against the kernel, it is refused and the kernel's sets are read back instead.
    master.stop()
    master.nettrust("flush")
    master.start()
    wait_for(lambda: "live grants adopted from the kernel" in master.log(), "kernel adoption", 60)
    assert re.search(r"shared tracker refused: \d+ of \d+ sampled grants are missing",
                     master.log())
    assert _in_host(fleet, stored)[2:] == (False, False)         # the stale hashes: deleted
    address = _address(NAMES - 3)
    assert f1.resolve(f"r{NAMES - 3}.fw.test") == [address]          # in the hash, not the kernel
    shard = grant_set_of(RulesetSpec(), 0, ipaddress.ip_address(address))
    assert fleet["lab"].run("host", ["nft", "get", "element", "inet", "nettrust", shard,
                                     f"{{ {address} }}"], check=False).returncode == 0
    _restart_master(fleet, hold="1s")

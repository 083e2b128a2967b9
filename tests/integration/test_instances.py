"""Several single-threaded Unbound processes on one port (firewall.instances = 2), and restarts.

Real Unbound with our module runs twice in the lab's host namespace (``so-reuseport``), each
process with NETTRUST_INSTANCE and its own grant sets (allow4/allow6 and allow4_1/allow6_1).
The kernel spreads queries over the two sockets by a hash of the client's address and port, so
a query sent from a fixed source port always reaches the same process: the tests find one port
per process from the processes' debug logs, then steer queries with ``dig -b``.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from lab_util import direct
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_sets import grant_sets

from testbed.errors import LabError
from testbed.lab import Lab
from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

CLIENT = str(Path(__file__).with_name("client.py"))
SETS = {0: ("allow4", "allow6"), 1: ("allow4_1", "allow6_1")}
#: each instance's grant sets by the first one's name: the two processes share 16 per IP version
SHARDS = {names[0]: names for k in (0, 1) for names in grant_sets(RulesetSpec(instances=2), k).values()}
EXTRA = {"fw.test": [
    "ntlong 300 IN A 198.51.100.88", "ntlong 300 IN AAAA 2001:db8:100::88",
    "ntshort 2 IN A 198.51.100.88", "ntshort 2 IN AAAA 2001:db8:100::88",
    "ntlong2 300 IN A 198.51.100.89", "ntshort2 2 IN A 198.51.100.89",
]}
CONFIG = """
[firewall]
instances = 2
[grants]
min_ttl = "1s"
grace = "2s"
[log]
level = "debug"
"""


@pytest.fixture(scope="module")
def lab():
    with Lab(extra_records=EXTRA) as lab:
        lab.set_resolver(["127.0.0.1"])
        yield lab


@pytest.fixture(scope="module")
def nt(lab):
    host = NetTrustHost(lab, CONFIG, instances=2)
    host.start()
    yield host
    lab.stop_unbound()


_probes = iter(range(1_000_000))


def dig(lab, name, rtype="A", port=None):
    argv = ["dig", "@127.0.0.1", "+tries=1", "+time=3", "+short", name, rtype]
    if port is not None:
        argv[1:1] = ["-b", f"127.0.0.1#{port}"]
    return lab.run("host", argv).stdout.split()


def ports_by_instance(lab, nt, first=31000):
    """{instance: a source port whose queries the kernel hands to that process}."""
    found: dict[int, int] = {}
    for port in range(first, first + 200):
        name = f"probe{next(_probes)}.fw.test"
        dig(lab, name, port=port)
        for k in range(nt.instances):
            if f"{name} A NXDOMAIN" in nt.log(k):
                found.setdefault(k, port)
        if len(found) == nt.instances:
            return found
    raise AssertionError(f"queries never reached every instance: {found}")


def elements(lab, set_name):
    """address -> seconds left, of one grant set and its shards, as nft shows it."""
    found = {}
    for name in SHARDS[set_name]:
        out = json.loads(lab.run("host", ["nft", "-j", "list", "set", "inet", "nettrust", name]).stdout)
        s = next(item["set"] for item in out["nftables"] if "set" in item)
        found.update({e["elem"]["val"]: e["elem"].get("expires", 0) for e in s.get("elem", [])
                      if isinstance(e, dict)})
    return found




def test_queries_spread_over_both_processes_and_every_answer_is_reachable(nt, lab):
    names = [f"h{i}.fw.test" for i in range(2001, 2121)]
    out = lab.run("host", ["/usr/bin/python3", CLIENT, "connect", "4", *names], timeout=120).stdout
    results = json.loads(out)
    failed = [r for r in results if not r["ok"]]
    assert len(results) == len(names) and not failed, failed[:5]
    mine = {k: set(elements(lab, SETS[k][0])) for k in (0, 1)}
    answered = {r["address"] for r in results}
    assert answered <= mine[0] | mine[1]
    # Both processes answered a fair share (the kernel hashes each query's source port).
    assert len(answered & mine[0]) >= 20 and len(answered & mine[1]) >= 20, \
        (len(answered & mine[0]), len(answered & mine[1]))
    for k in (0, 1):
        assert "nettrust: ready" in nt.log(k) and f"instance {k} of 2" in nt.log(k)


@pytest.mark.parametrize("rtype,address,order", [("A", "198.51.100.88", (0, 1)),
                                                 ("AAAA", "2001:db8:100::88", (1, 0))])
def test_one_process_never_shortens_the_others_grant(nt, lab, rtype, address, order):
    """One address, two names: TTL 300 through one process, TTL 2 through the other."""
    ports = ports_by_instance(lab, nt)
    long_k, short_k = order
    v = 0 if rtype == "A" else 1
    assert dig(lab, "ntlong.fw.test", rtype, ports[long_k]) == [address]
    assert dig(lab, "ntshort.fw.test", rtype, ports[short_k]) == [address]
    assert elements(lab, SETS[long_k][v])[address] > 290
    assert elements(lab, SETS[short_k][v])[address] <= 5
    time.sleep(5)                                      # the short grant (2 s + grace) lapses
    assert address not in elements(lab, SETS[short_k][v])
    assert elements(lab, SETS[long_k][v])[address] > 280
    assert direct(lab, address) is True
    hosts = nt.grants()                                # `nettrust hosts`: the longest grant
    assert hosts[address]["expires_in"] > 280 and hosts[address]["instance"] == long_k


def test_restart_adopts_each_instances_grants(nt, lab):
    ports = ports_by_instance(lab, nt)
    for k in (0, 1):
        assert dig(lab, "ntlong2.fw.test", "A", ports[k]) == ["198.51.100.89"]
    nt.stop()
    assert direct(lab, "198.51.100.89") is True        # stopped: grants stay (fail closed)
    nt.start()
    for k in (0, 1):
        assert nt.processes[k].wait_for_log("live grants adopted from the kernel", timeout=10)
    ports = ports_by_instance(lab, nt, first=32000)    # the socket order may differ now
    for k in (0, 1):
        assert dig(lab, "ntshort2.fw.test", "A", ports[k]) == ["198.51.100.89"]
    for k in (0, 1):
        assert elements(lab, SETS[k][0])["198.51.100.89"] > 280, k
    assert direct(lab, "198.51.100.89") is True


def test_status_lists_every_instances_sets(nt, lab):
    st = json.loads(nt.nettrust("status", "--json").stdout)
    assert set(st["sets"]) == {"allow4", "allow6", "allow4_1", "allow6_1", "static4", "static6"}
    rules = lab.run("host", ["nft", "list", "chain", "inet", "nettrust", "output"]).stdout
    for name in ("@allow4 ", "@allow6 ", "@allow4_1 ", "@allow6_1 "):
        assert name in rules


def test_process_without_its_instance_number_refuses_to_start(nt, lab):
    env = nt.env(0)
    del env["NETTRUST_INSTANCE"]
    with pytest.raises(LabError) as info:
        lab.start_unbound(nt.unbound_conf(), env=env, name="noinstance")
    assert "NETTRUST_INSTANCE must be one of 0..1" in str(info.value)
    env["NETTRUST_INSTANCE"] = "2"
    with pytest.raises(LabError) as info:
        lab.start_unbound(nt.unbound_conf(), env=env, name="badinstance")
    assert "it is '2'" in str(info.value)
    assert dig(lab, "h2200.fw.test") == ["198.18.8.152"]    # the two instances still answer


def test_flush_revokes_every_instances_grants(nt, lab):
    nt.nettrust("flush")
    for k in (0, 1):
        for name in SETS[k]:
            assert elements(lab, name) == {}


# -- restart with many grants: exact before the kernel's sets are read back --------------------------
def _restart_with_grants(count: int) -> dict:
    """In a fresh namespace: instance 1 of 2 holds ``count`` grants of 1 h; a new authorizer
    answers at once, for an address deep in the set, with a TTL of 30 s."""
    from nettrust_core.answer import A, Answer, Record, Security
    from nettrust_core.authorizer import Authorizer
    from nettrust_core.config import parse_config
    from nettrust_core.firewall.base import Grant
    from nettrust_core.ruleset import make_backend

    config = parse_config('[firewall]\ninstances = 2\nresolver_user = ""\n'
                          '[grants]\nmax_per_set = 4000000\n[lifecycle]\nliveness = false\n'
                          'unauthorized = false\n')
    first = make_backend(config, 1)
    first.ensure()
    base = int(ipaddress.IPv4Address("20.0.0.0"))      # public: the policy grants it
    addresses = [ipaddress.IPv4Address(base + i) for i in range(count)]
    for i in range(0, count, 50_000):
        first.grant([Grant(a, 3600.0, "before.example") for a in addresses[i:i + 50_000]])
    first.close()

    auth = Authorizer(config, make_backend(config, 1))
    t = time.monotonic()
    auth.start()
    ready = time.monotonic() - t
    during = not auth.tracker.complete
    late = addresses[-50:]          # the adoption reads in hash order: most are not read yet
    decisions = [auth.authorize(Answer("late.example", A, 0, Security.INSECURE,
                                       (Record("late.example", A, 30, str(a)),))) for a in late]
    during = during and not auth.tracker.complete
    left = min(auth.backend.lookup(a) for a in late)
    auth.adoption.wait(120)
    adopted_at = time.monotonic() - t
    after = auth.authorize(Answer("early.example", A, 0, Security.INSECURE,
                                  (Record("early.example", A, 30, str(addresses[0])),)))
    result = {"ready": ready, "during": during, "written": sum(d.written for d in decisions),
              "granted": sum(len(d.grants) for d in decisions),
              "error": [d.error for d in decisions if d.error], "left": left, "adopted": auth.adoption.adopted,
              "complete": auth.tracker.complete, "adopted_at": adopted_at,
              "after_written": after.written, "lookups": auth.counters["adoption_lookups"]}
    auth.stop()
    return result


def test_answer_right_after_restart_never_shortens_a_grant_not_yet_adopted():
    from netns_util import NetNS
    with NetNS("ntinst") as ns:
        r = ns.run(_restart_with_grants, 300_000)
    assert r["ready"] < 2, r                          # answering does not wait for the dump
    assert r["during"] and not r["error"], r          # the answers came before adoption ended
    assert r["granted"] == 50 and r["written"] == 0, r
    assert r["left"] > 3500, r                        # 30 s did not replace the 1 h grants
    assert r["lookups"] >= 10, r                      # ... because the kernel was asked
    assert r["complete"] and r["adopted"] == 300_000, r
    assert r["after_written"] == 0, r


# -- the backend: every instance's sets in one ruleset --------------------------------------------
def _two_instances() -> dict:
    from nettrust_core.errors import FirewallError
    from nettrust_core.firewall.base import Grant, RulesetSpec
    from nettrust_core.firewall.nftables import NftablesBackend

    spec = RulesetSpec(table="ntinst", instances=2)
    b0, b1 = NftablesBackend(spec, instance=0), NftablesBackend(spec, instance=1)
    b1.ensure()                                   # any instance creates every instance's sets
    a = ipaddress.ip_address("198.51.100.7")
    b0.grant([Grant(a, 300.0, "long.example")])
    b1.grant([Grant(a, 5.0, "short.example"), Grant(ipaddress.ip_address("2001:db8::7"), 5.0)])
    seen = sorted((g.instance, str(g.address), round(g.expires_in)) for g in b0.list_grants())
    lookups = (round(b0.lookup(a)), round(b1.lookup(a)), b0.lookup(ipaddress.ip_address("192.0.2.9")))
    b1.flush_grants(own_only=True)                # a stopping instance revokes only its own
    after = sorted((g.instance, str(g.address)) for g in b0.list_grants())
    try:
        NftablesBackend(spec, instance=2)
        refused = None
    except FirewallError as exc:
        refused = str(exc)
    return {"seen": seen, "lookups": lookups, "after": after, "refused": refused}


def test_backend_instances_write_their_own_sets_and_the_chain_accepts_any():
    from netns_util import NetNS
    with NetNS("ntinst") as ns:
        r = ns.run(_two_instances)
        rules = ns.sh("nft", "list", "chain", "inet", "ntinst", "output").stdout
    assert r["seen"] == [(0, "198.51.100.7", 300), (1, "198.51.100.7", 5), (1, "2001:db8::7", 5)]
    assert r["lookups"] == (300, 5, None)
    assert r["after"] == [(0, "198.51.100.7")]
    assert "instance 2 is not one of 0..1" in r["refused"]
    order = [rules.index(f"@{name} ") for name in ("allow4", "allow6", "allow4_1", "allow6_1")]
    assert order == sorted(order) and rules.index("@static4 ") < order[0]

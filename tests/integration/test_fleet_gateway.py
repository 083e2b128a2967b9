"""The fleet in gateway mode (issue 19): a master Unbound in gateway mode (``per_client``)
publishes each grant with the client that asked; a follower in gateway mode (``nettrust follow``
with ``gateway.per_client``) forwards for two client namespaces and writes ``client .
destination`` pairs, so only the client that asked connects; its clients reach the masters' DNS
ports through ``fleet.masters`` and nothing else of them.  Real redis-server (TLS, client
certificates required), real Unbound with the module, real nftables in the follower's namespace.

::

    client a 10.99.61.2 ─┐
                         ├─ follower g1 ns (10.99.60.2, forwards) ── lab net ns ── master ns
    client b 10.99.62.2 ─┘      nettrust follow, per-client sets                 192.0.2.2:
                                                                  Unbound (master), redis-server

Run alone (it is heavy): ``/work/wt/heavy ./run-tests -q tests/integration/test_fleet_gateway.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_util import (MASTER, REDIS_PORT, GatewayFollower, fleet_certs, MasterHost, client_names,
                        fleet_section, in_host, start_redis)
from lab_util import wait_for

from testbed.lab import Lab

pytestmark = pytest.mark.integration


def _address(i: int) -> str:
    return f"198.18.77.{i + 1}"


NAMES = 60
SHORT = "198.18.78.1"     # heldflow.fw.test, TTL 1
EXTRA = {"fw.test": [f"g{i} 300 IN A {_address(i)}" for i in range(NAMES)]
         + [f"heldflow 1 IN A {SHORT}"]}
MASTER_CONFIG = """
[firewall]
hooks = ["output", "forward"]
lan_networks = ["10.99.0.0/16"]
[gateway]
per_client = true
[grants]
max_per_domain = 100000
min_ttl = "1s"
grace = "2s"
[lifecycle]
liveness = false
unauthorized = false
"""


@pytest.fixture(scope="module")
def gw_fleet():
    with Lab(extra_records=EXTRA) as lab:
        certs = fleet_certs(Path(lab.work_dir) / "certs", ("m1", "g1", "tool"))
        start_redis(lab, certs)
        gw = None
        try:
            gw = GatewayFollower(lab, 60, certs, "g1")
            gw.start()
            master = MasterHost(lab, MASTER_CONFIG + fleet_section(
                certs, "m1", "master", hold="1s",
                followers=["g1=10.99.61.0/24", "g1=10.99.62.0/24"]), name="master")
            master.start()
            wait_for(lambda: {"m1-publisher", "m1-acks"} <= client_names(lab),
                     "the master's publisher and ack reader to connect")
            yield {"lab": lab, "certs": certs, "gw": gw, "master": master}
        finally:
            lab.stop_unbound()
            if gw is not None:
                gw.close()


# -- DNS to the masters from behind a follower ---------------------------------------------------
def test_clients_behind_a_follower_reach_the_masters_dns_and_nothing_else_of_them(gw_fleet):
    gw = gw_fleet["gw"]
    assert gw.client_resolve("a", "g0.fw.test") == [_address(0)]              # UDP 53
    assert gw.client_resolve("b", "g0.fw.test", "+tcp") == [_address(0)]      # TCP 53
    # Another port of the master's address: refused by the follower (Redis listens there: the
    # follower itself reaches it, the control that the port is open and the refusal is ours).
    assert gw.client_connect("a", MASTER, REDIS_PORT) == "ConnectionRefusedError"
    assert gw.connect(MASTER, REDIS_PORT) is True
    # Another DNS server (the lab's authoritative one, which answers the name: the control
    # from its own namespace): refused, over UDP and TCP.
    lab = gw_fleet["lab"]
    direct = lab.run("net", ["dig", f"@{lab.nsd_v4}", "+short", "g0.fw.test", "A"]).stdout.split()
    assert direct == [_address(0)]
    assert gw.client_resolve("a", "g0.fw.test", server=lab.nsd_v4) == []
    assert gw.client_resolve("a", "g0.fw.test", "+tcp", server=lab.nsd_v4) == []
    # The follower enforces meanwhile: an unasked address is refused to both clients.
    assert gw.client_connect("a", _address(NAMES - 1)) == "ConnectionRefusedError"
    assert gw.client_connect("b", _address(NAMES - 1)) == "ConnectionRefusedError"


# -- per-client grants across the fleet ---------------------------------------------------------
def test_the_client_that_asked_connects_through_the_follower_on_the_first_syn_and_no_other(gw_fleet):
    gw = gw_fleet["gw"]
    for i in range(1, 21):
        address = _address(i)
        assert gw.client_connect("a", address) == "ConnectionRefusedError", i    # control
        assert gw.client_resolve("a", f"g{i}.fw.test") == [address]
        assert gw.client_connect("a", address) is True, i          # first SYN, one attempt
        assert gw.client_connect("b", address) == "ConnectionRefusedError", i    # never asked
    pairs = gw.pairs()
    assert ("10.99.61.2", _address(1)) in pairs
    assert not {("10.99.62.2", _address(i)) for i in range(1, 21)} & pairs, pairs
    # B asks for itself and then connects (the control that B is not simply cut off).
    assert gw.client_resolve("b", "g30.fw.test") == [_address(30)]
    assert gw.client_connect("b", _address(30)) is True
    assert gw.client_connect("a", _address(30)) == "ConnectionRefusedError"
    # The follower wrote pairs, one per answer (its status file is refreshed every second).
    wait_for(lambda: gw.status().get("counters", {}).get("pairs_written", 0) >= 22,
             "the follower's status to count the pairs written")
    # The follower's own host was granted nothing of them (pairs are no host grant).
    assert gw.connect(_address(1)) == "ConnectionRefusedError"


def test_a_late_gateway_follower_replays_the_pairs_from_the_snapshot(gw_fleet):
    lab, gw, certs = gw_fleet["lab"], gw_fleet["gw"], gw_fleet["certs"]
    gw.stop()

    def drop_cursor() -> int:
        import redis
        tool = redis.Redis(host=MASTER, port=REDIS_PORT, ssl=True,
                           ssl_ca_certs=str(certs / "ca.crt"),
                           ssl_certfile=str(certs / "tool.crt"),
                           ssl_keyfile=str(certs / "tool.key"), socket_timeout=5)
        return int(tool.delete("nettrust:cursor:g1"))

    assert in_host(lab, drop_cursor) in (0, 1)
    address = _address(40)
    assert gw.client_resolve("a", "g40.fw.test") == [address]   # published while g1 is away
    assert gw.client_connect("a", address) == "ConnectionRefusedError"
    gw.start()                                                   # no cursor: the snapshot
    assert gw.status()["counters"].get("snapshot_loads") == 1
    wait_for(lambda: gw.client_connect("a", address) is True, "a's pair from the snapshot",
             timeout=5)
    assert gw.client_connect("b", address) == "ConnectionRefusedError"


def test_a_held_connection_through_the_follower_outlives_its_grant(gw_fleet):
    """No renewal needs publishing for this: the follower's forward chain accepts established
    flows, so a connection made under a grant keeps working after the grant ends; a new one is
    refused (the grant really ended)."""
    gw = gw_fleet["gw"]
    assert gw.client_resolve("a", "heldflow.fw.test") == [SHORT]     # TTL 1: a 3 s grant
    s = gw.clients["a"].socket()
    s.settimeout(2)
    try:
        s.connect((SHORT, 7))                                  # the lab's echo server
        s.sendall(b"before\n")
        assert s.recv(64) == b"before\n"
        wait_for(lambda: ("10.99.61.2", SHORT) not in gw.pairs(), "the pair to expire",
                 timeout=15)
        assert gw.client_connect("a", SHORT, 7) == "ConnectionRefusedError"     # ended
        s.sendall(b"after\n")
        assert s.recv(64) == b"after\n"                        # the held flow goes on
    finally:
        s.close()

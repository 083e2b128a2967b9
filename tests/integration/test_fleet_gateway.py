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

import os
from pathlib import Path

import pytest

from fleet_util import (MASTER, REDIS_PORT, GatewayFollower, MasterHost, client_names,
                        fleet_section, start_redis)
from lab_util import wait_for

from nettrust_core.fleet.certs import make_ca, make_cert
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
        certs = Path(lab.work_dir) / "certs"
        make_ca(certs)
        make_cert(certs, "server", server_names=[MASTER])
        for node in ("m1", "g1", "tool"):
            make_cert(certs, node)
        for root, _dirs, files in os.walk(certs):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)      # test keys: Unbound's user reads m1's
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

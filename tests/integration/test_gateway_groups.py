"""Gateway group mode (``[[gateway.groups]]``, issue 13): one Unbound instance per client group.

The topology of :mod:`test_gateway`: group 0 is clients A (``lana``) and C (``lanc``), group 1
is client B (``lanb``).  Each group's Unbound (rendered by ``unbound_conf.render(group=k)``, what
``nettrust unbound-conf --group K`` prints) listens on its group's gateway addresses, answers
only its group's networks, and grants into its own instance's sets; the forward chain accepts
instance k's grants only from group k's networks.  What a user notices: A's lookup opens the
address for A (and its group), not for B; C's lookup of the same name is a cache hit in its
group's resolver (Unbound's ``num.cachehits``) and C connects -- no callback needed; B's own
resolver has its own cache (a miss) and then B connects; B cannot use group 0's resolver.
"""

from __future__ import annotations

import os
import ipaddress

import pytest

from netns_util import NetNS
from test_gateway import CLIENTS, ask, gateway_lab, resolve
from secnet import tcp_probe
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_sets import grant_set_of

pytestmark = pytest.mark.integration

TABLE = "ntgwgrp"
CONFIG = f"""
[firewall]
table = "{TABLE}"
hooks = ["output", "forward"]
lan_interfaces = ["lana", "lanb", "lanc"]
instances = 2
[[gateway.groups]]
networks = ["10.97.1.0/24", "fd97:1::/64", "10.97.3.0/24", "fd97:3::/64"]
listen = ["10.97.1.1", "fd97:1::1", "10.97.3.1", "fd97:3::1"]
[[gateway.groups]]
networks = ["10.97.2.0/24", "fd97:2::/64"]
listen = ["10.97.2.1", "fd97:2::1"]
[grants]
min_ttl = "1s"
grace = "0s"
[lifecycle]
liveness = false
unauthorized = false
[log]
level = "debug"
"""


class Groups:
    def __init__(self, lab, clients: dict[str, NetNS], ctl: list[str]) -> None:
        self.lab, self.clients, self.ctl = lab, clients, ctl

    def cachehits(self, group: int) -> float:
        out = self.lab.run("host", ["unbound-control", "-s", self.ctl[group], "stats_noreset"]).stdout
        stats = dict(ln.split("=", 1) for ln in out.split() if "=" in ln)
        return float(stats["total.num.cachehits"])

    def resolve(self, who: str, qname: str, qtype: str = "A", over: int = 4) -> list[str]:
        server = CLIENTS[who][2] if over == 4 else CLIENTS[who][4]
        return self.clients[who].run(resolve, server, qname, qtype, False)

    def connect(self, who: str, address: str) -> str:
        return self.clients[who].run(tcp_probe, address, 80)

    def granted(self, instance: int, address: str) -> bool:
        """Whether instance ``instance``'s grant sets hold ``address`` (the set its bytes choose)."""
        name = grant_set_of(RulesetSpec(instances=2), instance, ipaddress.ip_address(address))
        return self.lab.run("host", ["nft", "get", "element", "inet", TABLE, name,
                                     f"{{ {address} }}"], check=False).returncode == 0


@pytest.fixture(scope="module")
def groups():
    from nettrust_core.unbound_conf import render
    from testbed.product import LISTEN, NetTrustHost
    with gateway_lab(CLIENTS, f"g13{os.getpid()}") as (lab, clients, ctl_dir):
        host = NetTrustHost(lab, CONFIG)
        ctl = [str(ctl_dir / f"group{k}.ctl") for k in range(2)]
        procs = []
        for k in range(2):
            conf = (LISTEN.format(threads=1) + host.zone_conf()
                    + render(host.config, script=str(host.script), group=k)
                    + f"remote-control:\n    control-enable: yes\n"
                      f"    control-interface: {ctl[k]}\n    control-use-cert: no\n")
            procs.append(lab.start_unbound(conf, env=host.env(k), name=f"unbound{k}"))
        yield Groups(lab, clients, ctl)
        for p in procs:
            assert "Traceback" not in p.log_text(), p.log_text()[-3000:]


def test_a_groups_lookup_opens_for_that_group_only_and_its_cache_hits_are_granted(groups):
    assert groups.resolve("a", "www.fw.test") == ["198.51.100.10"]
    assert groups.connect("a", "198.51.100.10") == "connected"
    assert groups.granted(0, "198.51.100.10")                     # group 0's set
    assert not groups.granted(1, "198.51.100.10")
    # B (group 1) did not ask: group 0's grant does not open the address for B
    assert groups.connect("b", "198.51.100.10") != "connected"
    # C, in A's group, asks its group's resolver: a cache hit, granted without any callback
    hits = groups.cachehits(0)
    assert groups.resolve("c", "www.fw.test") == ["198.51.100.10"]
    assert groups.cachehits(0) == hits + 1
    assert groups.connect("c", "198.51.100.10") == "connected"
    # B's resolver has its own cache (a miss) and its own grants: then B connects too
    hits1 = groups.cachehits(1)
    assert groups.resolve("b", "www.fw.test") == ["198.51.100.10"]
    assert groups.cachehits(1) == hits1
    assert groups.granted(1, "198.51.100.10")
    assert groups.connect("b", "198.51.100.10") == "connected"


def test_ipv6_grants_follow_the_group_too(groups):
    assert groups.resolve("a", "h7.fw.test", "AAAA", over=6) == ["2001:db8:118::7"]
    assert groups.connect("a", "2001:db8:118::7") == "connected"
    assert groups.connect("b", "2001:db8:118::7") != "connected"


def test_a_client_cannot_use_another_groups_resolver(groups):
    # B asks group 0's resolver (so its lookups would open addresses for group 0): refused
    assert groups.clients["b"].run(ask, CLIENTS["a"][2], "h8.fw.test") == "REFUSED"
    assert not groups.granted(0, "198.18.0.8")
    assert groups.clients["a"].run(ask, CLIENTS["a"][2], "h8.fw.test") == "NOERROR"   # control
    assert groups.granted(0, "198.18.0.8")

"""Gateway mode with MAC-keyed grants (``gateway.client_key = "mac"``, issue 13).

The topology of :mod:`test_gateway` with two directly attached clients (A on ``lana``, B on
``lanb``, each a veth with its own MAC).  The module reads each client's MAC from the gateway's
neighbour table (a pyroute2 dump in a background thread) and grants ``MAC . destination``; the
forward chain matches ``ether saddr . ip daddr`` / ``ether saddr . ip6 daddr``.  What a user
notices: A asks over IPv4, gets an AAAA answer, and connects over IPv6 -- from its own address
and from a privacy address it made up afterwards; B (another MAC) is refused the same address
until B asks.  A client whose MAC the gateway does not know yet is granted nothing (its connect
is refused) and is granted on its next query.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from netns_util import NetNS
from test_gateway import CLIENTS, _unbound_conf, connect_from, gateway_lab, resolve
from secnet import tcp_probe

pytestmark = pytest.mark.integration

TABLE = "ntgwmac"
CONFIG = f"""
[firewall]
table = "{TABLE}"
hooks = ["output", "forward"]
lan_interfaces = ["lana", "lanb", "lanc"]
[gateway]
per_client = true
client_key = "mac"
[grants]
min_ttl = "1s"
grace = "0s"
max_per_domain = 6
[lifecycle]
liveness = false
unauthorized = false
[log]
level = "debug"
"""


class MacGateway:
    def __init__(self, lab, clients: dict[str, NetNS]) -> None:
        self.lab, self.clients = lab, clients

    def mac(self, who: str) -> str:
        out = self.clients[who].sh("cat", "/sys/class/net/eth0/address").stdout
        return out.strip().lower()

    def pairs(self, version: int) -> set[tuple[str, str]]:
        """The ``MAC . destination`` pairs in the kernel's per-client set."""
        out = self.lab.run("host", ["nft", "list", "set", "inet", TABLE, f"clients{version}"]).stdout
        flat = " ".join(out.split())
        return set(re.findall(r"([0-9a-f]{2}(?::[0-9a-f]{2}){5}) \. ([0-9a-f:.]+)", flat))

    def resolve(self, who: str, qname: str, qtype: str, over: int) -> list[str]:
        server = CLIENTS[who][2] if over == 4 else CLIENTS[who][4]
        return self.clients[who].run(resolve, server, qname, qtype, False)

    def connect(self, who: str, address: str) -> str:
        return self.clients[who].run(tcp_probe, address, 80)


@pytest.fixture(scope="module")
def gw():
    from testbed.product import NetTrustHost
    with gateway_lab(CLIENTS, f"g13{os.getpid()}") as (lab, clients, ctl_dir):
        host = NetTrustHost(lab, CONFIG)
        proc = lab.start_unbound(_unbound_conf(host, str(ctl_dir / "unbound.ctl")),
                                 env=host.env())
        g = MacGateway(lab, clients)
        # every client has talked to the gateway over both families (ARP and ND entries),
        # and the module's reader (every 2 s) has seen them
        for name in CLIENTS:
            g.resolve(name, "www.fw.test", "A", over=4)
            g.resolve(name, "www.fw.test", "AAAA", over=6)
        time.sleep(2.5)
        yield g
        assert "Traceback" not in proc.log_text(), proc.log_text()[-3000:]


def test_asked_over_ipv4_connected_over_ipv6_and_a_privacy_address_by_mac(gw):
    a_mac, b_mac = gw.mac("a"), gw.mac("b")
    assert a_mac != b_mac
    # A asks for the AAAA over IPv4 (address keys could grant nothing here)
    assert gw.resolve("a", "h1.fw.test", "AAAA", over=4) == ["2001:db8:118::1"]
    assert (a_mac, "2001:db8:118::1") in gw.pairs(6)
    assert gw.connect("a", "2001:db8:118::1") == "connected"
    # ... and from a privacy address made up after the lookup
    a = gw.clients["a"]
    a.sh("ip", "addr", "add", "fd97:1::7e57/64", "dev", "eth0", "nodad")
    try:
        assert a.run(connect_from, "fd97:1::7e57", "2001:db8:118::1") == "connected"
    finally:
        a.sh("ip", "addr", "del", "fd97:1::7e57/64", "dev", "eth0")
    # B, another MAC, never asked: refused, and no pair for it
    assert gw.connect("b", "2001:db8:118::1") != "connected"
    assert not {p for p in gw.pairs(6) if p[0] == b_mac and p[1] == "2001:db8:118::1"}
    # the control: once B asks (a cache hit, over IPv6 this time) B connects too
    assert gw.resolve("b", "h1.fw.test", "AAAA", over=6) == ["2001:db8:118::1"]
    assert (b_mac, "2001:db8:118::1") in gw.pairs(6)
    assert gw.connect("b", "2001:db8:118::1") == "connected"


def test_an_ipv4_grant_by_mac_is_for_that_client_only(gw):
    assert gw.resolve("a", "h2.fw.test", "A", over=6) == ["198.18.0.2"]      # asked over IPv6
    assert (gw.mac("a"), "198.18.0.2") in gw.pairs(4)
    assert gw.connect("a", "198.18.0.2") == "connected"
    assert gw.connect("b", "198.18.0.2") != "connected"


def test_a_client_with_no_known_mac_gets_nothing_until_its_mac_is_known(gw):
    # the gateway forgets B's neighbour entries; B keeps the gateway's, so B sends no ARP/ND
    # before its next query and the module's reader (2 s) no longer knows B's MAC
    gw.lab.run("host", ["ip", "neigh", "flush", "dev", "lanb"])
    time.sleep(2.5)
    assert gw.resolve("b", "h3.fw.test", "A", over=4) == ["198.18.0.3"]
    assert gw.connect("b", "198.18.0.3") != "connected"
    assert not {p for p in gw.pairs(4) if p[1] == "198.18.0.3"}
    # answering B made the gateway resolve B's MAC; the miss woke the reader: B's next query
    # (a cache hit) is granted
    time.sleep(0.5)
    assert gw.resolve("b", "h3.fw.test", "A", over=4) == ["198.18.0.3"]
    assert (gw.mac("b"), "198.18.0.3") in gw.pairs(4)
    assert gw.connect("b", "198.18.0.3") == "connected"


def test_a_clients_pairs_under_one_domain_are_budgeted_another_domain_is_not(gw):
    # grants.max_per_domain = 6 per client: C holds www.fw.test's two + four more
    c_mac = gw.mac("c")
    gw.resolve("c", "www.fw.test", "A", over=4)
    gw.resolve("c", "www.fw.test", "AAAA", over=6)
    assert (c_mac, "198.51.100.10") in gw.pairs(4) and (c_mac, "2001:db8:100::10") in gw.pairs(6)
    for i in range(10, 14):
        v4 = f"198.18.0.{i}"
        assert gw.resolve("c", f"h{i}.fw.test", "A", over=4) == [v4]
        assert gw.connect("c", v4) == "connected"
    # the seventh address under fw.test is answered but not opened for C ...
    assert gw.resolve("c", "h14.fw.test", "A", over=4) == ["198.18.0.14"]
    assert gw.connect("c", "198.18.0.14") != "connected"
    assert not {p for p in gw.pairs(4) if p[1] == "198.18.0.14"}
    # ... while another client (its own budget) and another domain still get theirs
    assert gw.resolve("a", "h14.fw.test", "A", over=4) == ["198.18.0.14"]
    assert gw.connect("a", "198.18.0.14") == "connected"
    assert gw.resolve("c", "www.ins.sec.test", "A", over=4) == ["198.51.100.40"]
    assert gw.connect("c", "198.51.100.40") == "connected"


def test_mac_pairs_encode_as_nft_writes_them_list_and_revoke():
    """Our netlink encoding of ``ether_addr . ipvN_addr`` elements against nft's own, and the
    people's read (list_pairs) and the eviction's revoke (revoke_pairs) on the real kernel."""
    import ipaddress
    import subprocess
    from nettrust_core.firewall.base import Grant, MacAddress, RulesetSpec
    from nettrust_core.firewall.nftables import NftablesBackend

    def probe() -> dict:
        spec = RulesetSpec(table="ntmac", hooks=("output", "forward"), lan_interfaces=("lo",),
                           per_client=True, client_mac=True)
        b = NftablesBackend(spec)
        ip = ipaddress.ip_address
        mac = MacAddress(bytes.fromhex("020000000001"))
        try:
            b.ensure()
            subprocess.run(["nft", "add", "element", "inet", "ntmac", "clients6",
                            "{ 02:00:00:00:00:09 . 2001:db8::9 timeout 30s }"], check=True)
            b.grant([Grant(ip("192.0.2.1"), 60, "ours.example", mac),
                     Grant(ip("2001:db8::1"), 60, "ours.example", mac),
                     Grant(ip("192.0.2.2"), 60, "ours.example", mac)])
            listed = subprocess.run(["nft", "list", "set", "inet", "ntmac", "clients4"],
                                    capture_output=True, text=True, check=True).stdout
            before = sorted((str(p.client), str(p.address)) for p in b.list_pairs())
            b.revoke_pairs([(mac, ip("192.0.2.1")), (MacAddress(bytes.fromhex("020000000009")),
                                                      ip("2001:db8::9"))])
            after = sorted((str(p.client), str(p.address)) for p in b.list_pairs())
            return {"listed": " ".join(listed.split()), "before": before, "after": after,
                    "lookup": b.lookup_pair(mac, ip("2001:db8::1"))}
        finally:
            b.close()

    with NetNS(f"g13{os.getpid()}nl") as ns:
        got = ns.run(probe)
    assert "02:00:00:00:00:01 . 192.0.2.1 timeout 1m" in got["listed"]
    assert got["before"] == [("02:00:00:00:00:01", "192.0.2.1"), ("02:00:00:00:00:01", "192.0.2.2"),
                             ("02:00:00:00:00:01", "2001:db8::1"), ("02:00:00:00:00:09", "2001:db8::9")]
    assert got["after"] == [("02:00:00:00:00:01", "192.0.2.2"), ("02:00:00:00:00:01", "2001:db8::1")]
    assert 55 < got["lookup"] <= 60

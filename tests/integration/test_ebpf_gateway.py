"""The ``ebpf`` backend on a gateway (issue 18): XDP (generic mode) on the client-facing veth.

Topology: a client namespace (10.96.1.2, fd96:1::2) behind the lab's host namespace acting as
the gateway (Unbound + the module loading the programs, forwarding on), the lab's internet
namespace behind that (HTTP :80, TCP echo :7).  Maps are pinned on a private bpffs.

Conntrack has to be active in the gateway's namespace for established flows to outlive their
grant (XDP asks it through ``bpf_xdp_ct_lookup``); a gateway's NAT or nftables does that.  Here
the test adds one nft table counting established forwarded packets: it refuses nothing.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time

import pytest

from ebpf_util import bpffs
from lab_util import resolving_lab, wait_for
from netns_util import NetNS
from secnet import tcp_probe

from nettrust_core.firewall.ebpf import EbpfBackend
from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

IFACE, C4, G4, C6, G6 = "ntlan", "10.96.1.2", "10.96.1.1", "fd96:1::2", "fd96:1::1"
EXTRA = {"fw.test": ["longlived 3 IN A 198.51.100.90", "longlived 3 IN AAAA 2001:db8:100::90"]}
CAPS = ("net_admin", "net_bind_service", "bpf", "perfmon")


def config(pin: str) -> str:
    return f"""
[firewall]
backends = ["ebpf"]
hooks = ["forward"]
lan_interfaces = ["{IFACE}"]
[grants]
min_ttl = "1s"
grace = "0s"
[lifecycle]
liveness = false
unauthorized = false
[ebpf]
pin_path = "{pin}"
map_size = 4096
"""


def resolve(server: str, qname: str, qtype: str) -> list[str]:
    import dns.message
    import dns.query
    r = dns.query.udp(dns.message.make_query(qname, qtype), server, timeout=5)
    return [rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address")]


def hold_across_expiry(server: str, qname: str, qtype: str, seconds: float) -> dict:
    """Resolve, connect to the echo port, echo a line every 0.3 s for ``seconds`` (past the
    grant's TTL), then try a new connection: what the client saw."""
    address = resolve(server, qname, qtype)[0]
    s = socket.create_connection((address, 7), timeout=2)
    s.settimeout(2)
    echoed = 0
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            line = f"line {n}\n".encode()
            s.sendall(line)
            got = b""
            while not got.endswith(b"\n"):
                got += s.recv(100)
            echoed += got == line
            n += 1
            time.sleep(0.3)
    except OSError as exc:
        return {"error": str(exc), "echoed": echoed, "sent": n}
    finally:
        s.close()
    return {"echoed": echoed, "sent": n, "new": tcp_probe(address, 7, timeout=1.5)}


@pytest.fixture(scope="module")
def gw():
    with bpffs() as fs, resolving_lab(EXTRA) as lab:
        pin = os.path.join(fs, "nt")
        os.mkdir(pin)
        unbound = pwd.getpwnam("unbound")
        os.chown(pin, unbound.pw_uid, unbound.pw_gid)
        lab.run("host", ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        lab.run("net", ["ip", "route", "add", "10.96.0.0/16", "via", lab.host_v4])
        lab.run("net", ["ip", "-6", "route", "add", "fd96::/16", "via", lab.host_v6])
        lab.run("host", ["nft", "-f", "-"], input=(
            "table inet ebpftestct {\n chain ctcount {\n type filter hook forward priority 0; "
            "policy accept;\n ct state established counter\n }\n}\n"))
        client = NetNS("ntebpf")
        try:
            client.sh("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
            client.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", IFACE,
                      "netns", lab.host_ns)
            client.sh("ip", "addr", "add", f"{C4}/24", "dev", "eth0")
            client.sh("ip", "addr", "add", f"{C6}/64", "dev", "eth0", "nodad")
            client.sh("ip", "link", "set", "eth0", "up")
            gwip = ["ip", "netns", "exec", lab.host_ns, "ip"]
            subprocess.run([*gwip, "addr", "add", f"{G4}/24", "dev", IFACE], check=True)
            subprocess.run([*gwip, "addr", "add", f"{G6}/64", "dev", IFACE, "nodad"], check=True)
            subprocess.run([*gwip, "link", "set", IFACE, "up"], check=True)
            client.sh("ip", "route", "add", "default", "via", G4)
            client.sh("ip", "-6", "route", "add", "default", "via", G6)
            wait_for(lambda: "state UP" in client.sh("ip", "link", "show", "eth0").stdout,
                     "the client's carrier")
            host = NetTrustHost(lab, config(pin), name="ebpf-gw")
            conf = host.unbound_conf().replace(
                "    interface: ::1\n", f"    interface: ::1\n    interface: {G4}\n"
                f"    interface: {G6}\n    access-control: 10.96.0.0/16 allow\n"
                "    access-control: fd96::/16 allow\n", 1)
            lab.start_unbound(conf, env=host.env(), caps=CAPS)
            yield lab, host, client, EbpfBackend(pin_path=pin)
        finally:
            lab.stop_unbound()
            client.delete()


def test_xdp_is_attached_in_generic_mode(gw):
    lab, _host, _client, backend = gw
    assert "xdpgeneric" in lab.run("host", ["ip", "link", "show", IFACE]).stdout
    assert backend.status().hooks == ("forward",)


@pytest.mark.parametrize("qtype,address", [("A", "198.51.100.90"), ("AAAA", "2001:db8:100::90")])
def test_syn_dropped_until_answered_established_flow_survives_expiry_new_flow_dropped(gw, qtype,
                                                                                     address):
    lab, _host, client, backend = gw
    server = G4 if qtype == "A" else G6
    before = backend.stats()["drop_no_grant"]
    assert client.run(tcp_probe, address, 7) == "timeout"                 # dropped at XDP
    assert backend.stats()["drop_no_grant"] > before
    lab.connect("host", address, 7, timeout=2).close()                    # control: reachable
    held = client.run(hold_across_expiry, server, "longlived.fw.test", qtype, 5.0)
    assert held.get("error") is None, held
    assert held["echoed"] == held["sent"] >= 10, held                    # past the 3 s grant
    assert held["new"] == "timeout", held                                 # a new flow: dropped
    assert backend.stats()["pass_conntrack"] > 0

"""Gateway mode (issue 13): grants per client, networks that may go anywhere.

Topology (every part a real namespace; the root namespace is never touched)::

    client A  10.97.1.2 fd97:1::2 ─┐                      the lab's host ns = the gateway:
    client B  10.97.2.2 fd97:2::2 ─┼─ lana/lanb/lanc ──   Unbound + the module + nftables
    client C  10.97.3.2 (open)    ─┘                      (forward hook), forwarding on
                                                            │ veth
                                                          the lab's internet ns: NSD with
                                                          signed zones, HTTP :80 and TCP echo :7
                                                          on 198.18.0.0/15, 198.51.100.0/24, …

What a client would notice is asserted: a connect through the gateway succeeds or is refused,
a held connection keeps working, and the kernel's ``client . destination`` sets hold exactly
the pairs an answer justified.  Unbound's own counters (``unbound-control stats_noreset``)
show that a second client's answer really came from the cache.
"""

from __future__ import annotations

import ipaddress
import json
import contextlib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

import secnet
from conftest import require
from netns_util import NetNS
from secnet import tcp_probe
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_sets import grant_set_of

pytestmark = pytest.mark.integration

CLIENTS = {  # name: (gateway-side interface, client v4, gateway v4, client v6, gateway v6)
    "a": ("lana", "10.97.1.2", "10.97.1.1", "fd97:1::2", "fd97:1::1"),
    "b": ("lanb", "10.97.2.2", "10.97.2.1", "fd97:2::2", "fd97:2::1"),
    "c": ("lanc", "10.97.3.2", "10.97.3.1", "fd97:3::2", "fd97:3::1"),
}
TABLE = "ntgw"
CONFIG = f"""
[firewall]
table = "{TABLE}"
hooks = ["output", "forward"]
lan_interfaces = ["lana", "lanb", "lanc"]
[gateway]
per_client = true
ipv6_client_prefix = 64
open_networks = ["10.97.3.0/24"]
drop_input = true
management_ports = ["22"]
management_networks = ["10.97.2.0/24"]
strike_threshold = 5
strike_penalty = "3s"
strike_dns_rate = 50
[policy]
deny = ["**.blocked.example"]
[grants]
min_ttl = "1s"
grace = "0s"
[lifecycle]
liveness = false
unauthorized = false
[log]
level = "debug"
"""


def _veth(gw_ns: str, client: NetNS, gw_if: str, c4: str, g4: str, c6: str, g6: str) -> None:
    client.sh("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
    client.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", gw_if, "netns", gw_ns)
    client.sh("ip", "addr", "add", f"{c4}/24", "dev", "eth0")
    client.sh("ip", "addr", "add", f"{c6}/64", "dev", "eth0", "nodad")
    client.sh("ip", "link", "set", "eth0", "up")
    gw = ["ip", "netns", "exec", gw_ns, "ip"]
    subprocess.run([*gw, "addr", "add", f"{g4}/24", "dev", gw_if], check=True)
    subprocess.run([*gw, "addr", "add", f"{g6}/64", "dev", gw_if, "nodad"], check=True)
    subprocess.run([*gw, "link", "set", gw_if, "up"], check=True)
    client.sh("ip", "route", "add", "default", "via", g4)
    client.sh("ip", "-6", "route", "add", "default", "via", g6)
    deadline = time.monotonic() + 10
    while "state UP" not in client.sh("ip", "link", "show", "eth0").stdout:
        assert time.monotonic() < deadline, "no carrier on the client's veth"
        time.sleep(0.02)


@contextlib.contextmanager
def gateway_lab(spec: dict, prefix: str):
    """The gateway topology the gateway tests share: the lab's host namespace forwarding for
    client namespaces on veths (``spec``: name -> interface and addresses, as CLIENTS), routes
    back from the internet namespace, and a directory for Unbound's control sockets. Unbound is
    stopped and the client namespaces removed afterwards, also on failure."""
    from testbed.lab import Lab, missing_prerequisites
    require(missing_prerequisites(("unbound", "unbound-control", "nft")))
    with Lab() as lab:
        lab.run("host", ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                         "net.ipv6.conf.all.forwarding=1"])
        lab.run("net", ["ip", "route", "add", "10.97.0.0/16", "via", lab.host_v4])
        lab.run("net", ["ip", "-6", "route", "add", "fd97::/16", "via", lab.host_v6])
        clients: dict[str, NetNS] = {}
        try:
            for name, (gw_if, c4, g4, c6, g6) in spec.items():
                clients[name] = NetNS(f"{prefix}{name}")
                _veth(lab.host_ns, clients[name], gw_if, c4, g4, c6, g6)
            ctl_dir = lab.work_dir / "ctl"
            ctl_dir.mkdir(mode=0o777, exist_ok=True)
            os.chmod(ctl_dir, 0o777)
            yield lab, clients, ctl_dir
        finally:
            lab.stop_unbound()
            for ns in clients.values():
                ns.delete()


SLOW_SERVER = "198.51.100.53"       # an AnyIP address of the lab's internet ns
SLOW_ADDRESS = "198.51.100.77"


def _unbound_conf(host, ctl: str) -> str:
    conf = host.unbound_conf()
    # the first try of an unknown server waits 2 s, so the slow server's 1 s is no timeout
    conf += (f'server:\n    unknown-server-time-limit: 2000\n    domain-insecure: "slow.test"\n    local-zone: "slow.test." nodefault\n'
             f'stub-zone:\n    name: "slow.test"\n    stub-addr: {SLOW_SERVER}\n')
    listen = "".join(f"    interface: {c[2]}\n    interface: {c[4]}\n" for c in CLIENTS.values())
    conf = conf.replace("    interface: ::1\n", "    interface: ::1\n" + listen
                        + "    access-control: 10.97.0.0/16 allow\n"
                        + "    access-control: fd97::/16 allow\n", 1)
    return conf + (f"remote-control:\n    control-enable: yes\n"
                   f"    control-interface: {ctl}\n    control-use-cert: no\n")


class SlowServer:
    """An authoritative server for ``slow.test`` in the internet ns that answers every query
    after ``delay`` seconds: a query stays in flight long enough for a second client to join."""

    def __init__(self, lab, delay: float = 1.0) -> None:
        self.sock = lab.socket("net", socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((SLOW_SERVER, 53))
        self.delay = delay
        self.queries = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import dns.flags
        import dns.message
        import dns.rrset
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:                   # noqa: BLE001 - not DNS: ignore
                continue
            self.queries += 1
            r = dns.message.make_response(q)
            r.flags |= dns.flags.AA
            name = q.question[0].name
            if q.question[0].rdtype == 1:
                r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", SLOW_ADDRESS))
            threading.Timer(self.delay, self._send, (r.to_wire(), peer)).start()

    def _send(self, wire: bytes, peer) -> None:
        try:
            self.sock.sendto(wire, peer)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class Gateway:
    def __init__(self, lab, host, clients: dict[str, NetNS], conf_path: str) -> None:
        self.lab, self.host, self.clients, self.conf_path = lab, host, clients, conf_path

    def stats(self) -> dict[str, float]:
        out = self.lab.run("host", ["unbound-control", "-c", self.conf_path, "stats_noreset"]).stdout
        return {k: float(v) for k, v in (ln.split("=", 1) for ln in out.split() if "=" in ln)}

    def pairs(self, version: int = 4) -> set[tuple[str, str]]:
        """The ``client . destination`` pairs in the kernel's per-client set."""
        out = self.lab.run("host", ["nft", "list", "set", "inet", TABLE, f"clients{version}"]).stdout
        flat = " ".join(out.split())
        return set(re.findall(r"([0-9a-f:.]+) \. ([0-9a-f:.]+)", flat))

    def resolve(self, who: str, qname: str, qtype: str = "A", *, cd: bool = False,
                over: int = 4) -> list[str]:
        server = CLIENTS[who][2] if over == 4 else CLIENTS[who][4]
        return self.clients[who].run(resolve, server, qname, qtype, cd)

    def ask(self, who: str, qname: str, **kw) -> str:
        return self.clients[who].run(ask, CLIENTS[who][2], qname, **kw)

    def counter(self, name: str) -> int:
        out = self.lab.run("host", ["nft", "list", "counter", "inet", TABLE, name]).stdout
        return int(re.search(r"packets (\d+)", out).group(1))

    def struck(self) -> str:
        return self.lab.run("host", ["nft", "list", "set", "inet", TABLE, "strike4"]).stdout

    def connect(self, who: str, address: str, port: int = 80) -> str:
        return self.clients[who].run(tcp_probe, address, port)


def ask(server: str, qname: str, wait: float = 1.0, source: str | None = None) -> str:
    """One recursive query: the rcode's name or "no reply" (``source``: a forged source address
    the client namespace holds)."""
    import dns.message
    import dns.rcode
    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(wait)
    try:
        if source:
            s.bind((source, 0))
        s.sendto(dns.message.make_query(qname, "A").to_wire(), (server, 53))
        return dns.rcode.to_text(dns.message.from_wire(s.recvfrom(65535)[0]).rcode())
    except TimeoutError:
        return "no reply"
    finally:
        s.close()


def flood(server: str, count: int) -> int:
    """``count`` queries as fast as one socket sends them (a DNS flood); how many were sent."""
    import dns.message
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wire = dns.message.make_query("www.fw.test", "A").to_wire()
    sent = 0
    for _ in range(count):
        sent += s.sendto(wire, (server, 53)) > 0
    s.close()
    return sent


def resolve(server: str, qname: str, qtype: str, cd: bool) -> list[str]:
    """A recursive query (RD, optionally CD) from inside a client namespace: the addresses."""
    import dns.flags
    import dns.message
    import dns.query
    q = dns.message.make_query(qname, qtype)
    if cd:
        q.flags |= dns.flags.CD
    r = dns.query.udp(q, server, timeout=10)
    return [rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address")]


@pytest.fixture(scope="module")
def gw():
    from testbed.product import NetTrustHost
    with gateway_lab(CLIENTS, "ntgw-") as (lab, clients, ctl_dir):
        slow = SlowServer(lab)
        try:
            host = NetTrustHost(lab, CONFIG)
            conf_text = _unbound_conf(host, str(ctl_dir / "unbound.ctl"))
            proc = lab.start_unbound(conf_text, env=host.env())
            conf_path = str(lab.work_dir / "unbound" / "unbound.conf")
            assert os.path.exists(conf_path), os.listdir(lab.work_dir / "unbound")
            g = Gateway(lab, host, clients, conf_path)
            g.slow = slow
            yield g
            assert "Traceback" not in proc.log_text(), proc.log_text()[-3000:]
        finally:
            slow.close()


# -- item 1: a grant is for the client that asked; a cache hit grants the next one ----------
def test_a_grant_is_for_the_client_that_asked_and_a_cache_hit_grants_the_next(gw):
    assert gw.resolve("a", "www.fw.test") == ["198.51.100.10"]
    assert gw.connect("a", "198.51.100.10") == "connected"
    # B never asked: the address A opened stays closed for B
    assert gw.connect("b", "198.51.100.10") != "connected"
    assert ("10.97.2.2", "198.51.100.10") not in gw.pairs()
    hits = gw.stats()["total.num.cachehits"]
    assert gw.resolve("b", "www.fw.test") == ["198.51.100.10"]
    assert gw.stats()["total.num.cachehits"] == hits + 1          # served from Unbound's cache
    assert ("10.97.2.2", "198.51.100.10") in gw.pairs()
    assert gw.connect("b", "198.51.100.10") == "connected"
    # the same over IPv6: asked and connected over IPv6
    assert gw.resolve("a", "www.fw.test", "AAAA", over=6) == ["2001:db8:100::10"]
    assert gw.connect("a", "2001:db8:100::10") == "connected"
    assert gw.connect("b", "2001:db8:100::10") != "connected"
    hits = gw.stats()["total.num.cachehits"]
    assert gw.resolve("b", "www.fw.test", "AAAA", over=6) == ["2001:db8:100::10"]
    assert gw.stats()["total.num.cachehits"] == hits + 1
    assert gw.connect("b", "2001:db8:100::10") == "connected"
    # a cache hit whose grant is live writes nothing more (the in-process map answers)
    before = gw.pairs()
    assert gw.resolve("b", "www.fw.test") == ["198.51.100.10"]
    assert gw.pairs() == before


def test_the_gateway_itself_still_resolves_and_connects_in_output_mode(gw):
    assert gw.lab.run("host", ["dig", "@127.0.0.1", "+short", "c1.fw.test", "A"]).stdout.split()[-1] \
        == "198.51.100.10"
    shard = grant_set_of(RulesetSpec(), 0, ipaddress.ip_address("198.51.100.10"))
    assert gw.lab.run("host", ["nft", "get", "element", "inet", TABLE, shard,
                               "{ 198.51.100.10 }"], check=False).returncode == 0
    # ... and that host grant opens nothing for a client
    assert ("10.97.2.2", "198.51.100.11") not in gw.pairs()


# -- item 2: clients that joined one in-flight query are all granted --------------------------
def test_clients_joining_one_in_flight_query_are_all_granted(gw):
    results: dict[str, list[str]] = {}

    def ask(who: str) -> None:
        try:
            results[who] = gw.resolve(who, "www.slow.test")
        except Exception as exc:            # noqa: BLE001 - shown in the assertion
            results[who] = [str(exc).splitlines()[0]]
    threads = [threading.Thread(target=ask, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.3)                       # B asks while A's query is in flight
    for t in threads:
        t.join(20)
    assert results == {"a": [SLOW_ADDRESS], "b": [SLOW_ADDRESS]}, (
        gw.slow.queries, gw.lab.unbound.log_text()[-3000:])
    # one resolution (one decision logged, B was no cache hit), both clients granted
    log = gw.lab.unbound.log_text()
    assert len(re.findall(r"www\.slow\.test A NOERROR .*->", log)) == 1, log[-2000:]
    assert {("10.97.1.2", SLOW_ADDRESS), ("10.97.2.2", SLOW_ADDRESS)} <= gw.pairs()
    assert gw.connect("a", SLOW_ADDRESS) == "connected"
    assert gw.connect("b", SLOW_ADDRESS) == "connected"
    assert gw.connect("c", SLOW_ADDRESS) == "connected"          # C: open network (item 3)


# -- dual-stack: with ipv6_client_prefix = 64 a host's other (privacy) addresses share its grant
def connect_from(source: str, address: str, port: int = 80) -> str:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(1.5)
    try:
        s.bind((source, 0))
        s.connect((address, port))
        return "connected"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    finally:
        s.close()


def test_an_ipv6_clients_privacy_address_shares_the_grant_of_its_64(gw):
    a = gw.clients["a"]
    a.sh("ip", "addr", "add", "fd97:1::99/64", "dev", "eth0", "nodad")
    try:
        assert gw.resolve("a", "www.ins.sec.test", "AAAA", over=6) == ["2001:db8:100::40"]
        assert ("fd97:1::", "2001:db8:100::40") in gw.pairs(6)        # keyed by the /64
        assert a.run(connect_from, "fd97:1::99", "2001:db8:100::40") == "connected"
        assert a.run(connect_from, "fd97:1::2", "2001:db8:100::40") == "connected"
        # another LAN's client is still refused (the control)
        assert gw.connect("b", "2001:db8:100::40") != "connected"
    finally:
        a.sh("ip", "addr", "del", "fd97:1::99/64", "dev", "eth0")


# -- a flush behind the module's back is noticed and the pairs come back on the next hit -----
def test_flushed_per_client_grants_are_noticed_and_granted_again(gw):
    assert gw.resolve("b", "www.sec.test") == ["198.51.100.20"]
    assert ("10.97.2.2", "198.51.100.20") in gw.pairs()
    gw.lab.run("host", ["nft", "flush", "set", "inet", TABLE, "clients4"])
    assert gw.connect("b", "198.51.100.20") != "connected"               # really gone
    # the periodic check (grants.verify_interval, 2 s) notices and forgets what it believed
    assert secnet.wait_for(lambda: "gone from the kernel" in gw.lab.unbound.log_text(), 10)
    hits = gw.stats()["total.num.cachehits"]
    assert gw.resolve("b", "www.sec.test") == ["198.51.100.20"]
    assert gw.stats()["total.num.cachehits"] == hits + 1                  # a cache hit ...
    assert gw.connect("b", "198.51.100.20") == "connected"               # ... grants again


# -- item 3: open networks go anywhere, nobody else does --------------------------------------
def test_open_networks_reach_a_bare_address_and_others_do_not(gw):
    assert gw.connect("c", "198.51.100.99") == "connected"
    assert gw.connect("a", "198.51.100.99") != "connected"
    assert gw.connect("b", "198.51.100.99", 7) != "connected"
    # still no DNS but the gateway's, even for an open network
    assert gw.clients["c"].run(secnet.udp_probe, "198.51.100.99", 53) != "reply"


# -- item 6: bogus data served from cache to a CD-bit client is never granted -----------------
def test_a_cd_bit_client_served_bogus_data_from_cache_is_not_granted(gw):
    assert gw.resolve("a", "www.bad.test", cd=True) == ["198.51.100.30"]      # bogus, CD: served
    hits = gw.stats()["total.num.cachehits"]
    assert gw.resolve("b", "www.bad.test", cd=True) == ["198.51.100.30"]
    assert gw.stats()["total.num.cachehits"] == hits + 1                     # from cache
    assert not {p for p in gw.pairs() if p[1] == "198.51.100.30"}
    assert gw.connect("a", "198.51.100.30") != "connected"
    assert gw.connect("b", "198.51.100.30") != "connected"
    # the control: a secure name from the same kind of hit is granted
    assert gw.resolve("a", "www.sec.test") == ["198.51.100.20"]
    assert gw.resolve("b", "www.sec.test") == ["198.51.100.20"]
    assert gw.connect("b", "198.51.100.20") == "connected"


# -- item 7: a held connection outlives its grant; new connects after it fail -----------------
def test_a_held_connection_survives_its_grants_expiry_new_ones_fail(gw):
    assert gw.resolve("a", "short.fw.test") == ["198.51.100.12"]          # TTL 2 -> grant 2 s
    held = gw.clients["a"].socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        held.settimeout(3)
        held.connect(("198.51.100.12", 7))
        held.sendall(b"before")
        assert held.recv(100) == b"before"
        assert secnet.wait_for(lambda: ("10.97.1.2", "198.51.100.12") not in gw.pairs(), 10)
        held.sendall(b"after")
        assert held.recv(100) == b"after"                                # established: kept
        assert gw.connect("a", "198.51.100.12", 7) != "connected"         # new: refused
    finally:
        held.close()
    # the control: asking again opens it again
    assert gw.resolve("a", "short.fw.test") == ["198.51.100.12"]
    assert gw.connect("a", "198.51.100.12", 7) == "connected"


# -- item 4: with drop_input only the listed services on the gateway are reachable ------------
def test_drop_input_leaves_only_dns_dhcp_nd_and_management_reachable(gw):
    gwns = secnet.Existing(gw.lab.host_ns)
    servers = secnet.Servers(gwns).tcp(22).tcp(8080).udp(5000).start()
    try:
        # the controls: DNS to the gateway works from every client; the gateway reaches its
        # own services over loopback
        assert gw.resolve("c", "www.fw.test") == ["198.51.100.10"]
        assert gw.resolve("a", "www.fw.test", "AAAA", over=6) == ["2001:db8:100::10"]
        assert gwns.run(tcp_probe, "127.0.0.1", 8080) == "connected"
        # management: from its network only
        assert gw.connect("b", CLIENTS["b"][2], 22) == "connected"
        assert gw.connect("a", CLIENTS["a"][2], 22) != "connected"
        internet = secnet.Existing(gw.lab.net_ns)
        assert internet.run(tcp_probe, gw.lab.host_v4, 22) != "connected"
        # anything else on the gateway: from nobody, TCP or UDP, IPv4 or IPv6
        for who in ("a", "b", "c"):
            assert gw.connect(who, CLIENTS[who][2], 8080) != "connected"
            assert gw.connect(who, CLIENTS[who][4], 8080) != "connected"
            assert gw.clients[who].run(secnet.udp_probe, CLIENTS[who][2], 5000) == "no reply"
        assert internet.run(secnet.udp_probe, gw.lab.host_v4, 5000) == "no reply"
        assert not servers.received("udp", 5000, secnet.MARK)
        # ... and the drops are counted
        out = gw.lab.run("host", ["nft", "list", "chain", "inet", TABLE, "input"]).stdout
        assert "policy drop" in out and 'counter name "rejected" drop' in out
    finally:
        servers.close()


# -- the netlink encoding of concatenated keys, against nft's own ------------------------------
def test_concatenated_elements_encode_as_nft_writes_them():
    import ipaddress
    from nettrust_core.firewall.base import Grant, RulesetSpec
    from nettrust_core.firewall.nftables import NftablesBackend

    def probe() -> dict:
        spec = RulesetSpec(table="ntcat", hooks=("output", "forward"), lan_interfaces=("lo",),
                           per_client=True)
        b = NftablesBackend(spec)
        ip = ipaddress.ip_address
        try:
            b.ensure()
            subprocess.run(["nft", "add", "element", "inet", "ntcat", "clients4",
                            "{ 10.0.0.9 . 192.0.2.9 timeout 30s }"], check=True)
            subprocess.run(["nft", "add", "element", "inet", "ntcat", "clients6",
                            "{ fd00::9 . 2001:db8::9 timeout 30s }"], check=True)
            b.grant([Grant(ip("192.0.2.1"), 60, "ours.example", ip("10.0.0.1")),
                     Grant(ip("2001:db8::1"), 60, "ours.example", ip("fd00::1"))])
            sock = b._socket("_ctl")
            keys = {n: sorted(e.key.hex() for e in sock.dump_elements("ntcat", n))
                    for n in ("clients4", "clients6")}
            listed = subprocess.run(["nft", "list", "set", "inet", "ntcat", "clients4"],
                                    capture_output=True, text=True, check=True).stdout
            return {"keys": keys, "listed": " ".join(listed.split()),
                    "lookup": b.lookup_pair(ip("10.0.0.9"), ip("192.0.2.9")),
                    "lookup6": b.lookup_pair(ip("fd00::1"), ip("2001:db8::1")),
                    "missing": b.lookup_pair(ip("10.0.0.2"), ip("192.0.2.9"))}
        finally:
            b.close()

    with NetNS("ntgw-nl") as ns:
        got = ns.run(probe)
    from nettrust_core.netlink.nftables import concat_key
    ip = ipaddress.ip_address
    # what nft wrote, read back over netlink, is exactly our encoding of the same pair
    assert concat_key(ip("10.0.0.9").packed, ip("192.0.2.9").packed).hex() in got["keys"]["clients4"]
    assert concat_key(ip("fd00::9").packed, ip("2001:db8::9").packed).hex() in got["keys"]["clients6"]
    # and what we wrote, nft reads as the pair we meant
    assert "10.0.0.1 . 192.0.2.1 timeout 1m" in got["listed"] and 'comment "ours.example"' in got["listed"]
    assert concat_key(ip("fd00::1").packed, ip("2001:db8::1").packed).hex() in got["keys"]["clients6"]
    # one pair asked of the kernel (how a restarted process learns what it must not shorten)
    assert 25 < got["lookup"] <= 30 and 55 < got["lookup6"] <= 60 and got["missing"] is None


# -- item 5: strikes act, and a forged source cannot get a victim struck ----------------------
def test_a_client_sending_blocked_names_is_struck_and_recovers_spoofing_frames_nobody(gw):
    a_addr, c = CLIENTS["a"][1], gw.clients["c"]
    # a forger on client C's link sends A's address as source, far past the threshold
    c.sh("ip", "addr", "add", f"{a_addr}/32", "dev", "eth0")
    try:
        spoofed = gw.counter("spoofed")
        for i in range(8):
            assert c.run(ask, CLIENTS["c"][2], f"f{i}.blocked.example", wait=0.2,
                         source=a_addr) == "no reply"
        assert gw.counter("spoofed") >= spoofed + 8           # dropped on entry, never counted
    finally:
        c.sh("ip", "addr", "del", f"{a_addr}/32", "dev", "eth0")
    assert a_addr not in gw.struck()
    assert gw.ask("a", "www.fw.test") == "NOERROR"
    # a management network is never struck (the control for the exemption)
    for i in range(6):
        assert gw.ask("b", f"m{i}.blocked.example") == "NXDOMAIN"
    assert gw.ask("b", "www.fw.test") == "NOERROR"
    # A itself: five blocked names within the window -> struck: its DNS goes unanswered
    struck_before = gw.counter("struck")
    for i in range(5):
        assert gw.ask("a", f"a{i}.blocked.example") == "NXDOMAIN"
    assert a_addr in gw.struck()
    assert gw.ask("a", "www.fw.test") == "no reply"
    assert gw.counter("struck") > struck_before                # the kernel's metric
    assert re.search(rf"strike: {re.escape(a_addr)} sent 5 blocked", gw.lab.unbound.log_text())
    assert gw.ask("c", "www.fw.test") == "NOERROR"                # nobody else is affected
    # ... and recovers after the penalty (3 s)
    assert secnet.wait_for(lambda: gw.ask("a", "www.fw.test") == "NOERROR", 10)
    assert a_addr not in gw.struck()


def test_the_kernel_meter_strikes_a_dns_flood_without_python(gw):
    a_addr = CLIENTS["a"][1]
    assert gw.ask("a", "www.fw.test") == "NOERROR"                # the control: below the rate
    log_before = gw.lab.unbound.log_text().count("strike:")
    assert gw.clients["a"].run(flood, CLIENTS["a"][2], 400) == 400
    assert a_addr in gw.struck()
    assert gw.ask("a", "www.fw.test") == "no reply"
    assert gw.lab.unbound.log_text().count("strike:") == log_before   # the kernel did it
    assert gw.ask("b", "www.fw.test") == "NOERROR"                # exempt: management network
    # what an administrator sees meanwhile: A struck, and the per-client pairs (B's included)
    rows = json.loads(gw.host.nettrust("hosts", "--json").stdout)
    assert {r["struck"] for r in rows if "struck" in r} == {a_addr}
    pairs = {(r["client"], r["address"]): r for r in rows if "client" in r}
    assert ("10.97.2.2", "198.51.100.10") in pairs
    assert 0 < pairs["10.97.2.2", "198.51.100.10"]["expires_in"] <= pairs["10.97.2.2", "198.51.100.10"]["timeout"]
    assert gw.pairs(4) | gw.pairs(6) <= pairs.keys()              # the kernel's (read later:
    assert {c for c, _a in pairs} <= {"10.97.1.2", "10.97.2.2", "10.97.3.2", "fd97:1::", "fd97:2::",
                                      "fd97:3::"}                  # some lapse)
    text = gw.host.nettrust("status").stdout
    assert re.search(rf"struck clients: 1\n  {re.escape(a_addr)}  DNS and DoT dropped", text), text
    assert re.search(r"10\.97\.2\.2 +198\.51\.100\.10 ", text), text
    assert secnet.wait_for(lambda: gw.ask("a", "www.fw.test") == "NOERROR", 10)
    assert "struck clients: 0" in gw.host.nettrust("hosts").stdout


# -- strikes on a host: by local user, from the refused-connection events ---------------------
def test_a_struck_local_user_loses_its_dns_root_and_the_resolver_never(tmp_path):
    import pwd
    import sys
    from nettrust_core.firewall.base import RulesetSpec
    from nettrust_core.firewall.nftables import NftablesBackend
    nobody, daemon = pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("daemon").pw_uid
    resolver = pwd.getpwnam("unbound").pw_uid
    spec = RulesetSpec(table="ntuid", resolver_uid=resolver, uid_strikes=True)

    def load() -> None:
        b = NftablesBackend(spec)
        try:
            b.ensure()
        finally:
            b.close()

    def strike(uid: int) -> str:
        b = NftablesBackend(spec)
        try:
            b.strike(uid, 3)
        finally:
            b.close()
        subprocess.run(["nft", "add", "element", "inet", "ntuid", "strike_uids",
                        "{ 1234 timeout 30s }"], check=True)
        return b._socket("_ctl").dump_elements("ntuid", "strike_uids")

    with NetNS("ntgw-uid") as ns:
        servers = secnet.Servers(ns).udp(53).udp(5353).start()
        try:
            ns.run(load)
            for uid in (nobody, daemon, 0):                      # the controls
                assert ns.run(secnet.udp_probe, "127.0.0.1", 53, uid=uid) == "reply"
            elements = ns.run(strike, nobody)
            keys = {e.key for e in elements}
            # nft's own encoding of a uid is ours (host byte order, 32 bits)
            assert (1234).to_bytes(4, sys.byteorder) in keys
            assert nobody.to_bytes(4, sys.byteorder) in keys
            # dropped on output: the sender is told at once (EPERM), nothing reaches the server
            assert ns.run(secnet.udp_probe, "127.0.0.1", 53, uid=nobody) == "Operation not permitted"
            assert ns.run(secnet.udp_probe, "127.0.0.1", 5353, uid=nobody) == "reply"   # not DNS
            assert ns.run(secnet.udp_probe, "127.0.0.1", 53, uid=daemon) == "reply"
            # root and the resolver's user are never struck, even when written into the set
            def strike_exempt() -> None:
                b = NftablesBackend(spec)
                try:
                    b.strike(0, 3)
                    b.strike(resolver, 3)
                finally:
                    b.close()
            ns.run(strike_exempt)
            assert ns.run(secnet.udp_probe, "127.0.0.1", 53, uid=0) == "reply"
            assert ns.run(secnet.udp_probe, "127.0.0.1", 53, uid=resolver) == "reply"
            # the penalty ends by itself
            assert secnet.wait_for(lambda: ns.run(secnet.udp_probe, "127.0.0.1", 53,
                                                  uid=nobody) == "reply", 8)
        finally:
            servers.close()

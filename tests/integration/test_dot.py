"""DNS-over-TLS for clients with client certificates (issue 14): HAProxy verifies the client's
certificate and passes its real address to Unbound over PROXY v2; the module grants per client.

Topology (real namespaces; the root namespace is never touched)::

    client A 10.98.1.2 fd98:1::2 ─ lana ─┐   the lab's host ns = the gateway: HAProxy on :853
    client B 10.98.2.2           ─ lanb ─┘   (rendered by `nettrust haproxy-conf`), Unbound +
                                             module with the include of `nettrust unbound-conf`
                                             (PROXY v2 on 127.0.0.1:8853), nftables forward hook
                                                │
                                             the lab's internet ns: NSD, HTTP :80

The certificates are made with the openssl commands the README shows (a site CA, a server
certificate, a client certificate), plus a second CA nobody trusts.  Clients are real: kdig
(knot-dnsutils) and Python's ssl with dnspython.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import require
from netns_util import NetNS
from lab_util import wait_for
from secnet import tcp_probe
from testbed.zones import h_address

pytestmark = pytest.mark.integration

CLIENTS = {  # name: (gateway-side interface, client v4, gateway v4, client v6, gateway v6)
    "a": ("lana", "10.98.1.2", "10.98.1.1", "fd98:1::2", "fd98:1::1"),
    "b": ("lanb", "10.98.2.2", "10.98.2.1", "fd98:2::2", "fd98:2::1"),
}
SERVER_NAME = "dns.gw.test"
TABLE = "ntdot"
PROXY_PORT = 8853
CONFIG = f"""
[firewall]
table = "{TABLE}"
hooks = ["output", "forward"]
lan_interfaces = ["lana", "lanb"]
[gateway]
per_client = true
strike_threshold = 3
strike_penalty = "4s"
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
[dot]
enabled = true
listen = ["0.0.0.0:853", "[::]:853"]
proxy_port = {PROXY_PORT}
"""


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str, cn: str) -> None:
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "30", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.pem")


def issue(d: Path, ca: str, name: str, cn: str, ext: str) -> None:
    """A certificate for ``name`` signed by ``ca`` (the README's commands)."""
    (d / f"{name}.ext").write_text(ext + "\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


def certificates(d: Path) -> None:
    d.mkdir(mode=0o755, exist_ok=True)
    make_ca(d, "site-ca", "NetTrust test site CA")
    issue(d, "site-ca", "server", SERVER_NAME,
          f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth")
    (d / "server.pem").write_text((d / "server.crt").read_text() + (d / "server.key").read_text())
    issue(d, "site-ca", "alice", "alice-laptop", "extendedKeyUsage=clientAuth")
    make_ca(d, "other-ca", "Somebody else's CA")
    issue(d, "other-ca", "mallory", "alice-laptop", "extendedKeyUsage=clientAuth")
    for p in d.iterdir():
        p.chmod(0o644)


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


def dot_query(server: str, qname: str, ca: str, cert: str | None = None,
              key: str | None = None, qtype: str = "A") -> str:
    """One DoT query with Python's ssl and dnspython: "answer: ADDR ..." / "rcode: X", or
    the failure as "tls: ..." (handshake or first read) / "error: ...". TLS 1.3: a server that
    refuses the client's certificate says so with an alert the client reads after its
    Finished, so the failure may surface on the first read rather than in do_handshake."""
    import dns.message
    import dns.query
    import dns.rcode
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        r = dns.query.tls(dns.message.make_query(qname, qtype), server, timeout=5,
                          ssl_context=ctx, server_hostname=SERVER_NAME)
    except ssl.SSLError as exc:
        return f"tls: {exc.reason or exc}"
    except (OSError, EOFError, Exception) as exc:    # noqa: BLE001 - the text is the result
        return f"error: {type(exc).__name__}: {exc}"
    addrs = [rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address")]
    return "answer: " + " ".join(addrs) if addrs else f"rcode: {dns.rcode.to_text(r.rcode())}"


def proxy_v2_query(sock: socket.socket, port: int, claimed: str, qname: str) -> str:
    """Speak PROXY v2 over ``sock`` ourselves, claiming to be ``claimed``, then one
    DNS-over-TCP query; its rcode."""
    import dns.message
    import dns.rcode
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = (socket.inet_aton(claimed) + socket.inet_aton("127.0.0.1")
             + struct.pack("!HH", 40000, port))
    header = sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs
    q = dns.message.make_query(qname, "A").to_wire()
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(header + struct.pack("!H", len(q)) + q)
    n = struct.unpack("!H", sock.recv(2))[0]
    data = b""
    while len(data) < n:
        data += sock.recv(n - len(data))
    return dns.rcode.to_text(dns.message.from_wire(data).rcode())


class DotGateway:
    def __init__(self, lab, host, clients: dict[str, NetNS], certs: Path, haproxy) -> None:
        self.lab, self.host, self.clients, self.certs, self.haproxy = lab, host, clients, certs, haproxy

    def pairs(self, version: int = 4) -> set[tuple[str, str]]:
        out = self.lab.run("host", ["nft", "list", "set", "inet", TABLE, f"clients{version}"]).stdout
        return set(re.findall(r"([0-9a-f:.]+) \. ([0-9a-f:.]+)", " ".join(out.split())))

    def kdig(self, who: str, qname: str, qtype: str = "A", *, over: int = 4,
             cert: str = "alice") -> subprocess.CompletedProcess:
        server = CLIENTS[who][2] if over == 4 else CLIENTS[who][4]
        c = self.certs
        return self.clients[who].sh(
            "kdig", f"@{server}", "-p", "853", "+tls", f"+tls-ca={c / 'site-ca.pem'}",
            f"+tls-hostname={SERVER_NAME}", f"+tls-certfile={c / (cert + '.crt')}",
            f"+tls-keyfile={c / (cert + '.key')}", "+short", "+timeout=3", "+retry=0",
            qname, qtype, check=False)

    def python_dot(self, who: str, qname: str, cert: str | None, qtype: str = "A") -> str:
        c = self.certs
        return self.clients[who].run(
            dot_query, CLIENTS[who][2], qname, str(c / "site-ca.pem"),
            str(c / f"{cert}.crt") if cert else None, str(c / f"{cert}.key") if cert else None,
            qtype)

    def connect(self, who: str, address: str, port: int = 80) -> str:
        return self.clients[who].run(tcp_probe, address, port)


@pytest.fixture(scope="module")
def dot(tmp_path_factory):
    from testbed.lab import Lab, missing_prerequisites
    from testbed.product import NetTrustHost, stats_section
    require(missing_prerequisites(("unbound", "nft", "haproxy", "kdig", "openssl")))
    certs = tmp_path_factory.mktemp("dot-certs")
    certificates(certs)
    with Lab() as lab:
        lab.run("host", ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                         "net.ipv6.conf.all.forwarding=1"])
        lab.run("net", ["ip", "route", "add", "10.98.0.0/16", "via", lab.host_v4])
        lab.run("net", ["ip", "-6", "route", "add", "fd98::/16", "via", lab.host_v6])
        clients: dict[str, NetNS] = {}
        try:
            for name, (gw_if, c4, g4, c6, g6) in CLIENTS.items():
                clients[name] = NetNS(f"ntdot-{name}")
                _veth(lab.host_ns, clients[name], gw_if, c4, g4, c6, g6)
            config = stats_section(lab) + CONFIG + (f'certificate = "{certs}/server.pem"\n'
                               f'client_ca = "{certs}/site-ca.pem"\n'
                               f'haproxy_config = "{lab.work_dir}/haproxy-dot.cfg"\n')
            host = NetTrustHost(lab, config)
            # Unbound's ACL sees the address the PROXY header carries: the real client's
            conf = host.unbound_conf().replace(
                "    interface: ::1\n", "    interface: ::1\n    access-control: 10.98.0.0/16 allow\n"
                "    access-control: fd98::/16 allow\n", 1)
            assert f"proxy-protocol-port: {PROXY_PORT}" in conf
            host.start_agent()                 # statistics: dnstap carries the client too
            proc = lab.start_unbound(conf, env=host.env())
            # the product's own renderer writes HAProxy's configuration
            host.nettrust("haproxy-conf", "--write", f"{lab.work_dir}/haproxy-dot.cfg")
            lab.run("host", ["haproxy", "-c", "-q", "-f", f"{lab.work_dir}/haproxy-dot.cfg"])
            haproxy = lab.spawn("host", ["haproxy", "-db", "-f", f"{lab.work_dir}/haproxy-dot.cfg"],
                                log_name="haproxy")
            deadline = time.monotonic() + 10
            while lab.run("host", ["ss", "-Htln", "sport = :853"]).stdout.count("LISTEN") < 2:
                assert haproxy.alive and time.monotonic() < deadline, haproxy.log_text()
                time.sleep(0.05)
            yield DotGateway(lab, host, clients, certs, haproxy)
            assert "Traceback" not in proc.log_text(), proc.log_text()[-3000:]
        finally:
            if "haproxy" in locals():
                haproxy.stop()
            lab.stop_unbound()
            for ns in clients.values():
                ns.delete()


def test_a_client_with_a_certificate_resolves_and_is_granted_at_its_real_address(dot):
    assert ("10.98.1.2", "198.51.100.10") not in dot.pairs()
    assert dot.connect("a", "198.51.100.10") != "connected"          # nothing asked yet
    r = dot.kdig("a", "www.fw.test")
    assert r.returncode == 0 and r.stdout.split() == ["198.51.100.10"], r.stdout + r.stderr
    pairs = dot.pairs()
    assert ("10.98.1.2", "198.51.100.10") in pairs                   # the real client ...
    assert not [p for p in pairs if p[0].startswith("127.")]         # ... not HAProxy's loopback
    assert dot.connect("a", "198.51.100.10") == "connected"
    assert dot.connect("b", "198.51.100.10") != "connected"          # B never asked
    # over IPv6 to the gateway, asking AAAA: granted to A's IPv6 address
    r6 = dot.clients["a"].sh(
        "kdig", f"@{CLIENTS['a'][4]}", "-p", "853", "+tls",
        f"+tls-ca={dot.certs / 'site-ca.pem'}", f"+tls-hostname={SERVER_NAME}",
        f"+tls-certfile={dot.certs / 'alice.crt'}", f"+tls-keyfile={dot.certs / 'alice.key'}",
        "+short", "www.fw.test", "AAAA", check=False)
    assert r6.stdout.split() == ["2001:db8:100::10"], r6.stdout + r6.stderr
    assert ("fd98:1::2", "2001:db8:100::10") in dot.pairs(6)
    assert dot.connect("a", "2001:db8:100::10") == "connected"
    # Python's ssl + dnspython with the same certificate: a CNAME chain, granted to A too
    assert dot.python_dot("a", "c1.fw.test", "alice") == "answer: 198.51.100.10"


def test_without_a_certificate_or_with_another_cas_the_tls_handshake_fails(dot):
    before = dot.pairs()
    none = dot.python_dot("b", "www2.fw.test", None)
    other = dot.python_dot("b", "www2.fw.test", "mallory")
    assert none.startswith("tls: ") and "CERTIFICATE_REQUIRED" in none, none
    assert other.startswith("tls: ") and "UNKNOWN_CA" in other, other
    r = dot.kdig("b", "www2.fw.test", cert="mallory")
    assert r.returncode != 0 and "198.51.100" not in r.stdout, r.stdout + r.stderr
    # nothing was resolved or granted for B
    assert not [p for p in dot.pairs() - before if p[0] == "10.98.2.2"]
    # control: B's network path to the DoT port works; only the certificate is missing
    assert dot.connect("b", CLIENTS["b"][2], 853) == "connected"
    log = dot.haproxy.log_text()
    assert re.search(r"10\.98\.2\.2:\d+ .*SSL handshake failure", log), log[-2000:]
    assert re.search(r"10\.98\.2\.2:\d+ .*SSL client certificate not trusted", log), log[-2000:]
    # control: B holding a certificate of the site CA resolves (and is granted)
    assert dot.python_dot("b", "www.fw.test", "alice") == "answer: 198.51.100.10"
    assert ("10.98.2.2", "198.51.100.10") in dot.pairs()


def test_the_proxy_port_refuses_anything_but_loopback(dot):
    # from a client: nothing listens on the gateway's LAN addresses at the PROXY port
    assert dot.connect("b", CLIENTS["b"][2], PROXY_PORT) == "Connection refused"
    assert dot.connect("b", CLIENTS["b"][4], PROXY_PORT) == "Connection refused"
    # ... while the DoT port on the same address is open (control)
    assert dot.connect("b", CLIENTS["b"][2], 853) == "connected"
    listening = dot.lab.run("host", ["ss", "-Htlnu", f"sport = :{PROXY_PORT}"]).stdout
    addrs = {line.split()[4].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert addrs == {"127.0.0.1"}, listening
    # Why loopback only: whoever reaches the port is believed.  From the gateway itself, a
    # PROXY header claiming to be B gets B a grant it never asked for.
    h1 = h_address(1)[0]
    assert ("10.98.2.2", h1) not in dot.pairs()
    with dot.lab.socket("host", socket.AF_INET, socket.SOCK_STREAM) as s:
        assert proxy_v2_query(s, PROXY_PORT, "10.98.2.2", "h1.fw.test") == "NOERROR"
    assert ("10.98.2.2", h1) in dot.pairs()


def test_a_struck_client_is_its_real_address(dot):
    for _ in range(3):
        assert dot.python_dot("a", "x.blocked.example", "alice") == "rcode: NXDOMAIN"
    out = dot.lab.run("host", ["nft", "list", "set", "inet", TABLE, "strike4"]).stdout
    assert "10.98.1.2" in out and "127.0.0.1" not in out, out


def test_statistics_record_the_real_clients(dot):
    import sqlite3

    def asked() -> set[tuple[str, str]]:
        """(client, name) of every query the agent stored."""
        db = sqlite3.connect(dot.host.config.stats.database)
        try:
            return {(c, n.rstrip(".")) for c, n in db.execute(
                "SELECT c.address, d.name FROM queries q JOIN clients c ON c.id = q.client_id "
                "JOIN domains d ON d.id = q.domain_id")}
        except sqlite3.OperationalError:          # not created yet
            return set()
        finally:
            db.close()
    assert dot.python_dot("a", "h2.fw.test", "alice") == f"answer: {h_address(2)[0]}"
    seen = wait_for(lambda: ("10.98.1.2", "h2.fw.test") in asked() and asked(),
                    "the agent's query rows", timeout=10)
    assert ("10.98.1.2", "www.fw.test") in seen and ("fd98:1::2", "www.fw.test") in seen
    # HAProxy's loopback address asked nothing: 127.0.0.1 is only the lab's readiness probe
    assert {n for c, n in seen if c.startswith("127.")} <= {"localhost"}, seen

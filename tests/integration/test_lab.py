"""The lab itself, proven with a plain Unbound (validator iterator, no Python module).

Unbound runs as the ``unbound`` user holding only CAP_NET_BIND_SERVICE.  Clients (dig, curl,
getaddrinfo) run in the host namespace.  The last tests check that a lab leaves nothing behind:
after close(), SIGTERM, SIGINT, SIGHUP, and (with cleanup_stale) SIGKILL.

Run as root: ``/work/main/.venv/bin/python -m pytest tests/integration/test_lab.py``.
Missing prerequisites skip these tests, or fail them under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from testbed import Lab, LabError, cleanup_stale, missing_prerequisites
from testbed.errors import missing_tool_message
from testbed.zones import h_address, s_address

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("unbound", "dig", "curl", "nft")
CAP_NET_BIND_SERVICE = 1 << 10

PLAIN_UNBOUND = """\
server:
    interface: 127.0.0.1
    interface: ::1
    port: 53
    access-control: 127.0.0.0/8 allow
    access-control: ::1 allow
    module-config: "validator iterator"
    num-threads: 1
    verbosity: 1
"""


def require_prerequisites() -> None:
    problems = missing_prerequisites(TOOLS)
    if problems:
        message = "lab prerequisites missing:\n  - " + "\n  - ".join(problems)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@dataclass
class Dig:
    status: str
    flags: set[str]
    answer: list[tuple[str, str, str]] = field(default_factory=list)   # (name, type, data)

    def data(self, rtype: str) -> list[str]:
        return [d for _, t, d in self.answer if t == rtype]


def dig(lab: Lab, name: str, rtype: str = "A", *options: str, server: str = "127.0.0.1") -> Dig:
    out = lab.run("host", ["dig", f"@{server}", "+tries=1", "+time=5", "+noall", "+comments",
                           "+answer", *options, name, rtype]).stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]*)", out)
    assert status and flags, out
    answer = []
    for line in out.splitlines():
        if line and not line.startswith(";"):
            owner, _ttl, _cls, typ, data = line.split(None, 4)
            answer.append((owner, typ, data))
    return Dig(status.group(1), set(flags.group(1).split()), answer)


def root_nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


def lab_leftovers(token: str, work_dir: Path) -> list[str]:
    """Everything of lab ``token`` still present on this machine."""
    found = []
    for ns in (f"{token}-host", f"{token}-net"):
        if Path("/run/netns", ns).exists():
            found.append(f"namespace {ns}")
        if Path("/etc/netns", ns).exists():
            found.append(f"/etc/netns/{ns}")
    if work_dir.exists():
        found.append(f"work dir {work_dir}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if token in links:
        found.append(f"interface named {token}* in the root namespace")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(work_dir) in cmdline or f"{token}-host" in cmdline or f"{token}-net" in cmdline:
                found.append(f"process {proc.name}: {cmdline.strip()}")
    return found


@pytest.fixture(scope="module")
def lab():
    require_prerequisites()
    with Lab() as lab:
        lab.start_unbound(PLAIN_UNBOUND + lab.unbound_zone_conf(), caps=("net_bind_service",))
        lab.set_resolver(["127.0.0.1", "::1"], options=["timeout:2", "attempts:2"])
        yield lab


# ---------------------------------------------------------------------------------------- start


def test_lab_starts_within_seconds(lab):
    print(f"lab start timings: { {k: round(v, 3) for k, v in lab.timings.items()} }")
    assert lab.timings["total"] < 10


def test_names_and_work_dir(lab):
    assert re.fullmatch(r"nt[0-9a-f]{4}", lab.token)
    assert lab.host_ns == f"{lab.token}-host" and lab.net_ns == f"{lab.token}-net"
    assert len(lab.host_if) <= 15 and len(lab.net_if) <= 15
    assert Path("/run/netns", lab.host_ns).exists() and Path("/run/netns", lab.net_ns).exists()
    assert (os.stat(lab.trust_anchor_file).st_mode & 0o777) == 0o644
    assert set(lab.trust_anchor_file.read_text().split()) >= {"sec.test.", "bad.test.", "DS"}
    for parent in [lab.work_dir, *lab.work_dir.parents]:
        assert os.stat(parent).st_mode & 0o001, f"{parent} not traversable"


def test_unbound_holds_only_net_bind_service(lab):
    status = Path(f"/proc/{lab.unbound.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split()[0] == str(subprocess.run(["id", "-u", "unbound"], capture_output=True,
                                                          text=True).stdout.strip())
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[cap], 16) == CAP_NET_BIND_SERVICE, (cap, fields[cap])


# ---------------------------------------------------------------------------------------- DNS


def test_signed_zone_validates(lab):
    r = dig(lab, "www.sec.test")
    assert r.status == "NOERROR" and "ad" in r.flags
    assert r.data("A") == ["198.51.100.20"]


def test_bogus_zone_is_servfail(lab):
    assert dig(lab, "www.bad.test").status == "SERVFAIL"
    assert dig(lab, "www.bad.test", "AAAA").status == "SERVFAIL"


def test_bogus_zone_with_cd_gets_data(lab):
    r = dig(lab, "www.bad.test", "A", "+cd")
    assert r.status == "NOERROR" and "ad" not in r.flags
    assert r.data("A") == ["198.51.100.30"]


def test_insecure_delegation_has_no_ad(lab):
    r = dig(lab, "www.ins.sec.test")
    assert r.status == "NOERROR" and "ad" not in r.flags
    assert r.data("A") == ["198.51.100.40"]


@pytest.mark.parametrize("i", [1, 42, 256, 3000])
def test_bulk_names(lab, i):
    v4, v6 = h_address(i)
    assert dig(lab, f"h{i}.fw.test", "A").data("A") == [v4]
    assert dig(lab, f"h{i}.fw.test", "AAAA").data("AAAA") == [v6]


def test_short_ttl_bulk_names(lab):
    v4, _ = s_address(500)
    r = dig(lab, "s500.fw.test")
    assert r.data("A") == [v4]
    ttl = lab.run("host", ["dig", "@127.0.0.1", "+noall", "+answer", "s500.fw.test"]).stdout.split()[1]
    assert int(ttl) <= 3


def test_cname_chain(lab):
    r = dig(lab, "c1.fw.test")
    assert r.status == "NOERROR"
    assert r.data("CNAME") == ["c2.fw.test.", "www.fw.test."]
    assert r.data("A") == ["198.51.100.10"]


def test_cname_into_signed_zone(lab):
    r = dig(lab, "ext.fw.test")
    assert r.data("CNAME") == ["www.sec.test."] and r.data("A") == ["198.51.100.20"]


def test_special_answers(lab):
    assert sorted(dig(lab, "mixed.fw.test").data("A")) == ["0.0.0.0", "198.51.100.77"]
    assert dig(lab, "rebind.fw.test", "AAAA").data("AAAA") == ["fd00::1:2:3"]
    assert dig(lab, "sink.fw.test", "AAAA").data("AAAA") == ["::"]
    r = dig(lab, "10.100.51.198.in-addr.arpa", "PTR")
    assert r.data("PTR") == ["www.fw.test."]


def test_unknown_names_get_nxdomain_fast(lab):
    started = time.monotonic()
    for name in ("nope.fw.test", "nope.test", "example.com", "www.example"):
        assert dig(lab, name).status == "NXDOMAIN", name      # the lab root answers for the rest
    assert time.monotonic() - started < 5


def test_unbound_answers_over_ipv6(lab):
    r = dig(lab, "www.fw.test", "AAAA", server="::1")
    assert r.data("AAAA") == ["2001:db8:100::10"]


def test_nsd_answers_rd_queries_authoritatively(lab):
    # What forward mode relies on: NSD answers RD queries for its zones itself.
    for server in lab.upstream_addresses:
        r = dig(lab, "www.fw.test", "A", "+rec", server=server)
        assert r.status == "NOERROR" and "aa" in r.flags and r.data("A") == ["198.51.100.10"]


def test_nsd_answers_a_burst_without_rate_limiting(lab):
    # With NSD's default RRL (200 qps) about a fifth of the repeated www.fw.test queries in this
    # burst come back truncated or not at all (measured); the lab sets rrl-ratelimit: 0.
    names = [f"h{i}.fw.test" for i in range(1, 3001)] + ["www.fw.test"] * 1000
    expected = [h_address(i)[0] for i in range(1, 3001)] + ["198.51.100.10"] * 1000
    sock = lab.socket("host", socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((lab.nsd_v4, 53))
    answered = {}
    with sock:
        for start in range(0, len(names), 100):
            for qid in range(start, start + 100):
                query = dns.message.make_query(names[qid], "A")
                query.flags &= ~dns.flags.RD
                query.id = qid
                sock.send(query.to_wire())
            for _ in range(100):
                reply = dns.message.from_wire(sock.recv(4096))
                assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.TC
                answered[reply.id] = reply.answer[0][0].address
    assert [answered.get(qid) for qid in range(len(names))] == expected


# ---------------------------------------------------------------------------------------- clients


@pytest.mark.parametrize("url, body", [
    ("http://198.18.0.42/", "hello from 198.18.0.42"),
    ("http://[2001:db8:118::2a]/", "hello from 2001:db8:118::2a"),
    ("http://198.51.100.10/", "hello from 198.51.100.10"),
])
def test_curl_reaches_http_server(lab, url, body):
    out = lab.run("host", ["curl", "-sS", "--max-time", "5", url]).stdout
    assert out.strip() == body


@pytest.mark.parametrize("family, body", [("-4", "hello from 198.18.0.42"),
                                          ("-6", "hello from 2001:db8:118::2a")])
def test_curl_by_name_uses_namespace_resolver(lab, family, body):
    out = lab.run("host", ["curl", "-sS", family, "--max-time", "5", "http://h42.fw.test/"]).stdout
    assert out.strip() == body


def test_getaddrinfo_in_host_ns(lab):
    code = ("import socket; print(sorted({a[4][0] for a in "
            "socket.getaddrinfo('www.fw.test', 80, type=socket.SOCK_STREAM)}))")
    out = lab.run("host", ["/usr/bin/python3", "-c", code]).stdout
    assert out.strip() == "['198.51.100.10', '2001:db8:100::10']"
    assert lab.resolv_conf.read_text().startswith("nameserver 127.0.0.1\nnameserver ::1\n")


@pytest.mark.parametrize("address", ["198.18.1.1", "2001:db8:119::7"])
def test_echo_server_keeps_connection(lab, address):
    with lab.connect("host", address, lab.echo_port) as conn:
        for n in range(3):
            payload = f"ping {n} to {address}".encode()
            conn.sendall(payload)
            assert conn.recv(1024) == payload
            time.sleep(0.2)


def test_echo_server_from_a_subprocess(lab):
    code = ("import socket; s = socket.create_connection(('203.0.113.7', 7), timeout=5); "
            "s.sendall(b'abc'); print(s.recv(10).decode())")
    assert lab.run("host", ["/usr/bin/python3", "-c", code]).stdout.strip() == "abc"


def test_run_as_user_with_capabilities(lab):
    out = lab.run("host", ["grep", "-E", "^(Uid|CapEff|CapAmb)", "/proc/self/status"],
                  user="unbound", caps=("CAP_NET_ADMIN", "net_bind_service")).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["Uid"].split()[0] != "0"
    assert int(fields["CapEff"], 16) == int(fields["CapAmb"], 16) == (1 << 12) | (1 << 10)


def test_run_failure_is_lab_error(lab):
    with pytest.raises(LabError, match="exit 1"):
        lab.run("host", ["false"])
    assert lab.run("host", ["false"], check=False).returncode == 1
    with pytest.raises(LabError, match="timed out"):
        lab.run("host", ["sleep", "5"], timeout=0.2)
    with pytest.raises(LabError, match="'no-such-tool-xyz' not found"):
        lab.run("host", ["no-such-tool-xyz"])
    with pytest.raises(LabError, match="unknown namespace"):
        lab.run("elsewhere", ["true"])


def test_missing_tool_names_apt_package():
    assert "apt-get install ldnsutils" in missing_tool_message("ldns-signzone")
    assert "apt-get install bind9-dnsutils" in missing_tool_message("dig")


# ---------------------------------------------------------------------------------------- a second lab


def test_forward_mode_extra_records_and_unbound_errors():
    require_prerequisites()
    extra = {"fw.test": ["foo 60 IN A 198.51.100.99"], "sec.test.": ["extra IN A 198.51.100.21"]}
    with Lab(extra_records=extra) as lab:
        with pytest.raises(LabError, match="Unbound exited"):
            lab.start_unbound("server:\n    no-such-option: 1\n", caps=("net_bind_service",))
        lab.start_unbound(PLAIN_UNBOUND + lab.unbound_zone_conf("forward"), caps=("net_bind_service",))
        with pytest.raises(LabError, match="already running"):
            lab.start_unbound(PLAIN_UNBOUND)
        assert dig(lab, "foo.fw.test").data("A") == ["198.51.100.99"]
        r = dig(lab, "extra.sec.test")
        assert "ad" in r.flags and r.data("A") == ["198.51.100.21"]     # extra records are signed
        assert "ad" in dig(lab, "www.sec.test").flags
        assert dig(lab, "www.bad.test").status == "SERVFAIL"
        r = dig(lab, "www.ins.sec.test")
        assert r.status == "NOERROR" and "ad" not in r.flags
        assert dig(lab, "c1.fw.test").data("A") == ["198.51.100.10"]
        assert dig(lab, "example.com").status == "NXDOMAIN"
        assert lab.stop_unbound() == 0


def test_extra_records_for_unknown_zone_is_rejected():
    with pytest.raises(LabError, match="unknown zone"):
        Lab(extra_records={"example.com": ["www IN A 192.0.2.1"]})


# ---------------------------------------------------------------------------------------- cleanup


def test_close_leaves_nothing_behind():
    require_prerequisites()
    tables_before = root_nft_tables()
    lab = Lab().start()
    token, work_dir = lab.token, lab.work_dir
    try:
        lab.start_unbound(PLAIN_UNBOUND + lab.unbound_zone_conf(), caps=("net_bind_service",))
        lab.set_resolver(["127.0.0.1"])
        assert Path("/etc/netns", lab.host_ns, "resolv.conf").exists()
        tracked = [p.pid for p in lab.processes]
        # A process the lab did not start: close() must find it through the namespace.
        stray = subprocess.Popen(["ip", "netns", "exec", lab.net_ns, "sleep", "300"],
                                 start_new_session=True)
        time.sleep(0.1)
        assert lab_leftovers(token, work_dir)
    finally:
        lab.close()
    assert stray.wait(timeout=5) == -signal.SIGKILL
    for pid in tracked:
        assert not Path(f"/proc/{pid}").exists()
    assert lab_leftovers(token, work_dir) == []
    assert root_nft_tables() == tables_before
    lab.close()                                   # idempotent
    with pytest.raises(LabError):
        lab.run("host", ["true"])


CHILD = """
import signal, sys, time
# Like an interactive Python: a shell that started us in the background may have left SIGINT
# ignored, and nohup (or a CI runner started under it) leaves SIGHUP ignored for every descendant.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
from testbed import Lab
if sys.argv[1] == "with":
    with Lab() as lab:
        print(lab.token, lab.work_dir, flush=True)
        time.sleep(60)
else:
    lab = Lab().start()
    print(lab.token, lab.work_dir, flush=True)
    time.sleep(60)
"""


@contextlib.contextmanager
def child_lab(style: str):
    """A lab owned by another Python process; whatever happens, nothing of it survives the test."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, style], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    try:
        line = child.stdout.readline().split()
        assert line, f"child lab did not start (exit {child.wait()})"
        token, work_dir = line[0], Path(line[1])
        assert Path("/run/netns", f"{token}-net").exists()
        yield child, token, work_dir
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        cleanup_stale()


@pytest.mark.parametrize("style, sig, code", [
    ("with", signal.SIGTERM, 128 + signal.SIGTERM),
    ("start", signal.SIGTERM, 128 + signal.SIGTERM),
    ("with", signal.SIGINT, -signal.SIGINT),   # Python re-raises an uncaught KeyboardInterrupt as SIGINT
    ("start", signal.SIGHUP, 128 + signal.SIGHUP),
])
def test_signals_clean_up(style, sig, code):
    require_prerequisites()
    with child_lab(style) as (child, token, work_dir):
        child.send_signal(sig)
        assert child.wait(timeout=15) == code
        assert lab_leftovers(token, work_dir) == []


def test_cleanup_stale_after_sigkill():
    require_prerequisites()
    with child_lab("start") as (child, token, work_dir):
        child.kill()
        child.wait()
        left = lab_leftovers(token, work_dir)
        assert any("namespace" in item for item in left) and any("process" in item for item in left)
        assert token in cleanup_stale()
        deadline = time.monotonic() + 5
        while lab_leftovers(token, work_dir) and time.monotonic() < deadline:
            time.sleep(0.05)                       # killed processes may take a moment to be reaped
        assert lab_leftovers(token, work_dir) == []

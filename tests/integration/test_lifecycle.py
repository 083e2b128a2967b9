"""Grant lifecycle end to end: real Unbound + module, real conntrack and NFLOG in the lab's host
namespace, real TCP connections to the lab's echo/HTTP servers.

What the resolver process reports is read the way the agent reads it: the test binds the
Reporter's socket ([stats] report_socket) and collects the records.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import socket
import subprocess
import time
from pathlib import Path

import pytest

from lab_util import direct, resolving_lab
from nettrust_core.report import read_message
from testbed.product import DIST_PACKAGES, SYSTEM_PYTHON, NetTrustHost

pytestmark = pytest.mark.integration

EXTRA = {"fw.test": ["live 2 IN A 198.51.100.91", "live 2 IN AAAA 2001:db8:100::91"]}
ECHO = 7


def config(lab, extra: str = "") -> str:
    work = Path(lab.work_dir)
    return f"""
[grants]
min_ttl = "1s"
grace = "1s"
[lifecycle]
check_interval = "1s"
report_interval = "1s"
{extra}
[stats]
enabled = true
report_socket = "{work / 'report.sock'}"
dnstap_socket = "{work / 'dnstap.sock'}"
[log]
level = "debug"
"""


class ReportListener:
    """The agent's end of the Reporter socket (SOCK_SEQPACKET, one connection per resolver
    process, reconnected after restarts), for assertions on what Unbound reported."""

    def __init__(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)                          # Unbound runs as "unbound"
        self.sock.listen(16)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.records: list[dict] = []

    def _poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.fileobj is self.sock:
                conn, _ = self.sock.accept()
                self.selector.register(conn, selectors.EVENT_READ)
                continue
            data = key.fileobj.recv(65536)
            if not data:                               # that resolver process stopped
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                continue
            # The answer path's decision records are binary and batched (issue 17), every other
            # record JSON: read them as the agent does.
            self.records += read_message(data)

    def wait_for(self, match, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for r in self.records[seen:]:
                if match(r):
                    return r
            seen = len(self.records)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._poll(left)
        raise AssertionError(f"no matching record within {timeout}s; got kinds "
                             f"{sorted({(x['t'], x.get('kind')) for x in self.records}, key=str)}")

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


@pytest.fixture(scope="module")
def reports(lab):
    listener = ReportListener(Path(lab.work_dir) / "report.sock")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def nt(lab, reports):
    host = NetTrustHost(lab, config(lab))
    host.start()
    yield host
    lab.stop_unbound()


@contextlib.contextmanager
def instead_of(nt, lab, config_text, name, host_class=NetTrustHost):
    nt.stop()
    host = host_class(lab, config_text, name=name)
    try:
        host.start()
        yield host
    finally:
        lab.stop_unbound()
        host.nettrust("flush", check=False)
        nt.start()


def dig(lab, name, rtype="A"):
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=3", name, rtype]).stdout
    return re.search(r"status: (\w+)", out).group(1), out




def status(nt, *extra_env) -> str:
    env = {"PYTHONPATH": f"{nt.code_dir}:{DIST_PACKAGES}", **dict(extra_env)}
    return nt.lab.run("host", [SYSTEM_PYTHON, "-m", "nettrust_core.cli", "-c", str(nt.config_path),
                               "status"], env=env, check=False).stdout


# -- liveness ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.91"), ("AAAA", "2001:db8:100::91")])
def test_live_connection_renews_grant_past_ttl_then_lapses_after_close(nt, lab, reports, rtype, address):
    assert dig(lab, "live.fw.test", rtype)[0] == "NOERROR"        # TTL 2 → grant 2 s + 1 s grace
    held = lab.connect("host", address, ECHO, timeout=0.9)
    try:
        held.sendall(b"first\n")
        assert held.recv(100) == b"first\n"
        time.sleep(6)                                               # twice the grant
        grants = nt.grants()
        assert address in grants, "grant lapsed although a connection is alive"
        assert grants[address]["name"] == "live.fw.test"            # renewal kept the name
        assert direct(lab, address, ECHO) is True                        # a second connection
        held.sendall(b"last\n")
        assert held.recv(100) == b"last\n"
    finally:
        held.close()
    # Closed: TIME_WAIT is not alive; the last renewal (2 × 1 s + 1 s) runs out, no more.
    deadline = time.monotonic() + 8
    while address in nt.grants() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert address not in nt.grants()
    assert direct(lab, address, ECHO) == "ConnectionRefusedError"
    counters = reports.wait_for(lambda r: r["t"] == "counters" and r["values"].get("renewals", 0) > 0
                                and r["values"].get("expiries", 0) > 0)
    assert counters["levels"]["conntrack_available"] == 1


# -- unauthorized attempts -----------------------------------------------------------------------
@pytest.mark.parametrize("address,port", [("198.18.40.40", 8080), ("2001:db8:118::4040", 8443)])
def test_direct_connect_to_unanswered_address_is_reported(nt, lab, reports, address, port):
    assert direct(lab, address, port) == "ConnectionRefusedError"
    event = reports.wait_for(lambda r: r["t"] == "event" and r["kind"] == "unauthorized"
                             and r["destination"] == address)
    assert (event["port"], event["protocol"], event["hook"]) == (port, "tcp", "output")
    assert event["uid"] == 0 and event["user"] == "root"
    assert event["ts"] > time.time() - 60


# -- conntrack unavailable -----------------------------------------------------------------------
class FakeUnavailableConntrack:
    """A fake, named as such: conntrack as on a kernel without nf_conntrack.  nf_conntrack is
    built into this kernel and cannot be unloaded, so this stands in for it where the resolver
    takes its conntrack (``Service(conntrack=...)``) and where ``nettrust status`` asks
    (``lifecycle_status(conntrack=...)``).  Everything else is real: nftables in a namespace,
    the Service's threads, a TCP server behind a veth pair."""

    REASON = "conntrack is not available (fake: a kernel without nf_conntrack)"

    def __init__(self) -> None:
        self.queries = 0

    def live_destinations(self):
        from nettrust_core.netlink.conntrack import ConntrackError
        self.queries += 1
        raise ConntrackError(self.REASON)

    def probe(self) -> str:
        self.queries += 1
        return self.REASON

    def close(self) -> None:
        pass


GRANTED, UNANSWERED = "198.51.100.10", "198.51.100.11"


def _service_without_conntrack(conntrack) -> dict:
    """In the client namespace: the resolver's Service (no Unbound) with the fake conntrack, one
    answer granted, ``nettrust status``'s lifecycle lines, and the threads after stop."""
    import logging
    from ipaddress import ip_address

    from nettrust_core.answer import A, Answer, Record, Security
    from nettrust_core.config import parse_config
    from nettrust_core.lifecycle.status import format_lifecycle, lifecycle_status
    from nettrust_core.service import Service

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("nettrust").addHandler(handler)
    config = parse_config('[firewall]\ntable = "ntnoct"\nresolver_user = ""\n'
                          '[lifecycle]\ncheck_interval = "1s"\nunauthorized = false\n')
    service = Service(config, conntrack=conntrack)
    service.start()
    try:
        decision = service.authorize(Answer("www.fw.test", A, 0, Security.INSECURE,
                                            (Record("www.fw.test", A, 300, GRANTED),)))
        time.sleep(1.5)                                 # one liveness tick (nothing due: no query)
        service.lifecycle.liveness.check()
        text = "\n".join(format_lifecycle(
            lifecycle_status(config, service.backend, conntrack=conntrack), config.firewall.table))
        snapshot = service.lifecycle.snapshot()
        kernel = (service.backend.lookup(ip_address(GRANTED)),
                  service.backend.lookup(ip_address(UNANSWERED)))
        threads = sorted(w.name for w in service.workers() if w.alive)
    finally:
        service.stop()                                  # on_exit = "keep": the grant stays
    return {"error": decision.error, "grants": [str(g.address) for g in decision.grants],
            "status": text, "log": lines, "kernel": kernel, "threads": threads,
            "after_stop": [w.name for w in service.workers() if w.alive],
            "conntrack_available": snapshot.get("conntrack_available"),
            "queries": conntrack.queries}


@pytest.fixture
def client_server():
    """The firewall's namespace and a TCP server's, linked by a veth pair; both server
    addresses listen on port 8080."""
    from netns_util import NetNS, veth_pair
    with NetNS("ntnoct") as client, NetNS("ntnoct-srv") as server:
        veth_pair(client, server, ["198.51.100.1/24"], [f"{GRANTED}/24", f"{UNANSWERED}/24"])
        listener = server.socket()
        listener.bind(("0.0.0.0", 8080))
        listener.listen(16)
        try:
            yield client, server
        finally:
            listener.close()


def connect(ns, address: str) -> str | bool:
    s = ns.socket()
    s.settimeout(3)
    try:
        s.connect((address, 8080))
        return True
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()


def test_conntrack_unavailable_is_reported_and_dns_and_grants_keep_working(client_server):
    client, _server = client_server
    assert connect(client, GRANTED) is True and connect(client, UNANSWERED) is True  # no firewall yet
    r = client.run(_service_without_conntrack, FakeUnavailableConntrack())
    assert "conntrack: UNAVAILABLE" in r["status"], r["status"]
    assert "DNS and grants keep working" in r["status"]
    assert any("conntrack unavailable" in line for line in r["log"]), r["log"]
    assert r["queries"] >= 2 and r["conntrack_available"] == 0, r
    assert r["error"] is None and r["grants"] == [GRANTED], r           # the answer was granted
    assert r["kernel"][0] and r["kernel"][0] > 250 and r["kernel"][1] is None, r
    assert "nettrust-lifecycle" in r["threads"] and r["after_stop"] == [], r
    assert connect(client, GRANTED) is True                 # the grant works without conntrack
    assert connect(client, UNANSWERED) == "ConnectionRefusedError"      # the control: refused


def test_status_says_conntrack_is_available_on_this_kernel(nt, lab):
    # the control for the fake above: the real kernel's conntrack, through a real Unbound
    assert "conntrack: available" in status(nt)
    assert dig(lab, "www.fw.test")[0] == "NOERROR"


# -- chain priority ------------------------------------------------------------------------------
def test_priority_report_lists_a_competing_chain(nt, lab):
    lab.run("host", ["nft", "-f", "-"], input="table ip dockerish {\n chain out {\n"
            "  type nat hook output priority -100; policy accept;\n }\n}\n")
    try:
        out = status(nt)
        assert "ip dockerish out: nat hook output priority -100 policy accept" in out
        assert re.search(r"warning: ip dockerish out.*runs before NetTrust", out)
        assert "inet nettrust output: filter hook output priority 0 policy drop  (NetTrust)" in out
        nt.stop()
        nt.start()
        assert re.search(r"chain priority: ip dockerish out.*runs before NetTrust", nt.log())
    finally:
        lab.run("host", ["nft", "delete", "table", "ip", "dockerish"])


# -- exit modes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,table,grants", [("keep", True, True), ("drop-grants", True, False),
                                               ("remove", False, False)])
def test_exit_modes_through_a_real_unbound_stop(nt, lab, mode, table, grants):
    text = config(lab).replace("[lifecycle]", f'[firewall]\non_exit = "{mode}"\n[lifecycle]')
    with instead_of(nt, lab, text, f"exit-{mode}") as host:
        assert dig(lab, "www.fw.test")[0] == "NOERROR"
        assert "198.51.100.10" in host.grants()
        assert host.stop() == 0                        # SIGTERM: Unbound runs deinit
        present = lab.run("host", ["nft", "list", "table", "inet", "nettrust"], check=False)
        assert (present.returncode == 0) is table
        if table:
            assert ("198.51.100.10" in host.grants()) is grants
            assert direct(lab, "198.18.50.50", 80) == "ConnectionRefusedError"   # still closed
        else:
            assert direct(lab, "198.18.50.50", 80) is True                      # open: removed


# -- caps under a flood --------------------------------------------------------------------------
SYNTH = str(Path(__file__).with_name("synth_dns.py"))
SYNTH_ADDRESS = "203.0.113.54"
FLOOD_SECONDS = 30
SET_CAP = 2000


class FloodHost(NetTrustHost):
    """NetTrust with the flood zone delegated (unsigned) to the test's synthesizing server."""

    def zone_conf(self) -> str:
        return (super().zone_conf() + 'server:\n    domain-insecure: "flood.test"\n'
                f'stub-zone:\n    name: "flood.test"\n    stub-addr: {SYNTH_ADDRESS}\n')


def rss_kib(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def test_flood_of_unique_names_holds_the_caps_and_dns_keeps_answering(nt, lab, reports, tmp_path):
    server = lab.spawn("net", [SYSTEM_PYTHON, SYNTH, SYNTH_ADDRESS, "flood.test"], log_name="synth")
    assert server.wait_for_log("READY", timeout=10)
    names = Path(lab.work_dir) / "flood-names.txt"
    with open(names, "w") as f:
        f.writelines(f"n{i}.flood.test A\n" for i in range(1_000_000))
    os.chmod(names, 0o644)
    text = config(lab).replace("[lifecycle]", f"max_per_set = {SET_CAP}\nmax_per_name = 4\n[lifecycle]")
    text = text.replace('level = "debug"', 'level = "info"')       # a log line per answer: no
    with instead_of(nt, lab, text, "flood", FloodHost) as host:
        pid = host.process.pid
        rss_before = rss_kib(pid)
        perf = subprocess.Popen(lab.command("host", ["dnsperf", "-s", "127.0.0.1", "-d", str(names),
                                                     "-l", str(FLOOD_SECONDS), "-c", "20", "-q", "500",
                                                     "-t", "2"]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(FLOOD_SECONDS / 2)
            probe_status, _ = dig(lab, "www.fw.test")           # answered mid-flood
            mid_probe = dig(lab, "probe-during-flood.flood.test")[0]
            out, _ = perf.communicate(timeout=FLOOD_SECONDS + 60)
        finally:
            if perf.poll() is None:
                perf.kill()
                perf.wait()
        completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
        qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
        rss_after = rss_kib(pid)
        st = json.loads(host.nettrust("status", "--json").stdout)
        sizes = {k: v for k, v in st["sets"].items() if k.startswith("allow")}
        record = reports.wait_for(lambda r: r["t"] == "counters" and r["pid"] == pid
                                  and r["values"].get("evicted", 0) > 0, timeout=15)
        counters = {**record["values"], **record["levels"]}
        print(f"\nflood: {completed} queries in {FLOOD_SECONDS}s ({qps:.0f}/s = "
              f"{qps * 60:.0f} names/min), sets {sizes}, evicted {counters.get('evicted')}, "
              f"set_full {counters.get('set_full', 0)}, Unbound RSS {rss_before} -> {rss_after} KiB")
        assert probe_status == "NOERROR" and mid_probe == "NOERROR"
        assert completed > 5 * SET_CAP
        assert all(v is not None and v <= SET_CAP for v in sizes.values()), sizes
        assert counters["grants"] <= SET_CAP
        assert rss_after - rss_before < 150_000, (rss_before, rss_after)
        assert dig(lab, "after-flood.flood.test")[0] == "NOERROR"
    server.stop()


# -- what the ruleset programs for the lifecycle -------------------------------------------------
def test_ruleset_marks_granted_connections_logs_refusals_and_caps_the_sets(nt, lab):
    chain = lab.run("host", ["nft", "list", "chain", "inet", "nettrust", "output"]).stdout
    assert "ip daddr @allow4 ct mark set ct mark | 0x40000000 accept" in chain
    assert "ip6 daddr @allow6 ct mark set ct mark | 0x40000000 accept" in chain
    assert "ip daddr @static4 accept" in chain                     # static: not marked
    log_rule = 'limit rate 20/second burst 20 packets log prefix "nettrust" group 20052'
    assert log_rule in chain
    assert chain.index(log_rule) < chain.index("reject with tcp reset")
    for name in ("allow4", "allow6"):
        assert "size 262144" in lab.run("host", ["nft", "list", "set", "inet", "nettrust", name]).stdout

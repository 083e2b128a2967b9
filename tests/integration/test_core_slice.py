"""The core slice end to end: real Unbound with our module, NSD serving zones the lab signed,
nftables in the lab's namespaces, real clients (dig, curl, getaddrinfo + sockets).

Unbound runs as the ``unbound`` user holding only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE in
every test here (done-means 11).
"""

from __future__ import annotations

import contextlib
import json
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab_util import direct, resolving_lab

from testbed.errors import LabError
from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

CLIENT = str(Path(__file__).with_name("client.py"))
EXTRA = {"fw.test": [
    "long 300 IN A 198.51.100.88", "long 300 IN AAAA 2001:db8:100::88",
    "shortsame 2 IN A 198.51.100.88", "shortsame 2 IN AAAA 2001:db8:100::88",
    "longlived 3 IN A 198.51.100.90", "longlived 3 IN AAAA 2001:db8:100::90",
]}
CONFIG = """
[policy]
deny = ["**.blocked.fw.test"]
require_dnssec = ["sec.test"]
[grants]
min_ttl = "1s"
max_ttl = "1h"
grace = "2s"
[lifecycle]
# The core slice's expiry semantics (a grant ends at its TTL even while a connection is open);
# conntrack renewals are tested in test_lifecycle.py.
liveness = false
[log]
level = "debug"
"""


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


#: The firewall backends the behaviour tests marked ``@every_backend`` run against (issue 16):
#: resolve-then-connect, unanswered refused, expiry, never-shorten, kill -9 and restart adoption,
#: IPv4 and IPv6.  The other tests run on nftables.
BACKENDS = ("nftables", "iptables-legacy", "iptables-nft")
every_backend = pytest.mark.parametrize("nt", BACKENDS, indirect=True)
#: iptables resolves ipset names over a raw socket (CAP_NET_RAW); iptables-legacy also reads
#: /proc/net/ip_tables_names (root-only) and takes /run/xtables.lock (CAP_DAC_OVERRIDE).
CAPS = {"iptables-legacy": ("net_admin", "net_bind_service", "net_raw", "dac_override"),
        "iptables-nft": ("net_admin", "net_bind_service", "net_raw")}


@pytest.fixture(scope="module")
def nt(lab, request):
    backend = getattr(request, "param", "nftables")
    config = CONFIG if backend == "nftables" else CONFIG + f'[firewall]\nbackends = ["{backend}"]\n'
    host = NetTrustHost(lab, config, name=f"core-{backend}")
    host.start(caps=CAPS.get(backend))
    yield host
    lab.stop_unbound()
    host.nettrust("remove")             # the next backend starts from a bare namespace


@contextlib.contextmanager
def instead_of(nt, lab, config_text, name):
    """Run another configuration in place of the module's NetTrust, then restore it."""
    nt.stop()
    host = NetTrustHost(lab, config_text, name=name)
    try:
        host.start()
        yield host
    finally:
        lab.stop_unbound()
        host.nettrust("flush")
        nt.start()


def dig(lab, name, rtype="A", *flags):
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=3", *flags, name, rtype]).stdout
    status = re.search(r"status: (\w+)", out).group(1)
    flags_line = re.search(r";; flags: ([a-z ]+);", out).group(1).split()
    answers = [ln.split() for ln in out.split("ANSWER SECTION:\n", 1)[-1].split("\n\n")[0].splitlines()
               if "ANSWER SECTION" in out and ln and not ln.startswith(";")]
    return status, flags_line, answers


def connect(lab, family, *names):
    out = lab.run("host", ["/usr/bin/python3", CLIENT, "connect", family, *names], timeout=120).stdout
    return json.loads(out)




# 1 ---------------------------------------------------------------------------------------------
@every_backend
@pytest.mark.parametrize("family,first", [("4", 1), ("6", 1001)])
def test_200_resolve_then_connect_trials_all_succeed_on_first_syn(nt, lab, family, first):
    names = [f"h{i}.fw.test" for i in range(first, first + 200)]
    results = connect(lab, family, *names)
    failed = [r for r in results if not r["ok"]]
    assert len(results) == 200 and not failed, failed[:5]
    assert all(r["seconds"] < 0.9 for r in results)
    grants = nt.grants()
    assert all(r["address"] in grants for r in results)
    assert grants[results[0]["address"]]["name"] == names[0]


def test_curl_through_the_resolver(nt, lab):
    for flag, name in (("-4", "www.fw.test"), ("-6", "www.fw.test")):
        out = lab.run("host", ["curl", "-sS", flag, "--max-time", "3", f"http://{name}/"]).stdout
        assert out.startswith("hello from")


def test_forward_mode_upstreams_are_the_resolvers_alone(nt, lab):
    """Forwarding to the lab's NSD: Unbound (the resolver's uid) reaches the upstreams on port
    53 and answers still grant; nobody else reaches them (issue 10, item 6: this test used to
    assert the upstream open to every process, as a static host)."""
    config = ('[upstream]\nmode = "forward"\nservers = ["203.0.113.53", "2001:db8:100::53"]\n'
              '[grants]\nmin_ttl = "1s"\n')
    with instead_of(nt, lab, config, "forward"):
        status, flags, _ = dig(lab, "www.sec.test")
        assert status == "NOERROR" and "ad" in flags
        assert direct(lab, "198.51.100.20") is True
        assert dig(lab, "www.bad.test")[0] == "SERVFAIL"
        assert direct(lab, "203.0.113.53", 53) is not True      # the upstream: the resolver's
        assert direct(lab, "203.0.113.53", 80) is not True      # on no port for anyone else
        assert direct(lab, "198.18.30.30") == "ConnectionRefusedError"


# 2 ---------------------------------------------------------------------------------------------
@every_backend
@pytest.mark.parametrize("address", ["198.18.10.10", "2001:db8:118::a0a"])
def test_address_no_answer_gave_is_refused(nt, lab, address):
    assert direct(lab, address) == "ConnectionRefusedError"


# 3 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.66"), ("AAAA", "2001:db8:100::66")])
def test_denied_name_is_answered_nxdomain_and_never_reachable(nt, lab, rtype, address):
    status, _, answers = dig(lab, "www.blocked.fw.test", rtype)
    assert status == "NXDOMAIN" and answers == []
    assert direct(lab, address) == "ConnectionRefusedError"
    assert address not in nt.grants()


@pytest.mark.parametrize("kind,rtype,expect_status,expect_data", [
    ("sinkhole", "A", "NOERROR", "0.0.0.0"), ("sinkhole", "AAAA", "NOERROR", "::"),
    ("refused", "A", "REFUSED", None), ("nxdomain", "AAAA", "NXDOMAIN", None)])
def test_allowlist_mode_blocks_unlisted_names_as_configured(nt, lab, kind, rtype, expect_status, expect_data):
    config = (f'[general]\nmode = "allowlist"\n[policy]\nallow = ["www.fw.test"]\n'
              f'blocked_answer = "{kind}"\n[grants]\nmin_ttl = "1s"\n')
    with instead_of(nt, lab, config, f"allow-{kind}"):
        status, _, answers = dig(lab, "h2001.fw.test", rtype)
        assert status == expect_status
        assert [a[-1] for a in answers] == ([expect_data] if expect_data else [])
        assert direct(lab, "198.18.7.209" if rtype == "A" else "2001:db8:118::7d1") == "ConnectionRefusedError"
        status, _, answers = dig(lab, "www.fw.test", rtype)
        assert status == "NOERROR" and answers
        assert direct(lab, "198.51.100.10" if rtype == "A" else "2001:db8:100::10") is True


# 4 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.66"), ("AAAA", "2001:db8:100::66")])
def test_cname_chain_ending_in_denied_name_is_not_granted(nt, lab, rtype, address):
    status, _, answers = dig(lab, "alias.fw.test", rtype)
    assert status == "NXDOMAIN"
    assert direct(lab, address) == "ConnectionRefusedError"
    assert address not in nt.grants()


def test_allowed_cname_chain_grants_final_address_named_by_both_ends(nt, lab):
    results = connect(lab, "4", "c1.fw.test")
    assert results[0]["ok"], results
    assert nt.grants()["198.51.100.10"]["name"] in ("c1.fw.test>www.fw.test", "www.fw.test")


# 5 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.30"), ("AAAA", "2001:db8:100::30")])
def test_bogus_dnssec_servfail_and_cd_data_stays_unreachable(nt, lab, rtype, address):
    status, _, _ = dig(lab, "www.bad.test", rtype)
    assert status == "SERVFAIL"
    status, _, answers = dig(lab, "www.bad.test", rtype, "+cd")
    assert status == "NOERROR" and [a[-1] for a in answers] == [address]
    assert direct(lab, address) == "ConnectionRefusedError"
    assert address not in nt.grants()


def test_secure_answer_grants(nt, lab):
    status, flags, _ = dig(lab, "www.sec.test", "AAAA")
    assert status == "NOERROR" and "ad" in flags
    assert direct(lab, "2001:db8:100::20") is True


# 6 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.40"), ("AAAA", "2001:db8:100::40")])
def test_require_dnssec_zone_answering_insecurely_is_not_granted(nt, lab, rtype, address):
    status, flags, answers = dig(lab, "www.ins.sec.test", rtype)
    assert status == "NOERROR" and "ad" not in flags and answers
    assert direct(lab, address) == "ConnectionRefusedError"


# 7 ---------------------------------------------------------------------------------------------
@every_backend
@pytest.mark.parametrize("family,name,address", [("4", "longlived.fw.test", "198.51.100.90"),
                                                 ("6", "longlived.fw.test", "2001:db8:100::90")])
def test_expiry_closes_new_connects_but_open_connection_lives(nt, lab, family, name, address):
    results = connect(lab, family, name)             # TTL 3 → grant 3 s + 2 s grace
    assert results[0]["ok"], results
    holder = subprocess.Popen(lab.command("host", ["/usr/bin/python3", CLIENT, "hold", address, "7", "7"]),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(holder.stdout.readline()) == {"phase": "open"}
        left = nt.grants()[address]["expires_in"]
        assert 0 < left <= 5.1
        time.sleep(left + 0.5)
        assert address not in nt.grants()
        assert direct(lab, address, 7) == "ConnectionRefusedError"
        held = json.loads(holder.stdout.readline())
        assert held == {"first": "first\n", "last": "last\n"}
    finally:
        holder.kill()
        holder.wait()


# 8 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,address", [("4", "198.51.100.12"), ("6", "2001:db8:100::12")])
def test_cache_hit_late_in_ttl_is_reachable(nt, lab, family, address):
    rtype = "A" if family == "4" else "AAAA"
    dig(lab, "short.fw.test", rtype)                  # TTL 2: fetched, granted
    time.sleep(1.6)
    status, _, answers = dig(lab, "short.fw.test", rtype)
    assert status == "NOERROR" and int(answers[0][1]) <= 1      # served from cache, TTL nearly out
    assert direct(lab, address) is True


def test_cache_hit_cannot_outlive_grant_when_max_ttl_is_short(nt, lab):
    """max_ttl below the record TTL: Unbound must not cache longer than the grant lasts."""
    with instead_of(nt, lab, '[grants]\nmin_ttl = "1s"\nmax_ttl = "2s"\ngrace = "1s"\n', "short-max"):
        for delay in (0, 1.5, 1.5, 1.5):             # past the 3 s grant twice over
            time.sleep(delay)
            status, _, answers = dig(lab, "h3000.fw.test")
            assert status == "NOERROR" and int(answers[0][1]) <= 2
            assert direct(lab, "198.18.11.184") is True


# 9 ---------------------------------------------------------------------------------------------
@every_backend
def test_kill_9_fails_closed_and_restart_keeps_grants_unshortened(nt, lab):
    for rtype in ("A", "AAAA"):
        dig(lab, "long.fw.test", rtype)
    before = nt.grants()
    assert before["198.51.100.88"]["expires_in"] > 290
    nt.kill(signal.SIGKILL)
    try:
        assert direct(lab, "198.18.20.20") == "ConnectionRefusedError"           # never answered
        assert direct(lab, "2001:db8:118::1414") == "ConnectionRefusedError"
        assert direct(lab, "198.51.100.88") is True                              # still granted
        assert direct(lab, "2001:db8:100::88") is True
    finally:
        nt.start()
    for rtype in ("A", "AAAA"):
        status, _, answers = dig(lab, "shortsame.fw.test", rtype)       # same address, TTL 2
        assert status == "NOERROR"
    after = nt.grants()
    for address in ("198.51.100.88", "2001:db8:100::88"):
        assert after[address]["expires_in"] > 280, after[address]
        assert direct(lab, address) is True


# 10 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,rtype,address", [("rebind.fw.test", "A", "10.1.2.3"),
                                                ("rebind.fw.test", "AAAA", "fd00::1:2:3"),
                                                ("lo.fw.test", "A", "127.0.0.5")])
def test_rebinding_guard_refuses_private_answers_of_public_names(nt, lab, name, rtype, address):
    status, _, answers = dig(lab, name, rtype)
    assert status == "NOERROR" and [a[-1] for a in answers] == [address]
    assert address not in nt.grants()
    assert "rebinding guard" in nt.log()


@pytest.mark.parametrize("name,rtype", [("sink.fw.test", "A"), ("sink.fw.test", "AAAA"), ("mixed.fw.test", "A")])
def test_upstream_sinkhole_is_blocked(nt, lab, name, rtype):
    dig(lab, name, rtype)
    grants = nt.grants()
    assert "0.0.0.0" not in grants and "::" not in grants and "198.51.100.77" not in grants
    assert direct(lab, "198.51.100.77") == "ConnectionRefusedError"
    assert "sinkhole answer from upstream" in nt.log()


# 11 --------------------------------------------------------------------------------------------
def test_unbound_runs_as_unbound_with_only_net_admin_and_bind(nt, lab):
    status = Path(f"/proc/{nt.process.pid}/status")
    text = status.read_text()                          # ip netns exec and setpriv exec'd into unbound
    assert Path(f"/proc/{nt.process.pid}/comm").read_text().strip() == "unbound"
    uids = re.search(r"^Uid:\s+(.*)$", text, re.M).group(1).split()
    assert {int(u) for u in uids} == {pwd.getpwnam("unbound").pw_uid}
    cap_eff = int(re.search(r"^CapEff:\s+([0-9a-f]+)", text, re.M).group(1), 16)
    assert cap_eff == (1 << 12) | (1 << 10)          # CAP_NET_ADMIN | CAP_NET_BIND_SERVICE
    assert "nettrust: ready" in nt.log()


# 12 --------------------------------------------------------------------------------------------
def test_malformed_config_names_file_key_and_line(nt, lab, tmp_path):
    bad = Path(lab.work_dir) / "nettrust" / "bad.toml"
    bad.write_text('[grants]\nmin_ttl = "30s"\nmax_ttl = "soon"\n')
    bad.chmod(0o644)
    res = nt.nettrust("check", str(bad), check=False)
    assert res.returncode == 1
    assert f"{bad}:3: grants.max_ttl:" in res.stderr


def test_unbound_refuses_to_start_on_malformed_config(nt, lab):
    host = NetTrustHost(lab, "[policy]\nallow = []\n", name="will-break")
    host.config_path.write_text('[policy]\nallow = ["ok.example",\n  "bad..name"]\n')
    nt.stop()
    try:
        with pytest.raises(LabError) as err:
            host.start()
        assert f"{host.config_path}:3: policy.allow[1]" in str(err.value)
    finally:
        nt.start()


def test_generated_config_passes_unbound_checkconf(nt, lab):
    conf = Path(lab.work_dir) / "unbound" / "unbound.conf"
    res = lab.run("host", ["unbound-checkconf", str(conf)], env=nt.env())
    assert "no errors" in res.stdout

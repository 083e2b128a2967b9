"""Resolver features of issue 14, end to end: real Unbound with the module, NSD serving the lab's
zones (forward and reverse, sec.test signed, www.bad.test bogus), nftables in the lab's
namespaces, dig and real connects.

- reverse lookups open only what forward DNS confirms (``ptr.confirm``);
- local names from nettrust.toml (``[[local.names]]``, ``local.hosts_file``);
- several upstreams (``upstream.servers``): queries spread, one going silent does not stop
  resolution.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lab_util import dig, direct, resolving_lab

from testbed.product import SYSTEM_PYTHON, NetTrustHost, stats_section
from testbed.zones import reverse6_label

pytestmark = pytest.mark.integration

REV4 = "100.51.198.in-addr.arpa"
REV6 = "0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa"
EXTRA = {
    REV4: [
        "99 IN PTR h1.fw.test.",                      # h1 is 198.18.0.1: does not resolve back
        "30 IN PTR www.bad.test.",                    # www.bad.test 198.51.100.30: bogus
        "66 IN PTR www.blocked.fw.test.",             # 198.51.100.66, but the name is denied
        # RFC 2317 classless delegation: the PTR lives under another name, reached by CNAME.
        "20 IN CNAME 20.0-63.100.51.198.in-addr.arpa.",
        "20.0-63 IN PTR www.sec.test.",               # 198.51.100.20, secure
    ],
    REV6: [f"{reverse6_label('2001:db8:100::99')} IN PTR h2.fw.test."],   # h2: 2001:db8:118::2
}
BASE = """
[policy]
deny = ["**.blocked.fw.test", "denied.lan"]
require_dnssec = ["sec.test"]
[grants]
min_ttl = "1s"
grace = "2s"
[lifecycle]
liveness = false
[log]
level = "debug"
"""


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


@pytest.fixture
def host(lab, request):
    """NetTrust with the configuration the test's ``config`` marker gives, stopped afterwards."""
    text, name = request.param
    nt = NetTrustHost(lab, BASE + text, name=name)
    nt.start()
    yield nt
    lab.stop_unbound()
    nt.nettrust("remove")


def with_config(text: str, name: str):
    return pytest.mark.parametrize("host", [(text, name)], indirect=True, ids=[name])


def opened_within(lab, address: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if direct(lab, address, timeout=0.3) is True:
            return True
        time.sleep(0.05)
    return False


# -- reverse lookups ---------------------------------------------------------------------------
PTR_CONFIG = "[ptr]\nconfirm = true\n"


@with_config(PTR_CONFIG, "ptr")
def test_a_ptr_answer_opens_only_what_forward_dns_confirms_ipv4(lab, host):
    # Not resolving back: 198.51.100.99's PTR names h1.fw.test (198.18.0.1).
    assert direct(lab, "198.51.100.99") == "ConnectionRefusedError"           # control: closed
    assert dig(lab, "99.100.51.198.in-addr.arpa", "PTR").answers == ["h1.fw.test."]
    # The confirmer did look h1.fw.test up (an ordinary lookup: its own address opens) ...
    assert opened_within(lab, "198.18.0.1", 2.0)
    # ... but the PTR's address stays closed.
    assert direct(lab, "198.51.100.99") == "ConnectionRefusedError"
    assert "198.51.100.99" not in host.grants()

    # Resolving back: 198.51.100.10 -> www.fw.test -> 198.51.100.10 opens within a second.
    assert direct(lab, "198.51.100.10") == "ConnectionRefusedError"
    assert dig(lab, "10.100.51.198.in-addr.arpa", "PTR").answers == ["www.fw.test."]
    assert opened_within(lab, "198.51.100.10", 1.0)
    grant = host.grants()["198.51.100.10"]
    assert grant["timeout"] <= 300 + 2 + 1       # the forward answer's TTL (300 s) + grace
    assert "confirmed by www.fw.test" in host.log()


@with_config(PTR_CONFIG, "ptr6")
def test_a_ptr_answer_opens_only_what_forward_dns_confirms_ipv6(lab, host):
    assert dig(lab, f"{reverse6_label('2001:db8:100::99')}.{REV6}", "PTR").answers == ["h2.fw.test."]
    assert opened_within(lab, "2001:db8:118::2", 2.0)               # the forward lookup ran
    assert direct(lab, "2001:db8:100::99") == "ConnectionRefusedError"

    assert direct(lab, "2001:db8:100::10") == "ConnectionRefusedError"
    assert dig(lab, f"{reverse6_label('2001:db8:100::10')}.{REV6}", "PTR").answers == ["www.fw.test."]
    assert opened_within(lab, "2001:db8:100::10", 1.0)


@with_config(PTR_CONFIG, "ptr-bogus")
def test_bogus_or_denied_forward_answers_never_confirm_and_rfc2317_does(lab, host):
    assert dig(lab, "30.100.51.198.in-addr.arpa", "PTR").answers == ["www.bad.test."]
    assert dig(lab, "66.100.51.198.in-addr.arpa", "PTR").answers == ["www.blocked.fw.test."]
    # Control in the same run: an RFC 2317 CNAME, then a PTR to a secure name, confirms.
    assert dig(lab, "20.100.51.198.in-addr.arpa", "PTR").answers[-1] == "www.sec.test."
    assert opened_within(lab, "198.51.100.20", 1.0)
    time.sleep(0.5)                 # the confirmer handles answers in order: .30 and .66 are done
    assert direct(lab, "198.51.100.30") == "ConnectionRefusedError"           # bogus
    assert direct(lab, "198.51.100.66") == "ConnectionRefusedError"           # denied name
    log = host.log()
    assert "reverse lookup of 20.100.51.198.in-addr.arpa, confirmed by www.sec.test" in log


def test_stats_why_says_which_reverse_lookup_opened_an_address(lab):
    nt = NetTrustHost(lab, BASE + PTR_CONFIG + stats_section(lab), name="ptr-why")
    nt.start_agent()                # first, so Unbound's dnstap connects at once
    try:
        nt.start()
        assert dig(lab, f"{reverse6_label('2001:db8:100::10')}.{REV6}", "PTR").answers == \
            ["www.fw.test."]
        assert opened_within(lab, "2001:db8:100::10", 1.0)
        deadline = time.monotonic() + 10
        text = ""
        while "reverse lookup" not in text and time.monotonic() < deadline:
            time.sleep(0.3)
            text = nt.nettrust("stats", "why", "2001:db8:100::10").stdout
        assert (f"opened by reverse lookup of {reverse6_label('2001:db8:100::10')}.{REV6}, "
                "confirmed by www.fw.test") in text, text
    finally:
        lab.stop_unbound()
        nt.stop_agent()
        nt.nettrust("remove", check=False)


@with_config("", "ptr-off")
def test_without_ptr_confirm_a_ptr_answer_opens_nothing(lab, host):
    assert dig(lab, "10.100.51.198.in-addr.arpa", "PTR").answers == ["www.fw.test."]
    assert not opened_within(lab, "198.51.100.10", 1.5)


# -- local names ---------------------------------------------------------------------------------
def local_config(lab) -> str:
    hosts = Path(lab.work_dir) / "nettrust" / "hosts"
    hosts.parent.mkdir(mode=0o755, exist_ok=True)
    hosts.write_text("# a hosts file\n198.51.100.152 printer.lan  scanner.lan\n")
    os.chmod(hosts, 0o644)
    return ('[local]\n'
            f'hosts_file = "{hosts}"\n'
            '[[local.names]]\nname = "files.lan"\n'
            'addresses = ["198.51.100.150", "2001:db8:100::150"]\nttl = "1m"\n'
            '[[local.names]]\nname = "denied.lan"\naddresses = ["198.51.100.151"]\n')


@pytest.fixture
def local_host(lab):
    nt = NetTrustHost(lab, BASE + local_config(lab), name="local")
    nt.start()
    yield nt
    lab.stop_unbound()
    nt.nettrust("remove")


def test_local_names_answer_and_connect_and_policy_still_holds(lab, local_host):
    for address in ("198.51.100.150", "2001:db8:100::150", "198.51.100.152", "198.51.100.151"):
        assert direct(lab, address) == "ConnectionRefusedError"            # control: closed
    assert dig(lab, "files.lan").answers == ["198.51.100.150"]
    assert direct(lab, "198.51.100.150") is True
    assert dig(lab, "files.lan", "AAAA").answers == ["2001:db8:100::150"]
    assert direct(lab, "2001:db8:100::150") is True
    assert dig(lab, "scanner.lan").answers == ["198.51.100.152"]          # from the hosts file
    assert direct(lab, "198.51.100.152") is True
    # Denied by policy: Unbound answers its local-data (the callback cannot veto), nothing opens.
    assert dig(lab, "denied.lan").answers == ["198.51.100.151"]
    assert direct(lab, "198.51.100.151") == "ConnectionRefusedError"
    assert "198.51.100.151" not in local_host.grants()
    # local-data is never cached: every answer is judged and granted again.
    before = local_host.grants()["198.51.100.150"]["expires_in"]
    time.sleep(1.5)
    assert dig(lab, "files.lan").answers == ["198.51.100.150"]
    assert local_host.grants()["198.51.100.150"]["expires_in"] > before - 0.5


# -- several upstreams ---------------------------------------------------------------------------
SYNTH = str(Path(__file__).with_name("synth_dns.py"))
UPSTREAMS = ("203.0.113.55", "203.0.113.56")
TALLY = "nt_tally"


class SpreadHost(NetTrustHost):
    def zone_conf(self) -> str:          # the synthesizing servers are not signed: say so
        return super().zone_conf() + 'server:\n    domain-insecure: "spread.test"\n'


def tally(lab) -> dict[str, int]:
    """Answers each upstream sent (nftables counters in the lab's internet namespace)."""
    out = json.loads(lab.run("net", ["nft", "-j", "list", "table", "inet", TALLY]).stdout)
    counts = {}
    for item in out["nftables"]:
        rule = item.get("rule")
        if not rule or rule.get("comment") not in UPSTREAMS:
            continue
        counts[rule["comment"]] = next(e["counter"]["packets"] for e in rule["expr"]
                                       if "counter" in e)
    return counts


def test_queries_spread_over_two_upstreams_and_survive_one_going_silent(lab):
    servers = [lab.spawn("net", [SYSTEM_PYTHON, SYNTH, a, "spread.test"], log_name=f"synth{i}")
               for i, a in enumerate(UPSTREAMS)]
    rules = "".join(f'  ip saddr {a} udp sport 53 counter comment "{a}"\n' for a in UPSTREAMS)
    lab.run("net", ["nft", "-f", "-"], input=(
        f"table inet {TALLY} {{\n chain replies {{\n  type filter hook output priority 0;\n"
        f"{rules} }}\n chain silence {{\n  type filter hook input priority -10;\n }}\n}}\n"))
    config = ('[upstream]\nmode = "forward"\ndown_for = "10s"\n'
              f'servers = ["{UPSTREAMS[0]}", "{UPSTREAMS[1]}"]\n')
    nt = SpreadHost(lab, BASE + config, name="spread")
    silent = UPSTREAMS[1]
    try:
        for s in servers:
            assert s.wait_for_log("READY", timeout=10)
        assert "infra-keep-probing: yes" in nt.unbound_conf()
        assert "infra-host-ttl: 10" in nt.unbound_conf()
        nt.start()
        answered = [dig(lab, f"n{i}.spread.test").status for i in range(40)]
        assert answered == ["NOERROR"] * 40
        counts = tally(lab)
        print(f"\n40 lookups, answers per upstream: {counts}")
        assert all(counts.get(a, 0) >= 3 for a in UPSTREAMS), counts   # both were used
        # One upstream goes silent: its namespace drops what reaches it on port 53.
        lab.run("net", ["nft", "add", "rule", "inet", TALLY, "silence", "ip", "daddr", silent,
                        "udp", "dport", "53", "drop"])
        before = tally(lab)
        started = time.monotonic()
        answered = [dig(lab, f"m{i}.spread.test", timeout=5).status for i in range(20)]
        took = time.monotonic() - started
        during = tally(lab)
        print(f"{silent} silent: 20 lookups in {took:.1f} s, answers per upstream {during}")
        assert answered == ["NOERROR"] * 20
        assert during[silent] == before[silent]                  # it really answered nothing
        # It answers again: once upstream.down_for has passed, Unbound tries it and uses it.
        lab.run("net", ["nft", "flush", "chain", "inet", TALLY, "silence"])
        started = time.monotonic()
        i = 0
        while tally(lab)[silent] == during[silent] and time.monotonic() - started < 60:
            assert dig(lab, f"r{i}.spread.test", timeout=5).status == "NOERROR"
            i += 1
            time.sleep(0.2)
        print(f"{silent} back: used again after {time.monotonic() - started:.1f} s, "
              f"{i} lookups")
        assert tally(lab)[silent] > during[silent]
    finally:
        lab.stop_unbound()
        nt.nettrust("remove", check=False)
        lab.run("net", ["nft", "delete", "table", "inet", TALLY], check=False)
        for s in servers:
            s.stop()

"""Blocklists, allowlists and the encrypted-DNS bypass defence (issue 15), end to end: real
Unbound with the module, NSD serving the lab's zones, nftables in the lab's namespaces, the
statistics agent, and real clients (dig, Python sockets, the `nettrust` CLI).

Each format's file denies its names (NXDOMAIN, connect refused, no grant) and `explain` and the
statistics name the list file and line; an allow list in allowlist mode admits exactly its names;
a list rewritten on disk takes effect in the running Unbound within seconds (same process) while
a broken line is reported with its number; canary names are NXDOMAIN; a DoH-provider list keeps
its names ungranted; refused DoT/DoH attempts show in `nettrust status`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lab_util import dig, direct, resolving_lab, wait_for

from testbed.product import NetTrustHost, stats_section

pytestmark = pytest.mark.integration

NAMES = {"hostsdeny": 151, "domdeny": 152, "x.abdeny": 153, "rpzdeny": 154, "dohprov": 155,
         "okname": 156, "later": 157, "allowed1": 158, "notallowed": 159, "deep.abdeny": 160}
EXTRA = {"fw.test": [r for name, n in NAMES.items()
                     for r in (f"{name} 300 IN A 198.51.100.{n}",
                               f"{name} 300 IN AAAA 2001:db8:100::{n}")]}
A = {f"{name}.fw.test": f"198.51.100.{n}" for name, n in NAMES.items()}
AAAA = {f"{name}.fw.test": f"2001:db8:100::{n}" for name, n in NAMES.items()}

FILES = {
    "hosts.txt": "# a hosts file\n0.0.0.0 hostsdeny.fw.test\n127.0.0.1 localhost\n",
    "domains.txt": "# plain names\n\ndomdeny.fw.test\n",
    "adblock.txt": "[Adblock Plus 2.0]\n! Title: lab\n||abdeny.fw.test^\nexample.org##.ad\n",
    "lab.rpz": ("$TTL 300\n$ORIGIN rpz.lab.\n@ IN SOA localhost. root.localhost. 1 3600 600 86400 "
                "300\n  IN NS localhost.\nrpzdeny.fw.test CNAME .\n"),
    "doh.txt": "# the admin's DoH-provider list\ndohprov.fw.test\n",
}


def lists_config(d: Path) -> str:
    return f"""
[policy]
lists_check_interval = "1s"
lists_state = "{d}/state"
[[policy.lists]]
path = "{d}/hosts.txt"
format = "hosts"
[[policy.lists]]
path = "{d}/domains.txt"
format = "domains"
[[policy.lists]]
path = "{d}/adblock.txt"
format = "adblock"
category = "ads"
[[policy.lists]]
path = "{d}/lab.rpz"
format = "rpz"
[[policy.lists]]
path = "{d}/doh.txt"
format = "domains"
category = "doh_providers"
[grants]
min_ttl = "1s"
[lifecycle]
liveness = false
"""


def write(path: Path, text: str) -> None:
    """As an admin's timer should: a temporary file renamed over the list."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


@pytest.fixture(scope="module")
def listdir(lab):
    d = Path(lab.work_dir) / "lists"
    d.mkdir(mode=0o755, exist_ok=True)
    for name, text in FILES.items():
        write(d / name, text)
    return d


@pytest.fixture(scope="module")
def nt(lab, listdir):
    host = NetTrustHost(lab, lists_config(listdir) + stats_section(lab), name="lists")
    host.start_agent()
    host.start()
    yield host
    lab.stop_unbound()
    host.stop_agent()




def stats(nt, *args):
    return json.loads(nt.nettrust("stats", "--json", *args).stdout)


# 1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,file,line,pattern", [
    ("hostsdeny.fw.test", "hosts.txt", 2, "hostsdeny.fw.test"),
    ("domdeny.fw.test", "domains.txt", 3, "domdeny.fw.test"),
    ("x.abdeny.fw.test", "adblock.txt", 3, "**.abdeny.fw.test"),
    ("rpzdeny.fw.test", "lab.rpz", 5, "rpzdeny.fw.test"),
])
def test_each_format_denies_its_names_naming_list_and_line(nt, lab, listdir, name, file, line,
                                                           pattern):
    for rtype, addresses in (("A", A), ("AAAA", AAAA)):
        assert dig(lab, name, rtype) == ("NXDOMAIN", [])
        assert direct(lab, addresses[name]) == "ConnectionRefusedError"
        assert addresses[name] not in nt.grants()
    where = f"{listdir / file}:{line}: {pattern}"
    out = nt.nettrust("explain", name, check=False)
    assert out.returncode == 1 and "BLOCKED" in out.stdout and where in out.stdout
    blocked = wait_for(lambda: {r["domain"]: r for r in stats(nt, "top", "blocked")}.get(name),
                       f"{name} in the statistics")
    assert where in blocked["rule"]
    # The control: a name in no list resolves and its address opens, in both families.
    for rtype, addresses in (("A", A), ("AAAA", AAAA)):
        assert dig(lab, "okname.fw.test", rtype) == ("NOERROR", [addresses["okname.fw.test"]])
        assert direct(lab, addresses["okname.fw.test"]) is True


def test_adblock_rule_covers_the_name_and_every_name_below(nt, lab):
    assert dig(lab, "abdeny.fw.test")[0] == "NXDOMAIN"          # no record, blocked anyway
    assert dig(lab, "deep.abdeny.fw.test")[0] == "NXDOMAIN"
    assert direct(lab, A["deep.abdeny.fw.test"]) == "ConnectionRefusedError"


def test_allow_list_in_allowlist_mode_admits_exactly_its_names(nt, lab, listdir):
    write(listdir / "allow.txt", "# allowed\nallowed1.fw.test\n")
    config = (f'[general]\nmode = "allowlist"\n[policy]\nlists_state = "{listdir}/state"\n'
              f'[[policy.lists]]\npath = "{listdir}/allow.txt"\nformat = "domains"\n'
              'action = "allow"\n[grants]\nmin_ttl = "1s"\n[lifecycle]\nliveness = false\n'
              + stats_section(lab))
    nt.stop()
    host = NetTrustHost(lab, config, name="allowlist")
    try:
        host.start()
        assert dig(lab, "allowed1.fw.test") == ("NOERROR", [A["allowed1.fw.test"]])
        assert direct(lab, A["allowed1.fw.test"]) is True
        for name in ("notallowed.fw.test", "okname.fw.test", "x.allowed1.fw.test"):
            assert dig(lab, name)[0] == "NXDOMAIN"
        assert direct(lab, A["notallowed.fw.test"]) == "ConnectionRefusedError"
        assert A["notallowed.fw.test"] not in host.grants()
        why = wait_for(lambda: (w := stats(host, "why", A["allowed1.fw.test"]))["grants"] and w,
                       "why")
        assert f"{listdir / 'allow.txt'}:2: allowed1.fw.test" in why["grants"][0]["rule"]
    finally:
        lab.stop_unbound()
        host.nettrust("flush")
        nt.start()


# 2 ---------------------------------------------------------------------------------------------
def test_list_rewritten_on_disk_takes_effect_without_a_restart(nt, lab, listdir):
    # Answered, granted and cached before the list names it:
    assert dig(lab, "later.fw.test") == ("NOERROR", [A["later.fw.test"]])
    assert direct(lab, A["later.fw.test"]) is True
    log_before = nt.log()
    assert log_before.count("lists loaded:") == 1
    write(listdir / "domains.txt", "domdeny.fw.test\nbroken name here\nlater.fw.test\n")
    started = time.monotonic()
    wait_for(lambda: dig(lab, "later.fw.test")[0] == "NXDOMAIN", "the new entry", timeout=15)
    took = time.monotonic() - started
    assert took < 10
    assert dig(lab, "domdeny.fw.test")[0] == "NXDOMAIN"           # the rest still loaded
    # Its grant is revoked and its cached answer flushed: not reachable any more.
    assert A["later.fw.test"] not in nt.grants()
    assert direct(lab, A["later.fw.test"]) == "ConnectionRefusedError"
    assert dig(lab, "later.fw.test", "AAAA")[0] == "NXDOMAIN"
    log = nt.log()
    assert log.count("lists loaded:") == 1 and "lists reloaded" in log   # same process
    assert f"{listdir / 'domains.txt'}:2: one name per line expected" in log
    out = nt.nettrust("lists", "update").stdout
    assert f"{listdir / 'domains.txt'}:2: invalid" in out
    explain = nt.nettrust("explain", "later.fw.test", check=False).stdout
    assert f"{listdir / 'domains.txt'}:3: later.fw.test" in explain
    # Taken out again: answered and granted again, still without a restart.
    write(listdir / "domains.txt", FILES["domains.txt"])
    wait_for(lambda: dig(lab, "later.fw.test")[0] == "NOERROR", "the entry removed", timeout=15)
    assert direct(lab, A["later.fw.test"]) is True


def test_lists_update_reports_added_removed_and_invalid_lines(nt, lab, listdir):
    nt.nettrust("lists", "update")
    write(listdir / "hosts.txt", FILES["hosts.txt"] + "0.0.0.0 new.fw.test\nnot-a-line\n")
    out = nt.nettrust("lists", "update", check=False)
    assert out.returncode == 0
    assert f"{listdir / 'hosts.txt'}:5: invalid" in out.stdout
    assert "+ new.fw.test  (line 4)" in out.stdout
    strict = nt.nettrust("lists", "update", "--strict", check=False)
    assert strict.returncode == 1
    write(listdir / "hosts.txt", FILES["hosts.txt"])
    out = nt.nettrust("lists", "update", "--json").stdout
    hosts = next(c for c in json.loads(out) if c["path"].endswith("hosts.txt"))
    assert hosts["removed"] == ["new.fw.test"] and hosts["invalid"] == []


# 3 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["use-application-dns.net", "mask.icloud.com",
                                  "mask-h2.icloud.com"])
def test_canary_names_are_nxdomain(nt, lab, name):
    for rtype in ("A", "AAAA"):
        assert dig(lab, name, rtype) == ("NXDOMAIN", [])


def blocked_by_nettrust(lab, name) -> bool:
    """NetTrust's own NXDOMAIN carries its SOA (blocked.nettrust.invalid); the lab's root, which
    knows no .net or .com either, answers NXDOMAIN with its own."""
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=3", name, "A"]).stdout
    return "nettrust.invalid" in out


def test_canary_switch_off_lets_them_go_upstream(nt, lab):
    assert blocked_by_nettrust(lab, "use-application-dns.net")            # the control: on
    config = ('[policy]\ncanary_names = false\n[lifecycle]\nliveness = false\n')
    nt.stop()
    host = NetTrustHost(lab, config, name="nocanary")
    try:
        host.start()
        for name in ("use-application-dns.net", "mask.icloud.com"):
            assert not blocked_by_nettrust(lab, name)
            assert "ALLOWED" in host.nettrust("explain", name).stdout
    finally:
        lab.stop_unbound()
        nt.start()


def test_canary_is_nxdomain_even_when_blocked_names_get_a_sinkhole(nt, lab, listdir):
    config = ('[policy]\nblocked_answer = "sinkhole"\ndeny = ["x.blocked.fw.test"]\n'
              '[lifecycle]\nliveness = false\n')
    nt.stop()
    host = NetTrustHost(lab, config, name="sinkhole")
    try:
        host.start()
        assert dig(lab, "x.blocked.fw.test") == ("NOERROR", ["0.0.0.0"])
        assert dig(lab, "use-application-dns.net") == ("NXDOMAIN", [])
    finally:
        lab.stop_unbound()
        nt.start()


def test_doh_provider_names_are_not_granted(nt, lab, listdir):
    for rtype, addresses in (("A", A), ("AAAA", AAAA)):
        assert dig(lab, "dohprov.fw.test", rtype) == ("NXDOMAIN", [])
        assert direct(lab, addresses["dohprov.fw.test"], 443) == "ConnectionRefusedError"
        assert addresses["dohprov.fw.test"] not in nt.grants()
    out = nt.nettrust("explain", "dohprov.fw.test", check=False).stdout
    assert "category doh_providers" in out and f"{listdir / 'doh.txt'}:2" in out


def test_status_reports_refused_dot_and_doh_attempts(nt, lab):
    before = nt.nettrust("status").stdout
    assert "encrypted DNS bypass attempts" in before
    assert direct(lab, "198.51.100.156", 853) is not True                    # DoT
    assert direct(lab, "1.1.1.1", 443) == "ConnectionRefusedError"            # DoH, well known
    assert direct(lab, "198.51.100.159", 80) == "ConnectionRefusedError"      # not a bypass

    def seen():
        out = nt.nettrust("status").stdout
        return "DoT: 198.51.100.156 port 853" in out and "DoH (Cloudflare): 1.1.1.1 port 443" \
            in out and out
    out = wait_for(seen, "the bypass attempts in nettrust status", timeout=15)
    assert "198.51.100.159" not in out
    status = json.loads(nt.nettrust("status", "--json").stdout)
    assert status["encrypted_dns_bypass"]["attempts"] >= 2

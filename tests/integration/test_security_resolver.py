"""Issue 10, the resolver side: what an attacker controlling a zone, a feed or the admin's
routine tools could do through Unbound and the module, in the lab's namespaces.

Real Unbound with our module, NSD serving the lab's zones (plus the hostile names below), real
nftables, dig and sockets.  Each test asserts what the attacker would see and has a control.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from lab_util import direct, resolving_lab
from netns_util import NetNS

from testbed.errors import LabError
from testbed.product import DIST_PACKAGES, SYSTEM_PYTHON, NetTrustHost
from testbed.zones import h_address
from nettrust_core.cache_invalidation import UnboundControlInvalidator
from nettrust_core.wire import encode_name

pytestmark = pytest.mark.integration

# A 255-byte name under the denied zone, and one under an allowed zone (the control).
LONG_DENIED = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 45, "blocked.fw.test"])
LONG_ALLOWED = ".".join(["a" * 63, "b" * 63, "c" * 63, "e" * 53, "fw.test"])
assert len(encode_name(LONG_DENIED)) == 255 and len(encode_name(LONG_ALLOWED)) == 255
SENTINELS = [f"root-key-sentinel-is-ta-{10000 + i}.sec.test" for i in range(20)]

EXTRA = {
    "fw.test": [
        f"{LONG_DENIED}. 300 IN A 198.51.100.155", f"{LONG_DENIED}. 300 IN AAAA 2001:db8:100::155",
        f"{LONG_ALLOWED}. 300 IN A 198.51.100.157", f"{LONG_ALLOWED}. 300 IN AAAA 2001:db8:100::157",
        # a label holding a dot: "www.blocked" as ONE label, which text would show as the denied name
        r"www\.blocked 300 IN A 198.51.100.156", r"www\.blocked 300 IN AAAA 2001:db8:100::156",
        r"todot 300 IN CNAME www\.blocked.fw.test.",
        "inv 30 IN A 198.51.100.158", "inv 30 IN AAAA 2001:db8:100::158",
    ],
    "sec.test": [f"{n.split('.')[0]} 300 IN A 198.51.100.44" for n in SENTINELS]
    + [f"{n.split('.')[0]} 300 IN AAAA 2001:db8:100::44" for n in SENTINELS],
}
CONFIG = """
[policy]
deny = ["**.blocked.fw.test"]
require_dnssec = ["sec.test"]
[grants]
min_ttl = "1s"
max_ttl = "1h"
grace = "2s"
[lifecycle]
liveness = false
[log]
level = "debug"
"""


class Host(NetTrustHost):
    """NetTrust as the tests run it (with Unbound's local control socket, see NetTrustHost),
    plus optional extra Unbound lines (appended last, so they win over the include's settings)."""

    def __init__(self, lab, config_text, *, name="nettrust", extra_conf="", **kw):
        super().__init__(lab, config_text, name=name, **kw)
        self.extra_conf = extra_conf

    def unbound_conf(self) -> str:
        return super().unbound_conf() + self.extra_conf


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


@pytest.fixture(scope="module")
def nt(lab):
    host = Host(lab, CONFIG)
    host.start()
    yield host
    lab.stop_unbound()


@contextlib.contextmanager
def instead_of(nt, lab, host, *, user="unbound"):
    """Run ``host`` in place of the module's NetTrust, then restore it."""
    nt.stop()
    try:
        host.start(user=user)
        yield host
    finally:
        lab.stop_unbound()
        nt.nettrust("flush")
        nt.start()


def dig(lab, name, rtype="A", *flags):
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=3", *flags, name, rtype]).stdout
    status = re.search(r"status: (\w+)", out).group(1)
    answers = []
    if "ANSWER SECTION:" in out:
        block = out.split("ANSWER SECTION:\n", 1)[1].split("\n\n")[0]
        answers = [ln.split() for ln in block.splitlines() if ln and not ln.startswith(";")]
    return status, answers


def answer_lines(nt, qname):
    """The authorizer's debug lines for answers to ``qname`` (one per MODDONE that reached it)."""
    return [ln for ln in nt.log().splitlines() if f"nettrust: {qname} " in ln]


# 0 ---------------------------------------------------------------------------------------------
def test_checkconf_in_a_fresh_namespace_installs_no_firewall(nt, lab):
    conf = Path(lab.work_dir) / "unbound" / "unbound.conf"
    with NetNS("ntchk") as ns:
        env = {**nt.env()}
        res = ns.sh("env", *(f"{k}={v}" for k, v in env.items()), "unbound-checkconf", str(conf))
        assert "no errors" in res.stdout, res.stdout + res.stderr
        assert "checkconf" in res.stderr and "firewall untouched" in res.stderr
        assert ns.sh("nft", "list", "tables").stdout.strip() == ""
        # Every CLI verb an admin runs routinely, and the checks install.sh and the container
        # entrypoint run: none may install the ruleset as a side effect.
        cli = ["env", f"PYTHONPATH={nt.code_dir}:{DIST_PACKAGES}", SYSTEM_PYTHON, "-m",
               "nettrust_core.cli", "-c", str(nt.config_path)]
        for verb in (["check"], ["check", "--effective"], ["check", "--unbound", str(conf)],
                     ["unbound-conf"], ["explain", "www.fw.test"], ["status"], ["hosts"], ["flush"]):
            ns.sh(*cli, *verb, check=False)
            assert ns.sh("nft", "list", "tables").stdout.strip() == "", verb
        # Detection without the executable's name (a renamed or wrapped binary): the module env
        # checkconf passes (no message cache, no allocator) is enough.
        renamed = Path(lab.work_dir) / "ub-check"
        renamed.write_bytes(Path("/usr/sbin/unbound-checkconf").read_bytes())
        renamed.chmod(0o755)
        res = ns.sh("env", *(f"{k}={v}" for k, v in env.items()), str(renamed), str(conf))
        assert "no errors" in res.stdout and "module env without message cache" in res.stderr
        assert ns.sh("nft", "list", "tables").stdout.strip() == ""
    # The control: the daemon with the same configuration did install it.
    assert "table inet nettrust" in lab.run("host", ["nft", "list", "tables"]).stdout


# 3 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.155"), ("AAAA", "2001:db8:100::155")])
def test_255_byte_name_under_denied_zone_is_blocked(nt, lab, rtype, address):
    status, answers = dig(lab, LONG_DENIED, rtype)
    assert status == "NXDOMAIN" and answers == []
    assert direct(lab, address) == "ConnectionRefusedError"
    assert address not in nt.grants()


@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.157"), ("AAAA", "2001:db8:100::157")])
def test_255_byte_name_under_allowed_zone_is_granted(nt, lab, rtype, address):
    status, answers = dig(lab, LONG_ALLOWED, rtype)
    assert status == "NOERROR" and answers[0][-1] == address
    assert direct(lab, address) is True
    name = nt.grants()[address]["name"]            # the element comment keeps 128 bytes
    assert len(name) >= 100 and LONG_ALLOWED.startswith(name)


@pytest.mark.parametrize("name", [r"www\.blocked.fw.test", "todot.fw.test"])
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.156"), ("AAAA", "2001:db8:100::156")])
def test_name_with_a_dot_inside_a_label_fails_closed(nt, lab, name, rtype, address):
    status, answers = dig(lab, name, rtype)
    assert status == "SERVFAIL" and answers == []
    assert direct(lab, address) == "ConnectionRefusedError"
    assert address not in nt.grants()
    status, answers = dig(lab, "www.fw.test", rtype)                 # control
    assert status == "NOERROR" and answers


# 9 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address", [("A", "198.51.100.66"), ("AAAA", "2001:db8:100::66")])
def test_blocked_cname_answer_is_not_served_later_from_cache(nt, lab, rtype, address):
    before = len(answer_lines(nt, "alias.fw.test"))
    for _ in range(3):
        status, answers = dig(lab, "alias.fw.test", rtype)
        assert status == "NXDOMAIN" and answers == [], answers
    # Each query reached the module again (nothing served from cache behind its back).
    assert len(answer_lines(nt, "alias.fw.test")) - before == 3
    assert direct(lab, address) == "ConnectionRefusedError"
    # Control: an allowed chain is cached as usual (the second answer never reaches the module).
    dig(lab, "c1.fw.test", rtype)
    n = len(answer_lines(nt, "c1.fw.test"))
    assert dig(lab, "c1.fw.test", rtype)[0] == "NOERROR"
    assert len(answer_lines(nt, "c1.fw.test")) == n


@pytest.mark.parametrize("rtype,index", [("A", 0), ("AAAA", 1)])
def test_failed_firewall_write_is_not_served_later_from_cache(nt, lab, rtype, index):
    """The grant set is filled behind the module's back (16 elements, grants.max_per_set = 16,
    so the kernel refuses the next write): the answer fails closed, and so does the next
    query for it, instead of coming from cache with data nobody granted."""
    config = CONFIG.replace('grace = "2s"\n', 'grace = "2s"\nmax_per_set = 16\n')
    host = Host(lab, config, name="fullset")
    name = f"h{2900 + index}.fw.test"
    address = h_address(2900 + index)[index]
    with instead_of(nt, lab, host):
        table = lab.run("host", ["nft", "list", "table", "inet", "nettrust"]).stdout
        family = "4" if rtype == "A" else "6"
        sets = re.findall(rf"set (allow{family}\w*) {{", table)
        assert sets, table
        junk = ", ".join(f"198.18.250.{i}" if rtype == "A" else f"2001:db8:118::fa:{i:x}"
                         for i in range(1, 17))
        for s in sets:
            lab.run("host", ["nft", f"flush set inet nettrust {s}"])
            lab.run("host", ["nft", f"add element inet nettrust {s} {{ {junk} }}"])
        for _ in range(2):
            status, answers = dig(lab, name, rtype)
            assert status == "SERVFAIL" and answers == [], answers
        assert direct(lab, address) == "ConnectionRefusedError"
        assert "firewall write failed" in host.log()
        for s in sets:                                   # control: room again, granted again
            lab.run("host", ["nft", f"flush set inet nettrust {s}"])
        status, answers = dig(lab, name, rtype)
        assert status == "NOERROR" and answers[-1][-1] == address
        assert direct(lab, address) is True


# 10 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,address,control", [("A", "198.51.100.44", "198.51.100.20"),
                                                   ("AAAA", "2001:db8:100::44", "2001:db8:100::20")])
def test_root_key_sentinel_status_is_bogus_without_a_traceback_storm(nt, lab, rtype, address, control):
    """Unbound marks a secure A/AAAA answer for root-key-sentinel-is-ta-<tag> whose tag is not
    a root trust anchor sec_status_secure_sentinel_fail (4, validator.c): not a member of the
    exported statuses.  It must count as bogus, quietly."""
    for name in SENTINELS:
        status, answers = dig(lab, name, rtype)
        assert status == "SERVFAIL" and answers == []
    assert address not in nt.grants()
    assert direct(lab, address) == "ConnectionRefusedError"
    log = nt.log()
    assert "Traceback" not in log and "is not a valid Security" not in log
    judged = [ln for ln in log.splitlines() if "root-key-sentinel" in ln and f" {rtype} " in ln]
    assert len(judged) == len(SENTINELS) and all("sec=bogus" in ln for ln in judged)
    status, answers = dig(lab, "www.sec.test", rtype)            # control: secure still grants
    assert status == "NOERROR" and direct(lab, control) is True


# 13 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,says", [
    # dns64 before python would synthesize answers after the module judged them; checkconf
    # itself accepts this order (it refuses "respip python validator iterator" on its own).
    ('server:\n    module-config: "dns64 python validator iterator"\n', "module-config"),
    ('server:\n    module-config: "validator python iterator"\n', "module-config"),
    ("server:\n    serve-expired: yes\n", "serve-expired: no"),
    ("server:\n    cache-min-ttl: 300\n", "cache-min-ttl: 0"),
    # asks a name's A to resolve its AAAA and caches that answer unseen (issue 21's finding)
    ("server:\n    qname-minimisation: yes\n", "qname-minimisation: no"),
])
def test_unbound_settings_that_undo_the_module_refuse_the_start(nt, lab, extra, says):
    host = Host(lab, CONFIG, name="badset", extra_conf=extra)
    conf = Path(lab.work_dir) / "unbound" / "badset.conf"
    conf.write_text(host.unbound_conf())
    conf.chmod(0o644)
    res = nt.nettrust("check", "--unbound", str(conf), check=False)
    assert res.returncode == 1 and says in res.stderr
    if says == "module-config":          # unbound-checkconf says so too (and touches nothing)
        res = lab.run("host", ["unbound-checkconf", str(conf)], env=nt.env(), check=False)
        assert res.returncode != 0 and 'set module-config: "python validator iterator"' in res.stderr
    nt.stop()
    try:
        with pytest.raises(LabError) as err:
            host.start()
        assert says in str(err.value)
        assert lab.run("host", ["nft", "list", "tables"]).stdout.count("nettrust") <= 1
    finally:
        nt.start()
    good = Path(lab.work_dir) / "unbound" / "unbound.conf"       # control
    res = nt.nettrust("check", "--unbound", str(good))
    assert "OK for NetTrust" in res.stdout and nt.control_socket in res.stdout


RPZ_ZONE = """$TTL 300
@ IN SOA rpz.local. hostmaster.rpz.local. 1 3600 600 86400 60
@ IN NS localhost.
www.sec.test IN A 198.51.100.99
www.sec.test IN AAAA 2001:db8:100::99
evil.fw.test IN A 10.9.9.9
"""


AUTH_ZONE = """$ORIGIN authz.sec.test.
$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 60
@ IN NS ns
ns IN A 198.51.100.53
www IN A 198.51.100.98
lan IN A 10.9.9.7
"""


def test_rpz_and_auth_zone_answers_pass_the_rebinding_guard_and_require_dnssec(nt, lab):
    """Measured: Unbound hands RPZ (rpz.c:rpz_local_encode) and auth-zone for-downstream
    (authzone.c) answers to the same reply_local callback as local-data, with the same shape.
    Only names the administrator declared in local-data are trusted as LOCAL."""
    rpz = Path(lab.work_dir) / "unbound" / "rpz.zone"
    rpz.write_text(RPZ_ZONE)
    rpz.chmod(0o644)
    auth = Path(lab.work_dir) / "unbound" / "authz.zone"
    auth.write_text(AUTH_ZONE)
    auth.chmod(0o644)
    # Unbound 1.17.1 refuses RPZ without respip ("fatal error: RPZ requires the respip module");
    # after python it rewrites before the module judges, which the start-up check accepts.
    extra = ('server:\n    module-config: "python respip validator iterator"\n'
             f'rpz:\n    name: "rpz.local"\n    zonefile: "{rpz}"\n'
             f'auth-zone:\n    name: "authz.sec.test"\n    zonefile: "{auth}"\n'
             '    for-downstream: yes\n    for-upstream: no\n'
             'server:\n    local-data: "printer.lan. 300 IN A 10.9.9.8"\n'
             '    local-zone: "lan." static\n')
    host = Host(lab, CONFIG, name="rpz", extra_conf=extra)
    with instead_of(nt, lab, host):
        for rtype, address in (("A", "198.51.100.99"), ("AAAA", "2001:db8:100::99")):
            status, answers = dig(lab, "www.sec.test", rtype)
            assert answers and answers[0][-1] == address              # the feed rewrote it
            assert direct(lab, address) == "ConnectionRefusedError"  # not secure: refused
        status, answers = dig(lab, "evil.fw.test")
        assert answers and answers[0][-1] == "10.9.9.9"
        status, answers = dig(lab, "www.authz.sec.test")
        assert answers and answers[0][-1] == "198.51.100.98"
        assert direct(lab, "198.51.100.98") == "ConnectionRefusedError"   # not secure: refused
        status, answers = dig(lab, "lan.authz.sec.test")
        assert answers and answers[0][-1] == "10.9.9.7"
        grants = host.grants()
        for address in ("198.51.100.99", "2001:db8:100::99", "10.9.9.9", "198.51.100.98", "10.9.9.7"):
            assert address not in grants
        # Control: the administrator's own local-data is still granted (private address and all).
        status, answers = dig(lab, "printer.lan")
        assert status == "NOERROR" and answers[0][-1] == "10.9.9.8"
        assert "10.9.9.8" in host.grants()


# 14 --------------------------------------------------------------------------------------------
def test_started_as_root_with_resolver_user_unbound_refuses_with_advice(nt, lab):
    host = Host(lab, CONFIG, name="asroot")
    nt.stop()
    try:
        with pytest.raises(LabError) as err:
            host.start(user=None)
        text = str(err.value)
        assert "runs as 'root' (uid 0)" in text and "firewall.resolver_user" in text
        assert "Start Unbound as 'unbound'" in text
    finally:
        nt.start()
    # Control: the normal setup (the unbound user with CAP_NET_ADMIN) answers and grants.
    assert dig(lab, "www.fw.test")[0] == "NOERROR"
    assert direct(lab, "198.51.100.10") is True


def test_username_unbound_drops_root_before_the_module_starts(nt, lab):
    """Measured: Unbound 1.17.1 switches user (perform_setup) before the modules' init
    (daemon_fork), so with username: unbound the module starts as unbound without
    CAP_NET_ADMIN and must refuse, saying so."""
    host = Host(lab, CONFIG, name="username", extra_conf="")
    conf = Path(lab.work_dir) / "unbound" / "username.conf"
    conf.write_text(host.unbound_conf() + 'server:\n    username: "unbound"\n    chroot: ""\n'
                    '    pidfile: ""\n    use-syslog: no\n    logfile: ""\n')
    conf.chmod(0o644)
    nt.stop()
    try:
        proc = lab.spawn("host", ["unbound", "-d", "-c", str(conf)], log_name="username",
                         env=host.env())
        proc.wait(20)
        log = proc.log_text()
        assert proc.returncode not in (None, 0)
        assert "CAP_NET_ADMIN" in log and 'username: ""' in log
    finally:
        nt.start()


# cache invalidation facility -------------------------------------------------------------------
@pytest.mark.parametrize("rtype", ["A", "AAAA"])
def test_invalidated_name_is_resolved_again(nt, lab, rtype):
    status, first = dig(lab, "inv.fw.test", rtype)
    assert status == "NOERROR"
    seen = len(answer_lines(nt, "inv.fw.test"))
    time.sleep(1.1)
    _, cached = dig(lab, "inv.fw.test", rtype)
    assert int(cached[0][1]) < 30 and len(answer_lines(nt, "inv.fw.test")) == seen   # control: a hit
    inv = UnboundControlInvalidator(nt.control_socket)
    inv.invalidate(["inv.fw.test"])
    inv.start()
    deadline = time.monotonic() + 5
    while inv.counts["flushed"] + inv.counts["failed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    inv.stop()
    assert inv.counts["flushed"] == 1, inv.counts
    assert f"cache invalidation via {nt.control_socket}" in nt.log()
    _, fresh = dig(lab, "inv.fw.test", rtype)
    assert int(fresh[0][1]) == 30                                  # fetched again, full TTL
    assert len(answer_lines(nt, "inv.fw.test")) == seen + 1        # and it reached MODDONE

"""What the ruleset lets through, seen from an attacker's side (issue 10, items 1, 2, 6, 7, 11, 12).

Every test builds its own namespaces (see :mod:`secnet`): the ruleset runs in the host's (or the
gateway's) namespace, servers listen in an "internet" namespace whose AnyIP prefixes answer on
any address, and what an attacker would notice is asserted on both ends: no reply comes back, a
connection is refused or times out, and the internet side never saw the packet.  Each test has a
control that works through the same ruleset.  The root namespace is never touched; the cgroup
tests create one unique cgroup v2 directory each and remove it afterwards.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import secrets
import socket
import subprocess
import time

import pytest

import secnet
from conftest import require
from netns_util import REPO, ChildError, NetNS
from secnet import MARK, Servers, icmpv6_send, tcp_probe, udp_probe
from nettrust_core.config import load_config
from nettrust_core.firewall.base import Grant, RulesetSpec
from nettrust_core.firewall.nftables import NftablesBackend
from nettrust_core.firewall.nftables_cgroup import cgroup2_mount
from nettrust_core.ruleset import ruleset_spec

pytestmark = pytest.mark.integration

T = "ntsec"
ip = ipaddress.ip_address
net = ipaddress.ip_network
RESOLVER_UID = pwd.getpwnam("unbound").pw_uid
OTHER_UID = pwd.getpwnam("nobody").pw_uid


def load(spec: RulesetSpec, grants=()) -> None:
    """Program ``spec`` (and ``grants``, an hour each) in the current namespace."""
    b = NftablesBackend(spec)
    try:
        b.ensure()
        if grants:
            b.grant([Grant(ip(a), 3600, "granted.example") for a in grants])
    finally:
        b.close()


def spec(**kw) -> RulesetSpec:
    return RulesetSpec(table=T, resolver_uid=RESOLVER_UID, **kw)


@pytest.fixture
def hi():
    with secnet.host_and_internet() as (h, i):
        servers = Servers(i)
        try:
            yield h, i, servers
        finally:
            servers.close()


# -- item 1: DHCP only as DHCP ---------------------------------------------------------------
def test_dhcp_ports_carry_nothing_but_a_dhcp_clients_requests(hi):
    h, i, srv = hi
    srv.udp(67).udp(547).udp(68).start()
    srv.join_udp6(547, "ff02::1:2", "v1")
    server_ll = secnet.address_of(i, "v1")
    h.run(load, spec(dhcp_servers=(ip("198.51.100.67"),)))
    # the attacker: any process tunnelling out over UDP 67/547 to an internet address
    for addr in ("198.51.100.7", "2001:db8:ff::7"):
        port = 67 if ":" not in addr else 547
        assert h.run(udp_probe, addr, port, sport=40000) != "reply"
        assert h.run(udp_probe, addr, port, sport=40000, uid=OTHER_UID) != "reply"
        # DHCP-shaped (client source port) but to an arbitrary unicast address: still nothing
        assert h.run(udp_probe, addr, port, sport=68 if port == 67 else 546) != "reply"
        assert not srv.received("udp", port, MARK)
    # ... nor to the servers' ports the other way round (67 -> 68)
    assert h.run(udp_probe, "198.51.100.7", 68, sport=67) != "reply"
    assert not srv.received("udp", 68, MARK)
    # the control: a DHCP client's requests reach broadcast, the configured server, ff02::1:2
    # and a link-local server, and their answers come back
    assert h.run(udp_probe, "255.255.255.255", 67, sport=68) == "reply"
    assert h.run(udp_probe, "198.51.100.67", 67, sport=68) == "reply"
    assert h.run(udp_probe, "ff02::1:2", 547, sport=546, ifname="v0") == "reply"
    assert h.run(udp_probe, server_ll, 547, sport=546, ifname="v0") == "reply"
    sources = {e[2] for e in srv.received("udp", 67, MARK)} | {e[2].split("%")[0] for e in
                                                              srv.received("udp", 547, MARK)}
    assert {"10.99.0.1"} <= sources and any(s.startswith("fe80:") for s in sources)


# -- item 7: DNS and DoT only for the resolver -------------------------------------------------
def test_dns_and_dot_to_a_granted_address_only_for_the_resolver(hi):
    h, _i, srv = hi
    srv.udp(53).udp(853).tcp(53).tcp(853).tcp(8080).start()
    public_resolvers = ("198.51.100.53", "2001:db8:ff::53")       # granted: "reached by name"
    lo = Servers(h).udp(53).start()                               # a local resolver on loopback
    try:
        h.run(load, spec(), public_resolvers)
        for addr in public_resolvers:
            for uid in (None, OTHER_UID):                         # root, and an ordinary user
                assert h.run(udp_probe, addr, 53, uid=uid) != "reply"
                assert h.run(udp_probe, addr, 853, uid=uid) != "reply"
                assert h.run(tcp_probe, addr, 53, uid=uid) != "connected"
                assert h.run(tcp_probe, addr, 853, uid=uid) != "connected"
            # the control: the same process reaches the granted address on another port
            assert h.run(tcp_probe, addr, 8080, uid=OTHER_UID) == "connected"
            # and the resolver (its uid) still reaches port 53 and 853 there
            assert h.run(udp_probe, addr, 53, uid=RESOLVER_UID) == "reply"
            assert h.run(tcp_probe, addr, 853, uid=RESOLVER_UID) == "connected"
        assert {e[2] for e in srv.seen if e[1] in (53, 853)} == {"10.99.0.1", "fd99::1"}
        assert all(len(srv.received("udp", p, MARK)) == 2 for p in (53,))     # the resolver's
        # loopback stays as it was: anyone reaches a local resolver on 127.0.0.1 / ::1
        assert h.run(udp_probe, "127.0.0.1", 53, uid=OTHER_UID) == "reply"
        assert h.run(udp_probe, "::1", 53, uid=OTHER_UID) == "reply"
    finally:
        lo.close()


# -- item 6: forward mode opens the upstreams to the resolver only, on their port only -------
FORWARD_CONFIG = """
[upstream]
mode = "forward"
servers = ["198.51.100.53", "2001:db8:ff::53", "198.51.100.54@5353"]
[firewall]
table = "ntsec"
"""


def test_forward_mode_upstreams_are_reachable_by_the_resolver_on_their_port_only(hi, tmp_path):
    h, _i, srv = hi
    srv.udp(53).udp(5353).tcp(53).tcp(443).start()
    path = tmp_path / "nettrust.toml"
    path.write_text(FORWARD_CONFIG)
    rs = ruleset_spec(load_config(path))
    assert rs.static_hosts == ()                      # no longer open to everyone
    h.run(load, rs)
    for upstream in ("198.51.100.53", "2001:db8:ff::53"):
        # the control: the resolver reaches its upstream over UDP and TCP 53
        assert h.run(udp_probe, upstream, 53, uid=RESOLVER_UID) == "reply"
        assert h.run(tcp_probe, upstream, 53, uid=RESOLVER_UID) == "connected"
        # nobody else does, on any port; the resolver itself on no other port
        for uid in (None, OTHER_UID):
            assert h.run(udp_probe, upstream, 53, uid=uid) != "reply"
            assert h.run(tcp_probe, upstream, 443, uid=uid) != "connected"
        assert h.run(tcp_probe, upstream, 443, uid=RESOLVER_UID) != "connected"
    # a server on another port: that port only; and no other address on 53 for the resolver
    assert h.run(udp_probe, "198.51.100.54", 5353, uid=RESOLVER_UID) == "reply"
    assert h.run(udp_probe, "198.51.100.54", 53, uid=RESOLVER_UID) != "reply"
    assert h.run(udp_probe, "198.51.100.54", 5353, uid=OTHER_UID) != "reply"
    assert h.run(udp_probe, "198.51.100.99", 53, uid=RESOLVER_UID) != "reply"
    assert h.run(udp_probe, "2001:db8:ff::99", 53, uid=RESOLVER_UID) != "reply"
    assert {e[2] for e in srv.seen if e[0] == "udp"} == {"10.99.0.1", "fd99::1"}
    assert len(srv.received("udp", 53, MARK)) == 2 and len(srv.received("udp", 5353, MARK)) == 1


# -- item 11: ICMPv6 neighbour discovery stays on the link ------------------------------------
NS_, NA_, RS_ = 135, 136, 133
MLD_REPORT = 131


def test_nd_works_from_the_host_but_cannot_carry_a_tunnel(hi):
    h, i, srv = hi
    srv.icmpv6().start()
    peer_ll = secnet.address_of(i, "v1")
    h.run(load, spec())
    # the control: with empty neighbour caches on both sides, the neighbour's solicitation from
    # its global (ULA) address is answered by the host's kernel with a unicast NA to that
    # address (hop limit 255, no process owns it: nd_kernel), so its ping is answered ...
    h.sh("ip", "-6", "neigh", "flush", "dev", "v0")
    i.sh("ip", "-6", "neigh", "flush", "dev", "v1")
    assert i.run(secnet.ping6, "fd99::1")
    # ... and the host resolves its neighbour itself (multicast NS, hop limit 255) to ping it
    h.run(load, spec(), ["fd99::2"])                       # the echo request needs a grant
    h.sh("ip", "-6", "neigh", "flush", "dev", "v0")
    i.sh("ip", "-6", "neigh", "flush", "dev", "v1")
    assert h.run(secnet.ping6, "fd99::2")
    # a process's ND to link-local / link-scope multicast at hop limit 255 passes (rdisc6 & co)
    assert h.run(icmpv6_send, peer_ll, NS_, 255, ifname="v0") == "sent"
    assert h.run(icmpv6_send, "ff02::1", NA_, 255, ifname="v0") == "sent"
    assert secnet.wait_for(lambda: srv.received("icmpv6", NS_, MARK) and srv.received("icmpv6", NA_, MARK))
    before = len(srv.seen)
    # the attacker: ND- and MLD-typed messages (echo-shaped: payload of its choice) to a global
    # address on the internet, at a lower hop limit, at 255, and from an ordinary user
    attempts = [("2001:db8:ff::7", NS_, 64), ("2001:db8:ff::7", NA_, 64), ("2001:db8:ff::7", RS_, 64),
                ("2001:db8:ff::7", NS_, 255), ("2001:db8:ff::7", NA_, 255),
                ("2001:db8:ff::7", MLD_REPORT, 1), ("2001:db8:ff::7", MLD_REPORT, 64)]
    # (to a granted address, any ICMPv6 passes like any other protocol: the grant decides)
    results = [h.run(icmpv6_send, addr, kind, hops) for addr, kind, hops in attempts]
    time.sleep(0.5)
    leaked = [e for e in srv.seen[before:] if MARK in e[3]]
    assert leaked == [], f"ND-typed messages left the host: {leaked} (sender saw {results})"
    # ND from a process at hop limit 255 to link-local still works after all that
    assert h.run(icmpv6_send, peer_ll, RS_, 255, ifname="v0") == "sent"
    assert secnet.wait_for(lambda: srv.received("icmpv6", RS_, MARK))


# -- item 2: the forward chain never lets the internet connect in -----------------------------
LAN_HOST6 = "2001:db8:1::2"          # a LAN host's public IPv6 address
LAN_HOST4 = "10.98.0.2"


@pytest.fixture
def cgi():
    with secnet.gateway() as (c, g, i):
        lan, internet = Servers(c), Servers(i)
        try:
            yield c, g, i, lan, internet
        finally:
            lan.close()
            internet.close()


@pytest.mark.parametrize("side", ["interfaces", "networks", "both"])
def test_forward_grants_serve_the_lan_and_never_let_the_internet_connect_in(cgi, side):
    c, g, i, lan, internet = cgi
    lan.tcp(22).udp(5353).start()
    internet.tcp(8080).tcp(22).udp(53).udp(67).start()
    lan_side = {"interfaces": {"lan_interfaces": ("v1",)},
                "networks": {"lan_networks": (net("10.98.0.0/24"), net("fd98::/64"),
                                              net("2001:db8:1::/64"))},
                "both": {"lan_interfaces": ("v1",),
                         "lan_networks": (net("10.98.0.0/24"), net("2001:db8:1::/64"))}}[side]
    # an attacker's AAAA equal to the LAN host's public address, resolved by any LAN client,
    # granted it -- and an A record the LAN's own address
    granted = ["198.51.100.80", "2001:db8:ff::80", LAN_HOST6, LAN_HOST4]
    g.run(load, spec(hooks=("output", "forward"), **lan_side), granted)
    # the control: the LAN client reaches granted addresses through the gateway, not others
    assert c.run(tcp_probe, "198.51.100.80", 8080) == "connected"
    assert c.run(tcp_probe, "2001:db8:ff::80", 8080) == "connected"
    assert c.run(tcp_probe, "198.51.100.81", 8080) != "connected"
    assert c.run(tcp_probe, "2001:db8:ff::81", 8080) != "connected"
    # the attacker on the internet: new connections to the granted LAN host are dropped, over
    # TCP and UDP, IPv6 and IPv4; nothing reached the LAN host
    assert i.run(tcp_probe, LAN_HOST6, 22) == "timeout"
    assert i.run(tcp_probe, LAN_HOST4, 22) == "timeout"
    assert i.run(udp_probe, LAN_HOST6, 5353) == "no reply"
    assert i.run(udp_probe, LAN_HOST4, 5353) == "no reply"
    assert not lan.received("udp", 5353, MARK)
    # ... also from a granted internet address (a grant is not a way in)
    i.sh("ip", "addr", "add", "198.51.100.80/32", "dev", "lo")
    assert i.run(tcp_probe, LAN_HOST4, 22) == "timeout"
    # in forward, no DNS but this gateway's (item 7) and no DHCP/ND free pass (items 1, 11),
    # even to a granted address: nothing reaches the internet
    assert c.run(udp_probe, "198.51.100.80", 53) != "reply"
    assert c.run(tcp_probe, "198.51.100.80", 853) != "connected"
    assert c.run(udp_probe, "198.51.100.81", 67, sport=68) != "reply"
    assert not internet.received("udp", 53, MARK) and not internet.received("udp", 67, MARK)
    # the LAN host itself (granted, inside) still talks out and gets its replies
    assert c.run(tcp_probe, "2001:db8:ff::80", 8080) == "connected"


def test_forward_nd_typed_messages_from_the_lan_do_not_leave(cgi):
    c, g, i, _lan, internet = cgi
    internet.icmpv6().start()
    g.run(load, spec(hooks=("output", "forward"), lan_interfaces=("v1",)))
    for kind, hops in ((135, 64), (136, 255), (133, 255), (131, 1)):
        c.run(icmpv6_send, "2001:db8:ff::7", kind, hops)
    time.sleep(0.5)
    assert not [e for e in internet.seen if MARK in e[3]]
    # the control: an echo to a granted address is forwarded and answered
    g.run(load, spec(hooks=("output", "forward"), lan_interfaces=("v1",)), ["2001:db8:ff::7"])
    assert c.run(secnet.ping6, "2001:db8:ff::7")


# -- item 12: the resolver exemption by uid *and* cgroup ---------------------------------------
@pytest.fixture
def cgroup():
    """A unique, empty cgroup v2 directory: (its path below the root, its directory)."""
    mount = cgroup2_mount()
    require([] if mount is not None else ["no cgroup v2 hierarchy is mounted"], "cgroup v2")
    name = f"nettrust-test-{secrets.token_hex(4)}"
    path = os.path.join(mount, name)
    os.mkdir(path)
    try:
        yield name, path
    finally:
        remove_cgroup(path)


def remove_cgroup(path: str) -> None:
    """rmdir, retried while the kernel still counts exited members (a moment after wait)."""
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    os.rmdir(path)


def test_resolver_exemption_needs_the_uid_and_the_cgroup(hi, cgroup):
    h, _i, srv = hi
    name, path = cgroup
    srv.udp(53).tcp(853).start()
    h.run(load, spec(resolver_cgroup=name))
    upstream = ("198.51.100.53", "2001:db8:ff::53")
    for addr in upstream:
        # the control: a process with the resolver's uid inside its cgroup resolves
        assert h.run(udp_probe, addr, 53, uid=RESOLVER_UID, cgroup=path) == "reply"
        assert h.run(tcp_probe, addr, 853, uid=RESOLVER_UID, cgroup=path) == "connected"
        # the same uid outside the cgroup (an alert command, the agent...) is not exempt
        assert h.run(udp_probe, addr, 53, uid=RESOLVER_UID) != "reply"
        assert h.run(tcp_probe, addr, 853, uid=RESOLVER_UID) != "connected"
        # nor is another uid inside the cgroup
        assert h.run(udp_probe, addr, 53, uid=OTHER_UID, cgroup=path) != "reply"
        assert h.run(udp_probe, addr, 53, cgroup=path) != "reply"
    assert len(srv.received("udp", 53, MARK)) == 2


def test_a_missing_or_replaced_cgroup_fails_closed(hi, cgroup):
    h, _i, srv = hi
    name, path = cgroup
    srv.udp(53).start()
    remove_cgroup(path)
    # the cgroup must exist when the ruleset is loaded: a clear error, and the ruleset is in
    # place with nobody exempt
    with pytest.raises(ChildError, match=r"resolver_cgroup: the cgroup '[^']+' does not exist"):
        h.run(load, spec(resolver_cgroup=name))
    assert "policy drop" in h.sh("nft", "list", "chain", "inet", T, "output").stdout
    assert h.run(udp_probe, "198.51.100.53", 53, uid=RESOLVER_UID) != "reply"
    assert h.run(tcp_probe, "198.51.100.80", 8080) != "connected"
    # created (the resolver's unit started) and loaded again: the resolver resolves
    os.mkdir(path)
    h.run(load, spec(resolver_cgroup=name))
    assert h.run(udp_probe, "198.51.100.53", 53, uid=RESOLVER_UID, cgroup=path) == "reply"
    # removed and made again under the same path (a restarted unit): the kernel holds the old
    # cgroup's id, so nothing matches until the ruleset is loaded again -- closed, not open
    remove_cgroup(path)
    os.mkdir(path)
    assert h.run(udp_probe, "198.51.100.53", 53, uid=RESOLVER_UID, cgroup=path) != "reply"
    h.run(load, spec(resolver_cgroup=name))
    assert h.run(udp_probe, "198.51.100.53", 53, uid=RESOLVER_UID, cgroup=path) == "reply"
    assert len(srv.received("udp", 53, MARK)) == 2


# -- items 7 and 12 with the real resolver: Unbound + the module, inside its cgroup -----------
def test_real_unbound_in_its_cgroup_resolves_and_nothing_else_reaches_dns(cgroup):
    """Unbound runs as ``unbound`` in the lab's host namespace, started inside the test's
    cgroup (as systemd starts it inside its unit's), with resolver_cgroup naming it."""
    from testbed.lab import _UNBOUND_FORCED, Lab
    from testbed.process import command_env, privilege_argv
    from testbed.product import NetTrustHost
    from testbed.zones import NSD_V4, NSD_V6

    name, path = cgroup
    config = f'[firewall]\nresolver_cgroup = "{name}"\n[lifecycle]\nliveness = false\n'
    with Lab() as lab:
        host = NetTrustHost(lab, config)
        conf = lab.work_dir / "unbound" / "cgroup.conf"
        conf.write_text(host.unbound_conf() + _UNBOUND_FORCED)
        os.chmod(conf, 0o644)
        # nsenter, not `ip netns exec`: the latter remounts /sys, hiding /sys/fs/cgroup from nft
        argv = ["nsenter", f"--net=/run/netns/{lab.host_ns}",
                *privilege_argv("unbound", ("net_admin", "net_bind_service")),
                "unbound", "-d", "-c", str(conf)]
        log = open(lab.work_dir / "logs" / "unbound-cgroup.log", "wb")

        def join_cgroup() -> None:                       # in the child, before exec
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=join_cgroup,
                                env=command_env("unbound", host.env()), start_new_session=True)
        hostns = secnet.Existing(lab.host_ns)
        try:
            assert secnet.wait_for(lambda: hostns.run(secnet.dns_query, "127.0.0.1", "localhost.")
                                   == "NOERROR", timeout=15), _log(lab)
            # the control: the resolver resolves (IPv4 and IPv6 upstream: NSD on both)
            dig = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=5", "+short",
                                   "www.fw.test", "A"]).stdout.split()
            assert dig == ["198.51.100.10"], _log(lab)
            assert hostns.run(secnet.dns_query, NSD_V4, "ns.test.", uid=RESOLVER_UID,
                              cgroup=path) == "NOERROR"
            # nobody else reaches NSD's port 53, not even with the resolver's uid outside its
            # cgroup, not even now that ns.test's address is granted (resolved through us)
            lab.run("host", ["dig", "@127.0.0.1", "+short", "ns.test", "A"])
            lab.run("host", ["dig", "@127.0.0.1", "+short", "ns.test", "AAAA"])
            for server in (NSD_V4, NSD_V6):
                assert hostns.run(secnet.dns_query, server, "ns.test.", uid=RESOLVER_UID) != "NOERROR"
                assert hostns.run(secnet.dns_query, server, "ns.test.") != "NOERROR"
                assert hostns.run(secnet.dns_query, server, "ns.test.", uid=OTHER_UID) != "NOERROR"
                # ... while its other ports are open to them through the grant
                assert hostns.run(tcp_probe, server, 80, uid=OTHER_UID) == "connected"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _log(lab) -> str:
    return (lab.work_dir / "logs" / "unbound-cgroup.log").read_text(errors="replace")[-3000:]


# -- item 12: the agent as its own user, its sockets reachable by Unbound through the group ---
def test_agent_as_its_own_user_is_reachable_by_the_resolver_through_its_group():
    """The agent runs as an unprivileged user other than the resolver's (``nobody:nogroup``
    stands in for ``nettrust:nettrust``, with the unit's UMask=0007); Unbound's uid reaches its
    sockets only as a member of the agent's group (SupplementaryGroups=nettrust)."""
    import grp
    import shutil
    import sys
    import tempfile
    agent_uid = pwd.getpwnam("nobody").pw_uid
    agent_gid = grp.getgrnam("nogroup").gr_gid
    top = tempfile.mkdtemp(prefix="nettrust-agent-", dir="/run")
    os.chmod(top, 0o755)
    for sub in ("state", "sock"):                       # StateDirectory=, RuntimeDirectory=
        os.mkdir(os.path.join(top, sub), 0o755)
        os.chown(os.path.join(top, sub), agent_uid, agent_gid)
    cfg = os.path.join(top, "nettrust.toml")
    report, tap = os.path.join(top, "sock", "agent.sock"), os.path.join(top, "sock", "dnstap.sock")
    with open(cfg, "w") as f:
        f.write(f'[stats]\nenabled = true\ndatabase = "{top}/state/stats.db"\n'
                f'report_socket = "{report}"\ndnstap_socket = "{tap}"\n[metrics]\nenabled = false\n')
    os.chmod(cfg, 0o644)
    with NetNS("ntsec-agent") as ns:
        agent = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, "setpriv", f"--reuid={agent_uid}", f"--regid={agent_gid}",
             "--clear-groups", "--", "sh", "-c",
             f"umask 007; exec {sys.executable} -m nettrust_core.cli -c {cfg} agent"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO})
        try:
            ready = secnet.wait_for(lambda: os.path.exists(report) and os.path.exists(tap), 15)
            assert ready, agent.stdout.read().decode() if agent.poll() is not None else "not ready"
            for path in (report, tap):
                st = os.stat(path)
                assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (agent_uid, agent_gid, 0o660)
            for path, kind in ((report, socket.SOCK_SEQPACKET), (tap, socket.SOCK_STREAM)):
                # the resolver's uid as a member of the agent's group: reaches it
                assert ns.run(secnet.unix_connect, path, kind, uid=RESOLVER_UID,
                              groups=(agent_gid,)) == "connected"
                # without the group (or any other user): refused by the file's permissions
                assert ns.run(secnet.unix_connect, path, kind, uid=RESOLVER_UID) == "Permission denied"
                assert ns.run(secnet.unix_connect, path, kind,
                              uid=pwd.getpwnam("daemon").pw_uid) == "Permission denied"
        finally:
            os.killpg(agent.pid, 15)
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, 9)
                agent.wait()
            shutil.rmtree(top, ignore_errors=True)

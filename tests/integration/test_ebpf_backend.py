"""The ``ebpf`` backend end to end on a host (issue 18): real Unbound with our module loading the
programs, pinning the maps on a private bpffs and attaching cgroup/connect4, connect6, sendmsg4
and sendmsg6 to a cgroup this test made (never the machine's root cgroup); real clients (dig,
Python sockets) inside that cgroup, in the lab's host namespace.

What a process in the cgroup notices: a connect or UDP send to an address no answer gave fails
at once with EPERM; after the answer it goes through; after the grant's deadline it fails again.
The control for every refusal: the same call from outside the cgroup reaches the address.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import pwd
import signal
import time

import pytest

from ebpf_util import bpffs, scratch_cgroup
from lab_util import dig, resolving_lab

from nettrust_core.firewall.ebpf import EbpfBackend
from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

EXTRA = {"fw.test": [
    "long 300 IN A 198.51.100.88", "long 300 IN AAAA 2001:db8:100::88",
    "shortsame 2 IN A 198.51.100.88", "shortsame 2 IN AAAA 2001:db8:100::88",
    "longlived 3 IN A 198.51.100.90", "longlived 3 IN AAAA 2001:db8:100::90",
]}
#: Unbound as the unbound user: loading and attaching needs CAP_BPF and CAP_PERFMON besides
#: CAP_NET_ADMIN (measured: docs/ reference ebpf.md, "Privileges").
CAPS = ("net_admin", "net_bind_service", "bpf", "perfmon")
PROBE = r"""
import errno, json, socket, sys
address, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
out = {}
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect((address, port)); out["tcp"] = "ok"
except OSError as exc:
    out["tcp"] = errno.errorcode.get(exc.errno, str(exc))
s.close()
u = socket.socket(family, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", (address, 9)); out["udp"] = "ok"
except OSError as exc:
    out["udp"] = errno.errorcode.get(exc.errno, str(exc))
print(json.dumps(out))
"""


def config(pin: str, cgroup: str, backends: str = '["ebpf"]') -> str:
    return f"""
[grants]
min_ttl = "1s"
max_ttl = "1h"
grace = "2s"
[lifecycle]
liveness = false
[firewall]
backends = {backends}
[ebpf]
pin_path = "{pin}"
cgroup = "{cgroup}"
map_size = 4096
"""


class Env:
    def __init__(self, lab, pin: str, cgroup: str) -> None:
        self.lab, self.pin, self.cgroup = lab, pin, cgroup

    def probe(self, address: str, port: int = 7, *, inside: bool = True) -> dict[str, str]:
        """TCP connect and UDP sendto from a process in the test cgroup (or, the control,
        outside it)."""
        py = ["/usr/bin/python3", "-c", PROBE, address, str(port)]
        argv = (["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh", *py]
                if inside else py)
        return json.loads(self.lab.run("host", argv, timeout=20).stdout)

    def dig_inside(self, name: str, rtype: str) -> str:
        out = self.lab.run("host", ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"',
                                    "sh", "dig", "@127.0.0.1", "+tries=1", "+time=3", name, rtype],
                           check=False).stdout
        return "NOERROR" if "status: NOERROR" in out else out

    def maps(self) -> EbpfBackend:
        return EbpfBackend(pin_path=os.path.join(self.pin, "nt"))


@contextlib.contextmanager
def ebpf_host(backends: str = '["ebpf"]', name: str = "ebpf"):
    with bpffs() as fs, scratch_cgroup() as cg, resolving_lab(EXTRA) as lab:
        pin = os.path.join(fs, "nt")
        os.mkdir(pin)
        unbound = pwd.getpwnam("unbound")
        os.chown(pin, unbound.pw_uid, unbound.pw_gid)     # Unbound pins its maps here
        host = NetTrustHost(lab, config(pin, cg, backends), name=name)
        host.start(caps=CAPS)
        env = Env(lab, fs, cg)
        try:
            yield host, env
        finally:
            lab.stop_unbound()
            host.nettrust("remove", check=False)


@pytest.fixture(scope="module")
def host_env():
    with ebpf_host() as pair:
        yield pair


@pytest.mark.parametrize("family,address", [("4", "198.51.100.90"), ("6", "2001:db8:100::90")])
def test_refused_before_the_answer_allowed_after_refused_after_the_deadline(host_env, family,
                                                                           address):
    nt, env = host_env
    eperm = errno.errorcode[errno.EPERM]
    assert env.probe(address) == {"tcp": eperm, "udp": eperm}
    assert env.probe(address, inside=False) == {"tcp": "ok", "udp": "ok"}    # control
    t0 = time.monotonic()
    assert env.dig_inside("longlived.fw.test", "A" if family == "4" else "AAAA") == "NOERROR"
    assert env.probe(address) == {"tcp": "ok", "udp": "ok"}
    assert address in nt.grants()
    left = env.maps().lookup(ipaddress.ip_address(address))
    assert left is not None and 3 < left <= 5.1                              # TTL 3 + grace 2
    time.sleep(max(0.0, 5.3 - (time.monotonic() - t0)))
    assert env.probe(address) == {"tcp": eperm, "udp": eperm}
    assert address not in nt.grants()


def test_status_shows_links_map_fill_and_refusals(host_env):
    nt, env = host_env
    env.probe("198.18.20.20")
    out = json.loads(nt.nettrust("status", "--json").stdout)
    text = json.dumps(out)
    assert "cgroup_nt_connect4" in text and "cgroup_nt_sendmsg6" in text
    text_out = nt.nettrust("status").stdout
    assert "attached cgroup_nt_connect4: program" in text_out and "drop_no_grant=" in text_out
    status = env.maps().status()
    assert status.present and status.hooks == ("output",)
    assert status.counters["drop_no_grant"]["packets"] >= 2
    assert set(status.sets) == {"allow4", "allow6", "pair4", "pair6"}


def test_kill_9_leaves_enforcement_and_restart_adopts_unshortened(host_env):
    nt, env = host_env
    for rtype in ("A", "AAAA"):
        assert dig(nt.lab, "long.fw.test", rtype).status == "NOERROR"
    before = env.maps().lookup(ipaddress.ip_address("198.51.100.88"))
    assert before is not None and before > 290
    nt.kill(signal.SIGKILL)
    try:
        eperm = errno.errorcode[errno.EPERM]
        assert env.probe("198.18.20.20")["tcp"] == eperm                 # never answered
        assert env.probe("2001:db8:118::1414")["tcp"] == eperm
        assert env.probe("198.51.100.88") == {"tcp": "ok", "udp": "ok"}   # still granted
        assert env.probe("2001:db8:100::88")["tcp"] == "ok"
    finally:
        nt.start()
    for rtype in ("A", "AAAA"):
        assert dig(nt.lab, "shortsame.fw.test", rtype).status == "NOERROR"   # TTL 2, same address
    grants = nt.grants()
    for address in ("198.51.100.88", "2001:db8:100::88"):
        assert grants[address]["expires_in"] > 280, grants[address]
        assert env.probe(address)["tcp"] == "ok"


def test_remove_detaches_and_unpins():
    with ebpf_host(name="ebpf-remove") as (nt, env):
        eperm = errno.errorcode[errno.EPERM]
        assert env.probe("198.51.100.88")["tcp"] == eperm               # never answered here
        nt.stop()
        nt.nettrust("remove")
        assert not os.path.exists(os.path.join(env.pin, "nt"))
        assert env.probe("198.51.100.88") == {"tcp": "ok", "udp": "ok"}


def test_both_backends_get_the_grant():
    with ebpf_host('["nftables", "ebpf"]', name="ebpf-both") as (nt, env):
        address = "198.51.100.88"
        assert env.probe(address)["tcp"] == errno.errorcode[errno.EPERM]
        assert env.probe(address, inside=False)["tcp"] != "ok"                # nftables refuses
        assert dig(nt.lab, "long.fw.test").status == "NOERROR"
        left = env.maps().lookup(ipaddress.ip_address(address))
        assert left is not None and left > 290                                 # the eBPF map
        assert nt.grants()[address]["expires_in"] > 290                        # the nft set
        assert env.probe(address)["tcp"] == "ok"
        assert env.probe(address, inside=False)["tcp"] == "ok"


def test_dhcp_broadcast_passes_other_broadcasts_refused(host_env):
    _nt, env = host_env
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "try:\n    s.sendto(b'x', ('255.255.255.255', int(sys.argv[1]))); print('ok')\n"
            "except OSError as exc:\n    print(exc.errno)\n")
    def send(port: int) -> str:
        argv = ["sh", "-c", f'echo $$ > {env.cgroup}/cgroup.procs && exec "$@"', "sh",
                "/usr/bin/python3", "-c", code, str(port)]
        return env.lab.run("host", argv).stdout.strip()
    assert send(67) == "ok"                                   # a DHCP client's DISCOVER
    assert send(68) == str(errno.EPERM)                       # control: any other broadcast

"""One resolver protecting several network namespaces (issue 16, ``firewall.namespaces``).

A real Unbound with our module runs in the lab's host namespace; three client namespaces made
here (``<token>-c1`` … ``-c3``) each reach the lab's internet namespace over a veth pair of
their own.  Unbound runs as ``unbound`` with CAP_NET_ADMIN, CAP_NET_BIND_SERVICE and
CAP_SYS_ADMIN (entering a namespace needs it).  Clients connect from inside the client
namespaces with a real socket (``ip netns exec … python3``).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import pytest
from lab_util import dig, resolving_lab

from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_sets import grant_set_of
from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

EXTRA = {"fw.test": [
    "every 300 IN A 198.51.100.61", "every 300 IN AAAA 2001:db8:100::61",
    "late 300 IN A 198.51.100.62",
    "after 300 IN A 198.51.100.63",
    "www.only3 300 IN A 198.51.100.64",
    "full.only3 300 IN A 198.51.100.65",
]}
CAPS = ("net_admin", "net_bind_service", "sys_admin")
PROBE = """
import json, socket, sys
try:
    socket.create_connection((sys.argv[1], 80), timeout=0.9).close(); print(json.dumps(True))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""


def add_client_ns(lab, index: int) -> str:
    """A namespace joined to the lab's internet namespace by its own veth pair."""
    ns = f"{lab.token}-c{index}"
    inner, outer = f"nt{index}c", f"nt{index}n"
    ip = ["ip"]
    subprocess.run([*ip, "netns", "add", ns], check=True)
    subprocess.run([*ip, "link", "add", "name", inner, "netns", ns, "type", "veth", "peer", "name",
                    outer, "netns", lab.net_ns], check=True)
    batch_c = (f"link set lo up\nlink set {inner} up\naddr add 10.77.{index}.2/24 dev {inner}\n"
               f"addr add fd77:{index}::2/64 dev {inner} nodad\n"
               f"route add default via 10.77.{index}.1\nroute add default via fd77:{index}::1\n")
    batch_n = (f"link set {outer} up\naddr add 10.77.{index}.1/24 dev {outer}\n"
               f"addr add fd77:{index}::1/64 dev {outer} nodad\n")
    subprocess.run([*ip, "-n", ns, "-batch", "-"], input=batch_c, text=True, check=True)
    subprocess.run([*ip, "-n", lab.net_ns, "-batch", "-"], input=batch_n, text=True, check=True)
    return ns


def del_ns(ns: str) -> None:
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def reach(ns: str, address: str):
    out = subprocess.run(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", PROBE, address],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


def has_ruleset(ns: str) -> bool:
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "chain", "inet", "nettrust",
                           "output"], capture_output=True, text=True)
    return proc.returncode == 0 and "policy drop" in proc.stdout


def in_set(ns: str, address: str) -> bool:
    name = grant_set_of(RulesetSpec(), 0, ipaddress.ip_address(address))
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "nettrust",
                           name], capture_output=True, text=True)
    return address in proc.stdout




@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        made = []
        try:
            for i in (1, 2, 3):
                made.append(add_client_ns(lab, i))
            lab.clients = made
            yield lab
        finally:
            for ns in made + [f"{lab.token}-c4"]:
                del_ns(ns)


@pytest.fixture(scope="module")
def nt(lab):
    config = f"""
[grants]
min_ttl = "1s"
[firewall]
backends = ["nftables", "namespaces"]
namespaces = ["{lab.token}-c*"]
namespace_allow = ["{lab.token}-c3 **.only3.fw.test"]
[lifecycle]
liveness = false
unauthorized = false
"""
    host = NetTrustHost(lab, config)
    host.start(caps=CAPS)
    yield host
    lab.stop_unbound()


def test_every_namespace_has_the_ruleset_and_nothing_unanswered_passes(nt, lab):
    for ns in lab.clients:
        assert has_ruleset(ns), ns
        assert reach(ns, "198.51.100.61") == "ConnectionRefusedError", ns


def test_one_answer_opens_the_address_in_every_namespace(nt, lab):
    c1, c2, _c3 = lab.clients
    assert reach(c1, "198.51.100.61") == "ConnectionRefusedError"          # control: not yet
    assert dig(lab, "every.fw.test").answers == ["198.51.100.61"]
    assert dig(lab, "every.fw.test", "AAAA").answers == ["2001:db8:100::61"]
    for ns in (c1, c2):
        assert reach(ns, "198.51.100.61") is True, ns
        assert reach(ns, "2001:db8:100::61") is True, ns
        assert reach(ns, "198.51.100.62") == "ConnectionRefusedError", ns     # never answered


def test_per_namespace_policy_refuses_a_name_another_namespace_may_reach(nt, lab):
    c1, _c2, c3 = lab.clients
    assert dig(lab, "every.fw.test").answers == ["198.51.100.61"]
    assert reach(c1, "198.51.100.61") is True
    assert reach(c3, "198.51.100.61") == "ConnectionRefusedError"    # c3 may reach only3 names
    assert not in_set(c3, "198.51.100.61")
    assert dig(lab, "www.only3.fw.test").answers == ["198.51.100.64"]
    assert reach(c3, "198.51.100.64") is True                         # its own names: open
    assert reach(c1, "198.51.100.64") is True


def test_a_namespace_created_after_start_gets_ruleset_and_live_grants_within_a_second(nt, lab):
    assert dig(lab, "late.fw.test").answers == ["198.51.100.62"]
    ns = add_client_ns(lab, 4)
    try:
        start = time.monotonic()
        while not (has_ruleset(ns) and in_set(ns, "198.51.100.62")):
            assert time.monotonic() - start < 1.0, "ruleset and grants not installed within 1 s"
            time.sleep(0.05)
        assert reach(ns, "198.51.100.62") is True                 # replayed grant
        assert reach(ns, "198.51.100.63") == "ConnectionRefusedError"
        assert dig(lab, "after.fw.test").answers == ["198.51.100.63"]
        assert reach(ns, "198.51.100.63") is True                 # and it receives new ones
    finally:
        del_ns(ns)



def test_a_namespace_refusing_a_write_fails_the_answer_closed_everywhere(nt, lab):
    c1, _c2, c3 = lab.clients
    nft_c3 = ["ip", "netns", "exec", c3, "nft"]
    # c3's table replaced by one whose set for the address has the wrong key type: the kernel
    # refuses the write (EINVAL; not "missing", which would be repaired, nor "full", which evicts).
    name = grant_set_of(RulesetSpec(), 0, ipaddress.ip_address("198.51.100.65"))
    subprocess.run([*nft_c3, "delete table inet nettrust; add table inet nettrust; add set inet "
                    f"nettrust {name} {{ type ipv6_addr; flags timeout; }}"], check=True)
    try:
        assert dig(lab, "full.only3.fw.test").status == "SERVFAIL"
        assert not in_set(c1, "198.51.100.65")         # rolled back where it was written
        assert reach(c1, "198.51.100.65") == "ConnectionRefusedError"
    finally:
        subprocess.run([*nft_c3, "delete table inet nettrust"], check=True)
    # Control: the table is now missing, which the next write repairs; the answer goes through.
    assert dig(lab, "full.only3.fw.test").status == "NOERROR"
    assert has_ruleset(c3)
    assert reach(c1, "198.51.100.65") is True and reach(c3, "198.51.100.65") is True


def test_a_deleted_namespace_does_not_break_answers_for_the_others(nt, lab):
    c1, c2, c3 = lab.clients
    del_ns(c2)
    lab.clients = [c1, c3]
    for i in range(5):
        name = f"h{2400 + i}.fw.test"
        got = dig(lab, name).answers
        assert got and got[0][0].isdigit(), (name, got)
        assert reach(c1, got[0]) is True
    deadline = time.monotonic() + 2
    while f"network namespace {c2} is gone" not in nt.log():     # the scan has dropped it
        assert time.monotonic() < deadline, nt.log()[-2000:]
        time.sleep(0.05)
    got = dig(lab, "h2410.fw.test").answers
    assert got and reach(c1, got[0]) is True and reach(c3, got[0]) == "ConnectionRefusedError"
    assert "cannot" not in nt.log().split(f"{c2} is gone", 1)[1]

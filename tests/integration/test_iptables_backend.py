"""The iptables backends against the kernel, each in a namespace of its own (issue 16).

What ``iptables-save``/``ipset`` show after ``ensure``, grants with timeouts and comments, the
repair of a removed ruleset on the next grant (once), the refusal to mix flavours, revoke, flush
and remove.  End to end through Unbound: tests/integration/test_core_slice.py (``every_backend``).
"""

from __future__ import annotations

import ipaddress

import pytest

from netns_util import ChildError, NetNS
from nettrust_core.firewall.base import Grant, RulesetSpec
from nettrust_core.firewall.iptables import IptablesLegacyBackend, IptablesNftBackend

pytestmark = pytest.mark.integration

FLAVOURS = {"legacy": IptablesLegacyBackend, "nft": IptablesNftBackend}
SPEC = RulesetSpec(static_hosts=(ipaddress.ip_address("192.0.2.53"),))
A4, A6 = ipaddress.ip_address("198.51.100.7"), ipaddress.ip_address("2001:db8:100::7")


@pytest.fixture
def ns():
    with NetNS("ntipt") as n:
        yield n


def _ensure_and_grant(flavour: str):
    b = FLAVOURS[flavour](SPEC)
    b.ensure()
    b.ensure()                                   # idempotent: one jump, same rules
    b.grant([Grant(A4, 30, "a.fw.test"), Grant(A6, 60, "b.fw.test")])
    return b.lookup(A4), b.lookup(ipaddress.ip_address("198.51.100.8")), b.status().to_dict()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ensure_programs_chains_jump_and_sets(ns, flavour):
    left, unknown, status = ns.run(_ensure_and_grant, flavour)
    assert 29 < left <= 30 and unknown is None
    assert status["present"] and status["hooks"] == ["output"] and status["policy"] == "drop"
    for tool in ("iptables", "ip6tables"):
        saved = ns.sh(f"{tool}-{flavour}-save", "-t", "filter").stdout
        assert saved.count("-A OUTPUT -j NETTRUST") == 1, saved
        assert "-A NETTRUST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" in saved
        ours = [ln for ln in saved.splitlines() if ln.startswith("-A NETTRUST ")]
        assert ours[-1].startswith("-A NETTRUST -j REJECT"), ours      # nothing passes the end
    v4 = ns.sh("ipset", "list", "nettrust4").stdout
    assert "198.51.100.7 timeout" in v4 and 'comment "a.fw.test"' in v4
    assert "2001:db8:100::7 timeout" in ns.sh("ipset", "list", "nettrust6").stdout
    assert "192.0.2.53" in ns.sh("ipset", "list", "nettrust-static4").stdout
    assert "nettrust-static4-new" not in ns.sh("ipset", "list", "-n").stdout


def _removed_then_granted(flavour: str):
    b = FLAVOURS[flavour](SPEC)
    b.ensure()
    FLAVOURS[flavour](SPEC).remove()             # someone removes it all (another process)
    b.grant([Grant(A4, 30, "a.fw.test")])        # repairs once, then writes
    return b.repairs, b.lookup(A4) is not None


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_removed_ruleset_is_repaired_once_on_the_next_grant(ns, flavour):
    repairs, granted = ns.run(_removed_then_granted, flavour)
    assert repairs == 1 and granted
    assert ns.sh(f"iptables-{flavour}-save").stdout.count("-A OUTPUT -j NETTRUST") == 1


def _mixed(first: str, second: str):
    FLAVOURS[first](SPEC).ensure()
    FLAVOURS[second](SPEC).ensure()


def test_refuses_to_mix_flavours(ns):
    with pytest.raises(ChildError, match=r"NETTRUST chain exists in iptables-legacy"):
        ns.run(_mixed, "legacy", "nft")
    assert "NETTRUST" not in ns.sh("iptables-nft-save").stdout        # nothing half-installed


def test_refuses_when_the_host_uses_the_other_flavour(ns):
    ns.sh("iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    with pytest.raises(ChildError, match=r'configure the "iptables-nft" backend'):
        ns.run(lambda: IptablesLegacyBackend(SPEC).ensure())
    ns.run(lambda: IptablesNftBackend(SPEC).ensure())                 # control: that one works


def _revoke_flush_remove(flavour: str):
    b = FLAVOURS[flavour](SPEC)
    b.ensure()
    b.grant([Grant(A4, 30, "a"), Grant(A6, 30, "b")])
    b.revoke([A4, ipaddress.ip_address("198.51.100.99")])      # an absent one is ignored
    after_revoke = (b.lookup(A4), b.lookup(A6) is not None)
    b.flush_grants()
    after_flush = (b.lookup(A6), b.status(count_elements=False).present)
    b.remove()
    return after_revoke, after_flush, b.status().present


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_revoke_flush_and_remove(ns, flavour):
    after_revoke, after_flush, present = ns.run(_revoke_flush_remove, flavour)
    assert after_revoke == (None, True)
    assert after_flush == (None, True)              # flush keeps the chains (fail closed)
    assert present is False
    assert "NETTRUST" not in ns.sh(f"iptables-{flavour}-save").stdout
    assert "NETTRUST" not in ns.sh(f"ip6tables-{flavour}-save").stdout
    assert ns.sh("ipset", "list", "-n").stdout.strip() == ""

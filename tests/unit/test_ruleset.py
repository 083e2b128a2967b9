"""From the config to the ruleset (issue 10): the keys that shape what the chains let through,
their errors, and the order of the rules the nftables backend emits (no kernel needed; the
kernel's view is in tests/integration/test_nftables_backend.py and test_security_ruleset.py)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from nettrust_core.config import parse_config
from nettrust_core.errors import ConfigError, FirewallError
from nettrust_core.firewall import nftables, nftables_cgroup, nftables_rules
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_cgroup import resolver_cgroup_match
from nettrust_core.firewall.nftables_rules import chain_rules, static_set_declarations
from nettrust_core.ruleset import ruleset_spec

ip = ipaddress.ip_address
net = ipaddress.ip_network


def parse(text: str):
    return parse_config(text, "test.toml")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


# -- config --------------------------------------------------------------------------------
def test_forward_hook_without_a_lan_side_is_refused_naming_file_key_and_line():
    err = refused('[firewall]\n# a gateway\nhooks = ["output", "forward"]\n')
    assert (err.file, err.key, err.line) == ("test.toml", "firewall.hooks[1]", 3)
    assert "lan_interfaces" in err.message and "lan_networks" in err.message


def test_forward_hook_with_either_lan_key_loads():
    f = parse('[firewall]\nhooks = ["output", "forward"]\nlan_interfaces = ["lan0", "wlan0"]\n').firewall
    assert f.lan_interfaces == ("lan0", "wlan0") and f.lan_networks == ()
    f = parse('[firewall]\nhooks = ["forward"]\nlan_networks = ["192.168.1.0/24", "2001:db8:1::/64"]\n').firewall
    assert f.lan_networks == (net("192.168.1.0/24"), net("2001:db8:1::/64"))


@pytest.mark.parametrize("text, key, words", [
    ('lan_interfaces = ["lan*"]', "firewall.lan_interfaces[0]", "no wildcards"),
    ('lan_interfaces = ["a-very-long-ifname"]', "firewall.lan_interfaces[0]", "interface name"),
    ('lan_networks = ["192.168.1.0/33"]', "firewall.lan_networks[0]", ""),
    ('dhcp_servers = ["192.168.1.0/24"]', "firewall.dhcp_servers[0]", ""),
    ('resolver_cgroup = "system.slice/../x"', "firewall.resolver_cgroup", "cgroup path"),
    ('resolver_cgroup = "a b"', "firewall.resolver_cgroup", "cgroup path"),
    ('resolver_user = ""\nresolver_cgroup = "system.slice/unbound.service"',
     "firewall.resolver_cgroup", "needs resolver_user"),
])
def test_bad_firewall_values_are_refused_where_they_are_written(text, key, words):
    err = refused(f"[firewall]\n{text}\n")
    assert err.key == key and err.line == text.count("\n") + 2
    assert words in err.message


def test_new_keys_round_trip_through_the_effective_config():
    c = parse('[firewall]\nresolver_cgroup = "/system.slice/unbound.service/"\n'
              'dhcp_servers = ["192.168.1.1", "2001:db8::547"]\n')
    assert c.firewall.resolver_cgroup == "system.slice/unbound.service"
    fw = c.to_dict()["firewall"]
    assert fw["resolver_cgroup"] == "system.slice/unbound.service"
    assert fw["dhcp_servers"] == ["192.168.1.1", "2001:db8::547"]
    assert fw["lan_interfaces"] == [] and fw["lan_networks"] == []


# -- config -> spec ------------------------------------------------------------------------
def test_forward_mode_upstreams_are_the_resolvers_not_static_hosts():
    c = parse('[upstream]\nmode = "forward"\nservers = ["9.9.9.9", "2620:fe::fe@5353", "9.9.9.9"]\n'
              '[reachable]\nhosts = ["192.0.2.10"]\n[firewall]\nresolver_user = "root"\n')
    spec = ruleset_spec(c)
    assert spec.static_hosts == (ip("192.0.2.10"),)
    assert spec.upstreams == ((ip("9.9.9.9"), 53), (ip("2620:fe::fe"), 5353))
    assert spec.resolver_uid == 0
    tls = parse('[upstream]\nmode = "forward"\ntls = true\nservers = ["9.9.9.9#dns.quad9.net"]\n'
                '[firewall]\nresolver_user = "root"\n')
    assert ruleset_spec(tls).upstreams == ((ip("9.9.9.9"), 853),)
    assert ruleset_spec(parse('[firewall]\nresolver_user = "root"\n')).upstreams == ()


def test_forward_mode_without_a_resolver_user_is_refused_unless_the_upstream_is_local():
    c = parse('[upstream]\nmode = "forward"\nservers = ["9.9.9.9"]\n[firewall]\nresolver_user = ""\n')
    with pytest.raises(ConfigError) as info:
        ruleset_spec(c)
    assert (info.value.key, info.value.line) == ("firewall.resolver_user", 5)
    assert "could not reach its upstream 9.9.9.9" in info.value.message
    local = parse('[upstream]\nmode = "forward"\nservers = ["127.0.0.1@5353"]\n[firewall]\n'
                  'resolver_user = ""\n')
    assert ruleset_spec(local).resolver_uid is None          # loopback stays open to all


def test_spec_carries_the_lan_side_dhcp_servers_and_cgroup():
    c = parse('[firewall]\nresolver_user = "root"\nhooks = ["output", "forward"]\n'
              'lan_interfaces = ["lan0"]\nlan_networks = ["10.0.0.0/24"]\n'
              'dhcp_servers = ["10.0.0.1"]\nresolver_cgroup = "system.slice/unbound.service"\n')
    spec = ruleset_spec(c)
    assert (spec.lan_interfaces, spec.lan_networks, spec.dhcp_servers, spec.resolver_cgroup) == (
        ("lan0",), (net("10.0.0.0/24"),), (ip("10.0.0.1"),), "system.slice/unbound.service")


# -- the rules, in order -------------------------------------------------------------------
def kinds(rules) -> list[str]:
    """A short name for each rule, from what it matches and does."""
    out = []
    for rule in rules:
        text = repr(rule)
        if "'ct'" in text and "established" in text:
            out.append("established")
        elif "'oif'" in text:
            out.append("lo")
        elif "'iifname'" in text or "'saddr'" in text or "'nfproto'" in text:
            out.append("lan-side")
        elif "icmpv6" in text:
            out.append("icmpv6")
        elif "'sport'" in text:
            out.append("dhcp")
        elif "skuid" in text:
            out.append("resolver")
        elif "[53, 853]" in text:
            out.append("dns-block")
        elif "@static" in text or "@allow" in text:
            out.append("sets")
        elif "'log'" in text:
            out.append("log")
        else:
            out.append("refuse")
    return [k for i, k in enumerate(out) if i == 0 or out[i - 1] != k]


FULL = RulesetSpec(resolver_uid=1, hooks=("output", "forward"), lan_interfaces=("lan0",),
                   lan_networks=(net("10.0.0.0/24"),), log_group=5)


def test_output_rules_come_in_the_documented_order():
    assert kinds(chain_rules(FULL, "output")) == [
        "established", "lo", "icmpv6", "dhcp", "resolver", "dns-block", "sets", "log", "refuse"]


def test_forward_rules_check_the_lan_side_first_and_give_no_free_pass():
    assert kinds(chain_rules(FULL, "forward")) == [
        "established", "lan-side", "dns-block", "sets", "log", "refuse"]


def test_the_module_docstring_lists_the_rules_in_the_order_they_are_emitted():
    doc = nftables_rules.__doc__
    output = doc[doc.index("chain output {"):doc.index("chain forward {")]
    forward = doc[doc.index("chain forward {"):doc.index("Nothing ICMPv6")]
    markers = [("established", "ct state"), ("lo", 'oif "lo"'), ("icmpv6", "icmpv6 type"),
               ("dhcp", "udp sport 68"), ("resolver", "meta skuid U"),
               ("dns-block", "th dport { 53, 853 } counter"), ("sets", "ip daddr @static4"),
               ("lan-side", "iifname !="), ("log", "log group"), ("refuse", 'counter name "rejected" reject with tcp')]
    for part, chain in ((output, "output"), (forward, "forward")):
        found = sorted((part.find(text), kind) for kind, text in markers if part.find(text) >= 0)
        documented = [kind for _pos, kind in found]
        assert documented == kinds(chain_rules(FULL, chain))


def test_a_forward_spec_without_a_lan_side_is_refused_by_the_backend():
    with pytest.raises(FirewallError, match="forward hook without"):
        nftables.validate_spec(RulesetSpec(hooks=("output", "forward")))


# -- the resolver's cgroup -----------------------------------------------------------------
def test_cgroup_match_is_relative_to_where_nft_looks(tmp_path, monkeypatch):
    monkeypatch.setattr(nftables_cgroup, "CGROUP_ROOT", str(tmp_path))
    (tmp_path / "unified" / "system.slice" / "unbound.service").mkdir(parents=True)
    spec = RulesetSpec(resolver_uid=1, resolver_cgroup="system.slice/unbound.service")
    assert resolver_cgroup_match(spec, str(tmp_path / "unified")) == \
        'socket cgroupv2 level 2 "unified/system.slice/unbound.service"'
    (tmp_path / "system.slice" / "unbound.service").mkdir(parents=True)      # pure cgroup v2
    assert resolver_cgroup_match(spec, str(tmp_path)) == \
        'socket cgroupv2 level 2 "system.slice/unbound.service"'
    with pytest.raises(FirewallError, match=r"the cgroup 'system.slice/nope' does not exist"):
        resolver_cgroup_match(RulesetSpec(resolver_uid=1, resolver_cgroup="system.slice/nope"),
                              str(tmp_path / "unified"))
    with pytest.raises(FirewallError, match="where nft looks"):
        other = tmp_path.parent / "elsewhere"
        (other / "x").mkdir(parents=True, exist_ok=True)
        resolver_cgroup_match(RulesetSpec(resolver_uid=1, resolver_cgroup="x"), str(other))


def test_cgroup_chain_is_declared_in_nft_syntax_and_left_empty_when_missing():
    spec = RulesetSpec(table="t", resolver_uid=1, resolver_cgroup="a/b")
    text = static_set_declarations(spec, 'socket cgroupv2 level 2 "a/b"')
    assert re.search(r'add chain inet t resolver_cgroup\nflush chain inet t resolver_cgroup\n'
                     r'add rule inet t resolver_cgroup socket cgroupv2 level 2 "a/b" accept\n$', text)
    empty = static_set_declarations(spec, None)           # missing cgroup: exempt nobody
    assert "flush chain inet t resolver_cgroup\n" in empty and "add rule" not in empty
    assert "resolver_cgroup" not in static_set_declarations(RulesetSpec(table="t", resolver_uid=1))


# -- grant sets spread by address ------------------------------------------------------------
def test_grant_sets_are_sixteen_per_version_shared_by_the_instances():
    from nettrust_core.firewall.nftables_sets import all_grant_sets, grant_sets
    one = grant_sets(RulesetSpec(), 0)
    assert one[4][:3] == ("allow4", "allow4_s1", "allow4_s2") and len(one[4]) == len(one[6]) == 16
    two = RulesetSpec(instances=2)
    assert grant_sets(two, 1)[6] == ("allow6_1", *(f"allow6_1_s{j}" for j in range(1, 8)))
    assert len(all_grant_sets(two)) == 32 == len(set(n for _k, _v, n in all_grant_sets(two)))
    assert len(all_grant_sets(RulesetSpec(instances=64))) == 128      # at least one each
    # every set has its accept rule, in order: static first, then each instance's shards
    rules = [str(r) for r in chain_rules(two, "output")]
    named = [n for r in rules for n in re.findall(r"'@([\w.]+)'", r)]
    assert named == ["static4", "static6", *(n for _k, _v, n in all_grant_sets(two))]


def test_an_address_has_one_set_for_good_and_the_sets_fill_evenly():
    from collections import Counter

    from nettrust_core.firewall.nftables_sets import grant_set_of, grant_shard
    spec = RulesetSpec()
    # fixed for good: upgrades, lookups and revocations of older grants depend on it
    assert grant_set_of(spec, 0, ip("198.51.100.1")) == "allow4_s5"          # (1 ^ 100) % 16
    assert grant_set_of(spec, 0, ip("2001:db8::10")) == "allow6"             # (0x10 ^ 0) % 16
    assert grant_set_of(RulesetSpec(instances=2), 1, ip("198.51.100.1")) == "allow4_1_s5"
    base = int(ip("10.0.0.0"))
    v4 = Counter(grant_shard(ipaddress.IPv4Address(base + i).packed, 16) for i in range(64_000))
    v6 = Counter(grant_shard(ipaddress.IPv6Address(i << 64 | 0x2001_0db8 << 96 | i * 7919).packed, 16)
                 for i in range(64_000))
    assert set(v4.values()) == {4000}                                        # sequential IPv4
    assert min(v6.values()) > 3600 and max(v6.values()) < 4400, v6


def test_the_answer_paths_elements_go_where_the_set_names_say_with_the_bytes_ipaddress_gives():
    """nftables_elements (compiled) reaches an address's bytes without ipaddress's properties:
    same bytes, same set as grant_set_of, grouped in the order met, errors made by the caller."""
    from nettrust_core.firewall.base import Grant
    from nettrust_core.firewall.nftables_elements import grant_elements
    from nettrust_core.firewall.nftables_sets import grant_set_of, grant_sets
    from nettrust_core.netlink import nftables as nl
    from nettrust_core.networks import address_bytes, address_int, packed_address

    addresses = [ip("198.51.100.1"), ip("2001:db8::10"), ip("198.51.100.17"), ip("198.51.100.33"),
                 packed_address(bytes([203, 0, 113, 9]), 4), ip("::ffff:192.0.2.1")]
    for a in addresses:
        assert address_bytes(a) == a.packed and address_int(a) == int(a)
    spec = RulesetSpec(instances=2)
    grants = [Grant(a, 1.5, "a.example") for a in addresses]
    groups = grant_elements(grants, grant_sets(spec, 1), None, -1, ValueError)
    assert [(name, addrs) for name, _e, addrs in groups] == [
        ("allow4_1_s5", [addresses[0], addresses[2], addresses[3]]),    # 1, 17, 33 ^ 100: 5 of 8
        ("allow6_1", [addresses[1]]), ("allow4_1", [addresses[4]]),          # 9 ^ 113: 0 of 8
        ("allow6_1_s3", [addresses[5]])]                                      # 1 ^ 2
    for name, elements, addrs in groups:
        assert {grant_set_of(spec, 1, a) for a in addrs} == {name}
        udata = nl.comment_udata("a.example")
        assert elements == [nl.element(a.packed, 1500, udata) for a in addrs]

    def refuse(message, **fields):
        return LookupError(message, fields)

    with pytest.raises(LookupError, match="positive number of seconds"):
        grant_elements([Grant(addresses[0], 0.0)], grant_sets(spec, 1), None, -1, refuse)
    with pytest.raises(LookupError, match="needs gateway.per_client"):
        grant_elements([Grant(addresses[0], 1.0, "", ip("192.0.2.7"))], grant_sets(spec, 1), None,
                       -1, refuse)

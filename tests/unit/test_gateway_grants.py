"""Gateway mode without a kernel (issue 13): the per-client ruleset as data, the config keys,
the per-client grant map's never-shorten rule, and the authorizer's per-client path with the
recording fake standing in for nftables.  The kernel's view: tests/integration/test_gateway.py."""

from __future__ import annotations

import ipaddress

import dns.message
import pytest

from nettrust_core.answer import Answer, Security, Source
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import parse_config
from nettrust_core.errors import ConfigError, FirewallError
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_rules import chain_rules, ruleset_commands
from nettrust_core.firewall.nftables_sets import grant_sets, grant_shards
from nettrust_core.firewall.nftables_spec import validate_spec
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.grants.clients import ClientGrants
from nettrust_core.netlink.nftables import concat_key
from nettrust_core.ruleset import ruleset_spec

ip = ipaddress.ip_address
net = ipaddress.ip_network
GATEWAY = '[firewall]\nhooks = ["output", "forward"]\nlan_interfaces = ["lan0"]\nresolver_user = ""\n'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(name: str, *addresses: str, ttl: int = 60, client: str | None = None,
           security=Security.INSECURE) -> Answer:
    rrs = [f"{name} {ttl} IN {'AAAA' if ':' in a else 'A'} {a}" for a in addresses]
    text = "\n".join(["id 1", "opcode QUERY", "rcode NOERROR", "flags QR RD RA", ";QUESTION",
                      f"{name} IN A", ";ANSWER", *rrs])
    a = Answer.from_dns_message(dns.message.from_text(text), security, source=Source.RESOLVED)
    return Answer(a.qname, a.qtype, a.rcode, a.security, a.records, client, a.source)


def gateway(extra: str = "", clock=None) -> tuple[Authorizer, RecordingBackend]:
    config = parse_config(GATEWAY + '[gateway]\nper_client = true\n[grants]\nmin_ttl = "30s"\n'
                          'grace = "10s"\n' + extra)
    backend = RecordingBackend()
    return Authorizer(config, backend, clock=clock or Clock()), backend


def written(backend) -> list[tuple[str | None, str, float]]:
    return [(None if g.client is None else str(g.client), str(g.address), g.timeout)
            for batch in backend.batches for g in batch]


# -- the ruleset -----------------------------------------------------------------------------
def _text(rule) -> str:
    return repr(rule)


def test_per_client_forward_chain_matches_source_and_destination_output_is_unchanged():
    plain = RulesetSpec(hooks=("output", "forward"), lan_interfaces=("lan0",))
    spec = RulesetSpec(hooks=("output", "forward"), lan_interfaces=("lan0",), per_client=True)
    assert chain_rules(spec, "output") == chain_rules(plain, "output")
    forward = [_text(r) for r in chain_rules(spec, "forward")]
    concat4 = [r for r in forward if "@clients4" in r]
    assert len(concat4) == 1 and "'saddr'" in concat4[0] and "'daddr'" in concat4[0]
    assert any("@clients6" in r and "ip6" in r for r in forward)
    assert not any("@allow4" in r or "@allow6" in r for r in forward)     # no global grants
    assert any("@allow4" in _text(r) for r in chain_rules(plain, "forward"))
    sets = {c["add"]["set"]["name"]: c["add"]["set"]["type"]
            for c in ruleset_commands(spec, {}) if "set" in c.get("add", {})}
    assert sets["clients4"] == ["ipv4_addr", "ipv4_addr"]
    assert sets["clients6"] == ["ipv6_addr", "ipv6_addr"]
    assert "clients4" not in {c["add"]["set"]["name"] for c in ruleset_commands(plain, {})
                              if "set" in c.get("add", {})}


def test_open_networks_accept_after_the_lan_side_and_the_dns_refusal():
    spec = RulesetSpec(hooks=("output", "forward"), lan_interfaces=("lan0",),
                       open_networks=(net("10.9.0.0/24"), net("2001:db8:9::/64")))
    forward = [_text(r) for r in chain_rules(spec, "forward")]
    lan = next(i for i, r in enumerate(forward) if "iifname" in r)
    dns = next(i for i, r in enumerate(forward) if "853" in r)
    open4 = next(i for i, r in enumerate(forward) if "10.9.0.0" in r)
    assert lan < dns < open4 and "accept" in forward[open4]
    assert any("2001:db8:9::" in r for r in forward)
    assert not any("10.9.0.0" in _text(r) for r in chain_rules(spec, "output"))


def test_per_client_and_open_networks_need_the_forward_hook():
    with pytest.raises(FirewallError):
        validate_spec(RulesetSpec(per_client=True))
    with pytest.raises(ConfigError) as info:
        ruleset_spec(parse_config('[firewall]\nresolver_user = ""\n[gateway]\nper_client = true\n'))
    assert info.value.key == "gateway.per_client"
    with pytest.raises(ConfigError) as info:
        ruleset_spec(parse_config('[firewall]\nresolver_user = ""\n[gateway]\n'
                                  'open_networks = ["10.0.0.0/8"]\n'))
    assert info.value.key == "gateway.open_networks"
    spec = ruleset_spec(parse_config(GATEWAY + '[gateway]\nper_client = true\n'
                                     'open_networks = ["10.0.0.0/8"]\n'))
    assert spec.per_client and spec.open_networks == (net("10.0.0.0/8"),)


def test_concatenated_keys_pad_each_part_to_a_register():
    assert concat_key(ip("10.0.0.2").packed, ip("1.2.3.4").packed).hex() == "0a00000201020304"
    assert len(concat_key(ip("fd00::2").packed, ip("2001:db8::1").packed)) == 32
    assert concat_key(bytes(6), ip("1.2.3.4").packed).hex() == "0000000000000000" + "01020304"


# -- the never-shorten rule, per pair ----------------------------------------------------------
def test_client_grants_write_only_what_gets_longer():
    clock = Clock()
    cg = ClientGrants(slack=1.0, clock=clock)
    pair = ("10.0.0.2", ip("198.51.100.1"))
    assert cg.needs_write(pair, 1100, clock.now)
    cg.record(pair, 1100)
    assert not cg.needs_write(pair, 1050, clock.now)      # shorter: never
    assert not cg.needs_write(pair, 1100.5, clock.now)    # within the slack
    assert cg.needs_write(pair, 1102, clock.now)          # longer
    assert cg.needs_write(("10.0.0.3", ip("198.51.100.1")), 1001, clock.now)   # another client
    clock.now = 1101
    assert cg.needs_write(pair, 1110, clock.now)          # lapsed: written again
    assert cg.prune() == 1 and len(cg) == 0


# -- the authorizer's per-client path ----------------------------------------------------------
def test_an_answer_grants_each_receiving_client_and_nobody_else():
    auth, backend = gateway()
    d = auth.authorize(answer("www.example", "198.51.100.1", "2001:db8::1", client="10.0.0.2"),
                       ["10.0.0.2", "10.0.0.3", "fd00::5"])
    assert d.error is None
    assert sorted(written(backend)) == [("10.0.0.2", "198.51.100.1", 70.0),
                                        ("10.0.0.3", "198.51.100.1", 70.0),
                                        ("fd00::5", "2001:db8::1", 70.0)]
    # an IPv4 client's AAAA address cannot match its packets: counted, not written
    assert auth.counters["client_grants_other_family"] == 3
    assert len(auth.tracker) == 0                           # no grant for everyone
    # the same answer again writes nothing (never shortened, nothing longer)
    backend.batches.clear()
    auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.2"), ["10.0.0.2"])
    assert written(backend) == []


def test_this_hosts_own_queries_and_prefetches_grant_for_everyone_as_before():
    auth, backend = gateway()
    auth.authorize(answer("www.example", "198.51.100.1", client="127.0.0.1"), ["127.0.0.1"])
    auth.authorize(answer("pre.example", "198.51.100.2"), [])
    assert sorted(written(backend)) == [(None, "198.51.100.1", 70.0), (None, "198.51.100.2", 70.0)]
    # output mode (no per_client): clients are ignored, one grant for everyone
    config = parse_config(GATEWAY + '[grants]\nmin_ttl = "30s"\ngrace = "10s"\n')
    plain = RecordingBackend()
    Authorizer(config, plain, clock=Clock()).authorize(
        answer("www.example", "198.51.100.1", client="10.0.0.2"), ["10.0.0.2", "10.0.0.3"])
    assert written(plain) == [(None, "198.51.100.1", 70.0)]


def test_the_cache_hit_check_answers_from_the_map_and_asks_for_a_write_only_when_longer():
    clock = Clock()
    auth, _backend = gateway(clock=clock)
    addr = ip("198.51.100.1")
    assert not auth.cache_hit_granted("10.0.0.2", [(addr, 60)])      # unknown pair
    auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.2"), ["10.0.0.2"])
    clock.now += 20
    assert auth.cache_hit_granted("10.0.0.2", [(addr, 40)])          # what the cache has left
    assert auth.cache_hit_granted("10.0.0.2", [(addr, 40), (ip("2001:db8::1"), 40)])
    assert not auth.cache_hit_granted("10.0.0.3", [(addr, 40)])      # another client
    assert not auth.cache_hit_granted("10.0.0.2", [(addr, 3600)])    # would get longer
    assert auth.cache_hit_granted("127.0.0.1", [(addr, 3600)])       # this host: no callback work
    assert auth.counters["cache_hits_granted"] == 2                  # this host: not counted


def test_a_judged_cached_message_is_skipped_only_while_its_grants_cover_the_hit():
    """A hit with less than min_ttl left grants min_ttl + grace from now: longer than the
    grants of the message's earlier judgment, which end at its expiry + grace."""
    auth, _backend = gateway()                          # min_ttl 30 s, grace 10 s
    gw = auth.gateway
    key = ("10.0.0.2", b"\x03www\x07example\x00", 1, 2000)
    assert not gw.hit_known(key, 1900)                  # never judged
    gw.hit_done(key)
    assert gw.hit_known(key, 1900)                      # 100 s left: covered
    assert gw.hit_known(key, 1969)                      # 31 s left
    assert not gw.hit_known(key, 1970)                  # 30 s: the client may see up to 1 s more
    assert not gw.hit_known(key, 1971)                  # 29 s left: clamped to 30, judge again
    assert not gw.hit_known(key, 2000)                  # expired (served anyway): judge again
    assert not gw.hit_known(("10.0.0.3", *key[1:]), 1900)   # another client


def test_bogus_never_grants_a_client_and_a_backend_failure_fails_closed():
    auth, backend = gateway()
    d = auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.2",
                              security=Security.BOGUS), ["10.0.0.2"])
    assert d.grants == () and written(backend) == []
    backend.fail_grants = True
    d = auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.2"), ["10.0.0.2"])
    assert d.error is not None and auth.counters["backend_errors"] == 1
    backend.fail_grants = False
    # nothing was remembered for the failed write: the next answer writes it
    d = auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.2"), ["10.0.0.2"])
    assert d.error is None and d.written == 1


def test_one_client_cannot_fill_the_per_client_set():
    clock = Clock()
    auth, backend = gateway("max_per_client = 3\n", clock)
    addrs = [f"198.51.100.{i}" for i in range(1, 6)]
    auth.authorize(answer("many.example", *addrs, client="10.0.0.2"), ["10.0.0.2", "10.0.0.3"])
    mine = [w for w in written(backend) if w[0] == "10.0.0.2"]
    assert len(mine) == 3 and auth.counters["refused_per_client_cap"] == 4
    assert len([w for w in written(backend) if w[0] == "10.0.0.3"]) == 3   # each its own cap
    # a live pair is still refreshed at the cap; a new one waits until old ones lapse
    backend.batches.clear()
    clock.now += 30
    auth.authorize(answer("many.example", addrs[0], addrs[4], ttl=120, client="10.0.0.2"),
                   ["10.0.0.2"])
    assert [w[1] for w in written(backend)] == [addrs[0]]
    clock.now += 100                                  # the others (70 s) lapsed
    backend.batches.clear()
    auth.authorize(answer("many.example", addrs[4], client="10.0.0.2"), ["10.0.0.2"])
    assert [w[1] for w in written(backend)] == [addrs[4]]


def test_a_client_at_its_cap_gets_room_the_moment_a_pair_lapses_and_no_sooner():
    """The refusal skips the scan for lapsed pairs until the earliest could have lapsed (one
    scan per lapse, not per refused answer): exact all the same, when the earliest pair was
    refreshed to a later expiry and when a shorter pair arrives after a scan."""
    clock = Clock()
    grants = ClientGrants(clock=clock, cap=3)
    c, new = "10.0.0.2", ip("198.51.100.9")
    grants.record((c, ip("198.51.100.0")), clock.now + 100)
    grants.record((c, ip("198.51.100.1")), clock.now + 200)
    grants.record((c, ip("198.51.100.0")), clock.now + 400)      # the earliest, refreshed
    grants.record((c, ip("198.51.100.2")), clock.now + 300)
    assert grants.refuses(c, new, clock.now) == "client"
    clock.now += 150                                             # past .0's old expiry only
    assert grants.refuses(c, new, clock.now) == "client"         # nothing lapsed
    grants.forget([(c, ip("198.51.100.2"))])                     # revoked (a full set's eviction)
    grants.record((c, ip("198.51.100.3")), clock.now + 10)       # a short one: now the earliest
    clock.now += 9.9
    assert grants.refuses(c, new, clock.now) == "client"
    clock.now += 0.1                                             # it lapses: room at once
    assert grants.refuses(c, new, clock.now) is None and len(grants) == 2
    assert grants.refuses(c, new, clock.now, pending=1) == "client"


class PairsFake(RecordingBackend):
    """The recording fake with the optional per-client verbs (ClientPairs): revoked pairs are
    recorded, the reads return nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.revoked_pairs: list[tuple[str, str]] = []

    def lookup_pair(self, client, address):
        return None

    def revoke_pairs(self, pairs):
        self.revoked_pairs += [(str(c), str(a)) for c, a in pairs]

    def list_pairs(self):
        return []

    def list_strikes(self):
        return []


class KernelHolds(PairsFake):
    """The recording fake, plus pairs a previous process left in the kernel (a fake of
    GETSETELEM on the per-client set)."""

    def __init__(self, left: dict) -> None:
        super().__init__()
        self.left = left
        self.asked = 0

    def lookup_pair(self, client, address):
        self.asked += 1
        return self.left.get((str(client), str(address)))


def test_after_a_restart_a_longer_grant_in_the_kernel_is_never_shortened():
    config = parse_config(GATEWAY + '[gateway]\nper_client = true\n[grants]\nmin_ttl = "30s"\n'
                          'grace = "10s"\n')
    clock = Clock()
    backend = KernelHolds({("10.0.0.2", "198.51.100.1"): 3000.0})
    auth = Authorizer(config, backend, clock=clock)
    auth.authorize(answer("www.example", "198.51.100.1", "198.51.100.2", client="10.0.0.2"),
                   ["10.0.0.2"])
    # .1 holds 3000 s in the kernel: not rewritten with 70 s; .2 is new: written
    assert written(backend) == [("10.0.0.2", "198.51.100.2", 70.0)]
    assert auth.client_grants.expires_in("10.0.0.2", ip("198.51.100.1")) == 3000.0
    # once every earlier grant must have lapsed (max_ttl + grace), the kernel is not asked
    clock.now += 3600 + 10 + 1
    asked = backend.asked
    auth.authorize(answer("new.example", "198.51.100.3", client="10.0.0.2"), ["10.0.0.2"])
    assert backend.asked == asked and ("10.0.0.2", "198.51.100.3", 70.0) in written(backend)


def test_a_local_users_strike_calls_the_action_a_clients_does_not():
    from collections import Counter
    from nettrust_core.lifecycle.unauthorized import UnauthorizedWatcher
    from nettrust_core.netlink.nflog import Attempt
    struck = []
    w = UnauthorizedWatcher(1, None, Counter(), strikes=3, on_strike=struck.append)
    for i in range(3):
        w.handle(Attempt("10.0.0.5", "198.51.100.1", "tcp", 443, "forward", "nettrust", None, None),
                 now=1000.0 + i)
        w.handle(Attempt("127.0.0.1", "198.51.100.1", "tcp", 443, "output", "nettrust", 1000, 1000),
                 now=1000.0 + i)
    assert struck == [1000]
    assert w.counters["strikes"] == 2 and w.counters["uids_struck"] == 1
    failing = UnauthorizedWatcher(1, None, Counter(), strikes=1, on_strike=lambda uid: 1 / 0)
    failing.handle(Attempt("127.0.0.1", "198.51.100.1", "udp", 53, "output", "nettrust", 7, 7))
    assert failing.counters["strike_errors"] == 1


def test_uid_strikes_render_an_output_chain_that_exempts_root_and_the_resolver():
    from nettrust_core.firewall.nftables_gateway import strike_declarations
    text = strike_declarations(RulesetSpec(resolver_uid=105, uid_strikes=True, table="t"))
    assert "hook output" in text and "meta skuid { 0, 105 } return" in text
    assert "@strike_uids" in text and "hook prerouting" not in text
    spec = ruleset_spec(parse_config(GATEWAY + '[lifecycle]\nstrikes = 5\nstrike_drop_dns = true\n'))
    assert spec.uid_strikes and not spec.strikes


def test_ipv6_clients_keyed_by_their_64_share_one_pair_and_the_rule_masks_the_source():
    config = parse_config(GATEWAY + '[gateway]\nper_client = true\nipv6_client_prefix = 64\n'
                          '[grants]\nmin_ttl = "30s"\ngrace = "10s"\n')
    backend = RecordingBackend()
    auth = Authorizer(config, backend, clock=Clock())
    auth.authorize(answer("www.example", "2001:db8::1", client="fd00::2"),
                   ["fd00::2", "fd00::1234:5678", "fd00:0:0:1::2"])
    assert sorted(written(backend)) == [("fd00:0:0:1::", "2001:db8::1", 70.0),
                                        ("fd00::", "2001:db8::1", 70.0)]
    assert auth.cache_hit_granted("fd00::abcd", [(ip("2001:db8::1"), 60)])
    spec = RulesetSpec(hooks=("output", "forward"), lan_interfaces=("lan0",), per_client=True,
                       client_prefix6=64)
    rule = next(repr(r) for r in chain_rules(spec, "forward") if "@clients6" in repr(r))
    assert "'&'" in rule and "ffff:ffff:ffff:ffff::" in rule


# -- gateway.client_key = "mac" ----------------------------------------------------------------
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def mac_gateway() -> tuple[Authorizer, RecordingBackend]:
    from nettrust_core.grants.neighbours import parse_mac
    config = parse_config(GATEWAY + '[gateway]\nper_client = true\nclient_key = "mac"\n'
                          '[grants]\nmin_ttl = "30s"\ngrace = "10s"\n')
    backend = RecordingBackend()
    auth = Authorizer(config, backend, clock=Clock())
    table = auth.gateway.neighbours
    assert table is not None
    table.replace({ip("10.0.0.2"): parse_mac(MAC_A), ip("fd00::2"): parse_mac(MAC_A),
                   ip("10.0.0.3"): parse_mac(MAC_B)})
    return auth, backend


def test_mac_keys_render_ether_saddr_sets_and_encode_padded_keys():
    spec = ruleset_spec(parse_config(GATEWAY + '[gateway]\nper_client = true\nclient_key = "mac"\n'))
    assert spec.client_mac
    forward = [_text(r) for r in chain_rules(spec, "forward")]
    for v, proto in ((4, "ip"), (6, "ip6")):
        rule = [r for r in forward if f"@clients{v}" in r]
        assert len(rule) == 1 and "'ether'" in rule[0] and f"'{proto}'" in rule[0], rule
    sets = {c["add"]["set"]["name"]: c["add"]["set"]["type"]
            for c in ruleset_commands(spec, {}) if "set" in c.get("add", {})}
    assert sets["clients4"] == ["ether_addr", "ipv4_addr"]
    assert sets["clients6"] == ["ether_addr", "ipv6_addr"]
    from nettrust_core.firewall.base import MacAddress
    from nettrust_core.firewall.nftables_gateway import pair_key
    assert pair_key(MacAddress(bytes.fromhex("02000000000a")), ip("1.2.3.4")).hex() \
        == "02000000000a0000" + "01020304"
    # without per_client the key changes nothing
    plain = ruleset_spec(parse_config(GATEWAY + '[gateway]\nclient_key = "mac"\n'))
    assert not plain.client_mac


def test_mac_keys_grant_both_families_to_the_asking_clients_mac_only():
    auth, backend = mac_gateway()
    # asked over IPv4, both families answered: the MAC gets both (address keys: the AAAA lost)
    d = auth.authorize(answer("www.example", "198.51.100.1", "2001:db8::1", client="10.0.0.2"),
                       ["10.0.0.2"])
    assert d.error is None
    assert sorted(written(backend)) == [(MAC_A, "198.51.100.1", 70.0), (MAC_A, "2001:db8::1", 70.0)]
    assert auth.counters["client_grants_other_family"] == 0
    # the same client over IPv6 is the same key: nothing more to write
    backend.batches.clear()
    auth.authorize(answer("www.example", "2001:db8::1", client="fd00::2"), ["fd00::2"])
    assert written(backend) == []
    assert auth.cache_hit_granted("fd00::2", [(ip("198.51.100.1"), 30), (ip("2001:db8::1"), 30)])
    # another MAC is another client
    assert not auth.cache_hit_granted("10.0.0.3", [(ip("198.51.100.1"), 30)])


def test_a_client_without_a_known_mac_gets_nothing_counted_and_asks_for_a_refresh():
    auth, backend = mac_gateway()
    table = auth.gateway.neighbours
    table.wanted.clear()
    d = auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.9"), ["10.0.0.9"])
    assert d.grants == () and written(backend) == []
    assert len(auth.tracker) == 0                       # not granted for everyone either
    assert auth.counters["clients_without_mac"] == 1
    assert auth.counters["clients_unparsable"] == 0
    assert table.wanted.is_set()                        # the reader is woken
    # a cache hit of such a client is not remembered as judged: once its MAC is known it is granted
    key = ("10.0.0.9", b"\x03www\x07example\x00", 1, 2000)
    auth.gateway.hit_done(key)
    assert key not in auth.gateway.hits_done
    from nettrust_core.grants.neighbours import parse_mac
    table.replace({**table.macs, ip("10.0.0.9"): parse_mac("02:00:00:00:00:09")})
    auth.authorize(answer("www.example", "198.51.100.1", client="10.0.0.9"), ["10.0.0.9"])
    assert written(backend) == [("02:00:00:00:00:09", "198.51.100.1", 70.0)]


def test_the_neighbour_reader_keeps_entries_with_a_link_layer_address_only():
    from nettrust_core.lifecycle.neighbours import read_neighbours

    class FakeNeighbourDump:             # a fake of pyroute2's IPRoute (no kernel needed)
        def get_neighbours(self):
            return [_Msg(0x02, "10.0.0.2", "02:00:00:00:00:0a"),        # REACHABLE
                    _Msg(0x04, "fe80::1", "02:00:00:00:00:0b"),          # STALE
                    _Msg(0x01, "10.0.0.3", None),                        # INCOMPLETE
                    _Msg(0x20, "10.0.0.4", "02:00:00:00:00:0c"),         # FAILED
                    _Msg(0x02, "10.0.0.5", "00:00:00:00:00:00")]         # no real MAC

    macs = read_neighbours(FakeNeighbourDump())
    assert {str(k): str(v) for k, v in macs.items()} == {"10.0.0.2": "02:00:00:00:00:0a",
                                                         "fe80::1": "02:00:00:00:00:0b"}


class _Msg(dict):
    def __init__(self, state: int, dst: str, lladdr: str | None) -> None:
        super().__init__(state=state)
        self.attrs = {"NDA_DST": dst, "NDA_LLADDR": lladdr}

    def get_attr(self, name: str):
        return self.attrs.get(name)


# -- the host's caps, per client: per-domain budget and set-size eviction ----------------------
def test_a_flooding_zone_fills_only_its_own_per_client_budget():
    auth, backend = gateway("max_per_domain = 4\nmax_per_client = 100\n")
    flood = [f"198.51.100.{i}" for i in range(1, 11)]
    auth.authorize(answer("a.flood.example", *flood[:6], client="10.0.0.2"), ["10.0.0.2"])
    auth.authorize(answer("b.flood.example", *flood[6:], client="10.0.0.2"), ["10.0.0.2"])
    assert len(written(backend)) == 4                       # one budget for the whole zone
    assert auth.counters["refused_per_client_domain"] == 6
    # another domain of the same client, and the same zone for another client: untouched
    auth.authorize(answer("www.other.example", "203.0.113.1", client="10.0.0.2"), ["10.0.0.2"])
    auth.authorize(answer("a.flood.example", *flood[:2], client="10.0.0.3"), ["10.0.0.3"])
    assert ("10.0.0.2", "203.0.113.1", 70.0) in written(backend)
    assert [w for w in written(backend) if w[0] == "10.0.0.3"] == [
        ("10.0.0.3", flood[0], 70.0), ("10.0.0.3", flood[1], 70.0)]


def test_a_nearly_full_per_client_set_evicts_from_the_biggest_client_and_domain_first():
    config = parse_config(GATEWAY + '[gateway]\nper_client = true\n[grants]\nmin_ttl = "30s"\n'
                          'grace = "10s"\nmax_per_set = 40\nmax_per_client = 100\n')
    clock = Clock()
    backend = PairsFake()
    auth = Authorizer(config, backend, clock=clock)
    # a flooder holds 30 pairs of one zone, a small client 5 of another (35 < 38 = 95 %)
    auth.authorize(answer("x.flood.example", *[f"198.18.0.{i}" for i in range(1, 31)],
                          client="10.0.0.66"), ["10.0.0.66"])
    clock.now += 1
    auth.authorize(answer("www.small.example", *[f"203.0.113.{i}" for i in range(1, 6)],
                          client="10.0.0.2"), ["10.0.0.2"])
    assert backend.revoked_pairs == []
    # 5 more pairs would pass 38: 2 (5 % of 40) + 5 revoked first, all the flooder's
    clock.now += 1
    auth.authorize(answer("y.flood.example", *[f"198.18.1.{i}" for i in range(1, 6)],
                          client="10.0.0.66"), ["10.0.0.66"])
    assert len(backend.revoked_pairs) == 7
    assert {c for c, _a in backend.revoked_pairs} == {"10.0.0.66"}
    assert auth.counters["client_pairs_evicted"] == 7
    assert all(auth.client_grants.expires_in("10.0.0.2", ip(f"203.0.113.{i}")) for i in range(1, 6))
    assert len(auth.client_grants) == 35 - 7 + 5
    # an evicted pair is written again when its client is answered again (a cache hit)
    gone = ip(backend.revoked_pairs[0][1])
    assert not auth.cache_hit_granted("10.0.0.66", [(gone, 60)])


# -- [[gateway.groups]]: one resolver instance per client group ---------------------------------
GROUPS = GATEWAY.replace('resolver_user = ""\n', 'resolver_user = ""\ninstances = 2\n') + """
[[gateway.groups]]
networks = ["10.1.0.0/24", "fd00:1::/64"]
listen = ["10.1.0.1"]
[[gateway.groups]]
networks = ["10.2.0.0/24"]
listen = ["10.2.0.1", "fd00:2::1"]
"""


def test_groups_accept_each_instances_grants_only_from_its_groups_sources():
    spec = ruleset_spec(parse_config(GROUPS))
    forward = [_text(r) for r in chain_rules(spec, "forward")]
    shards = grant_shards(spec)                            # 8: the two instances share 16
    g0 = [r for r in forward if any(f"'@{n}'" in r for names in grant_sets(spec, 0).values()
                                    for n in names)]
    g1 = [r for r in forward if any(f"'@{n}'" in r for names in grant_sets(spec, 1).values()
                                    for n in names)]
    assert shards == 8 and len(g0) == 2 * shards, g0
    assert all("10.1.0.0" in r or "fd00:1::" in r for r in g0), g0
    assert len(g1) == shards and all("10.2.0.0" in r for r in g1)  # group 1: no IPv6, no rule
    assert not any("10.2.0.0" in r for r in g0)
    # the output hook (the gateway's own traffic) accepts every instance's sets as before
    assert not any("10.1.0.0" in _text(r) for r in chain_rules(spec, "output"))


def test_groups_need_one_instance_each_and_exclude_per_client():
    with pytest.raises(ConfigError, match="instances = 2"):
        ruleset_spec(parse_config(GROUPS.replace("instances = 2\n", "")))
    with pytest.raises(ConfigError, match="per_client"):
        ruleset_spec(parse_config(GROUPS.replace("[[gateway.groups]]", "[gateway]\nper_client = true\n"
                                                 "[[gateway.groups]]", 1)))
    with pytest.raises(ConfigError, match="at least one network"):
        parse_config(GATEWAY + "[[gateway.groups]]\nnetworks = []\nlisten = [\"10.0.0.1\"]\n")


def test_each_groups_unbound_include_listens_on_its_addresses_and_answers_its_networks():
    from nettrust_core.unbound_conf import render
    config = parse_config(GROUPS)
    one = render(config, script="/x.py", group=1)
    assert "    interface: 10.2.0.1\n    interface: fd00:2::1\n" in one
    assert "    access-control: 10.2.0.0/24 allow\n" in one and "10.1.0" not in one
    zero = render(config, script="/x.py", group=0)
    assert "access-control: fd00:1::/64 allow" in zero and "10.2.0" not in zero
    with pytest.raises(ConfigError, match="--group"):
        render(config, script="/x.py")
    with pytest.raises(ConfigError, match="no group 2"):
        render(config, script="/x.py", group=2)
    assert "interface:" not in render(parse_config(GATEWAY), script="/x.py")

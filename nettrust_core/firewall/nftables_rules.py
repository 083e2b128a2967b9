"""The nftables ruleset as data: one ``inet`` table, default drop, answered addresses let through
by sets.  (The backend that loads it and writes grants: :mod:`.nftables`.)

What :meth:`NftablesBackend.ensure` programs (``T`` = ``spec.table``)::

    table inet T {
        counter rejected {}
        set allow4  { type ipv4_addr; flags timeout; }          # grants: written per DNS answer,
        set allow4_s1 { type ipv4_addr; flags timeout; }        # spread over 16 sets by address
        …                                                       # (allow4_s1 … allow4_s15,
        set allow6  { type ipv6_addr; flags timeout; }          # see GRANT_SHARDS)
        set allow6_s1 … allow6_s15
        set static4 { type ipv4_addr; flags interval; auto-merge; elements = { 127.0.0.0/8, … } }
        set static6 { type ipv6_addr; flags interval; auto-merge; elements = { ::1, … } }
        chain nd_kernel {                                       # allow_icmpv6_nd
            meta skuid 0-4294967295 return                      # a process's packet: back
            accept                                              # the kernel's own ND
        }
        chain resolver_cgroup {                                 # resolver_cgroup (nft syntax)
            socket cgroupv2 level N "system.slice/unbound.service" accept
        }
        chain output {
            type filter hook output priority P; policy drop;
            ct state established,related accept
            oif "lo" accept                                     # loopback: as it always was
            icmpv6 type { nd-… } ip6 hoplimit 255 ip6 daddr { fe80::/10, ff02::/16 } accept
            icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 jump nd_kernel
            icmpv6 type { mld-… } ip6 hoplimit 1 ip6 daddr ff00::/8 accept   # (allow_icmpv6_nd)
            udp sport 68 udp dport 67 ip daddr { 255.255.255.255, <dhcp_servers> } accept
            udp sport 546 udp dport 547 ip6 daddr { fe80::/10, ff02::1:2, … } accept  # allow_dhcp
            meta skuid U meta l4proto { tcp, udp } th dport { 53, 853 } accept   # resolver_uid
              # forward mode instead: … ip daddr . th dport { 9.9.9.9 . 53 } (and ip6), per upstream
              # with resolver_cgroup: "jump resolver_cgroup" instead of "accept"
            meta l4proto tcp ip daddr . th dport { 192.0.2.2 . 6390 } accept  # fleet.redis_url
            meta l4proto { tcp, udp } ip daddr { <dns_servers> } th dport { 53, 853 } accept  # fleet.masters
            meta l4proto { tcp, udp } th dport { 53, 853 } limit rate R/second log …  # reported too
            meta l4proto { tcp, udp } th dport { 53, 853 } counter name "rejected" reject with icmpx admin-prohibited
            ip daddr @static4 accept                            # (or: … drop, action "drop")
            ip6 daddr @static6 accept
            ip daddr @allow4 accept                             # one rule per grant set:
            ip daddr @allow4_s1 accept … ip daddr @allow4_s15 accept
            ip6 daddr @allow6 accept … ip6 daddr @allow6_s15 accept
            ip daddr @allow4_1 accept …                         # firewall.instances = 2: the
            ip6 daddr @allow6_1 accept …                        # second process's own sets
                                                                # (8 each: allow4 … allow4_s7,
                                                                # allow4_1 … allow4_1_s7)
            limit rate R/second log group G prefix "nettrust"   # lifecycle.unauthorized
            meta l4proto tcp counter name "rejected" reject with tcp reset    # action "reject"
            counter name "rejected" reject with icmpx admin-prohibited        # (or: … drop)
        }
        chain forward {                                         # hooks = ["output", "forward"]
            type filter hook forward priority P; policy drop;
            ct state established,related accept
            iifname != { <lan_interfaces> } drop                # not from the client-facing side:
            meta nfproto ipv4 ip saddr != { <lan_networks> } drop    # no grant applies (the
            meta nfproto ipv6 ip6 saddr != { … } drop           # internet never connects in)
            meta l4proto { tcp, udp } th dport { 53, 853 } counter … reject …   # no DNS but ours
                                                                # (logged first, as in output;
                                                                # the masters' DNS accepted before)
            ip daddr @static4 accept … ip6 daddr @allow6 accept # as in output
            limit rate R/second log group G prefix "nettrust"   # as in output
            meta l4proto tcp counter name "rejected" reject with tcp reset    # as in output
            counter name "rejected" reject with icmpx admin-prohibited
        }
    }

Nothing ICMPv6 and nothing DHCP in forward.  Gateway mode (per-client sets, open networks,
the input chain of ``drop_input``): :mod:`.nftables_gateway`.

Audit mode (``spec.audit``, firewall.enforcement = "audit", :func:`.nftables_audit.audit_rules`): the same chains,
but every rule ending in reject or drop becomes ``<its matches> limit rate R/second log group G
prefix "nettrust-audit"`` followed by ``<its matches> counter name "rejected" accept``, and the
plain log rule goes: nothing is refused, what would be is logged and counted.

Built from a validated :class:`~.base.RulesetSpec` only, with no kernel involved (golden
tests: tests/unit/test_ruleset.py; the kernel's view: tests/integration/test_nftables_backend.py).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from .base import RulesetSpec
from .nftables_sets import all_grant_sets, grant_sets

FAMILY = "inet"
STATIC_SETS = {4: "static4", 6: "static6"}
COUNTER = "rejected"
LOG_PREFIX = "nettrust"
HOOKS = {"output": 3, "forward": 2, "input": 1}  # NF_INET_LOCAL_OUT, _FORWARD, _LOCAL_IN
#: The hooks ``firewall.hooks`` may name; ``input`` comes from ``gateway.drop_input``.
FILTER_HOOKS = ("output", "forward")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert",
            "nd-redirect")
MLD_TYPES = ("mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report")
ND_CHAIN = "nd_kernel"                           # regular chains the output chain jumps to
RESOLVER_CHAIN = "resolver_cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"                   # where nft (1.0.6) resolves cgroupv2 paths


class ChainState(NamedTuple):
    """A chain of our table as the kernel reports it (``hook`` is None for a regular chain)."""

    hook: int | None
    priority: int | None
    policy: str | None
    type: str | None


# -- the ruleset as data ----------------------------------------------------------------------------
def static_elements(spec: RulesetSpec, version: int) -> list:
    """The static set's elements in nft JSON: loopback plus hosts and networks, overlaps merged."""
    nets = [n for n in LOOPBACK if n.version == version]
    nets += [ipaddress.ip_network(h) for h in spec.static_hosts if h.version == version]
    nets += [n for n in spec.static_networks if n.version == version]
    out: list = []
    # Ignored below: one IP version per call (filtered above), which the stub's TypeVar cannot express
    for net in ipaddress.collapse_addresses(nets):  # type: ignore[type-var]
        if net.prefixlen == net.max_prefixlen:
            out.append(str(net.network_address))
        else:
            out.append({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
    return out


def _accept(*matches: dict) -> list[dict]:
    return [*matches, {"accept": None}]


def _match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _field(proto: str, name: str) -> dict:
    return {"payload": {"protocol": proto, "field": name}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _nets(nets) -> list:
    """Addresses and networks as nft JSON set elements (a host is written bare)."""
    out: list = []
    # Ignored below: the callers pass one IP version (collapse_addresses refuses a mix)
    for n in ipaddress.collapse_addresses(ipaddress.ip_network(x) for x in nets):  # type: ignore[type-var]
        out.append(str(n.network_address) if n.prefixlen == n.max_prefixlen
                   else {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}})
    return out


def _refuse(spec: RulesetSpec, *matches: dict) -> list[dict]:
    """``matches`` then the chain's refusal, counted (one rule: ICMP for TCP too)."""
    if spec.action == "reject":
        return [*matches, {"counter": COUNTER}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]
    return [*matches, {"counter": COUNTER}, {"drop": None}]


def _log(spec: RulesetSpec) -> list[dict]:
    """Rate-limited NFLOG to lifecycle.unauthorized's reader; no verdict (the refusal follows)."""
    return [{"limit": {"rate": spec.log_rate, "per": "second", "burst": spec.log_rate}},
            {"log": {"group": spec.log_group, "prefix": LOG_PREFIX}}]


DNS_PORTS = (53, 853)
_TCP_UDP = _match(_meta("l4proto"), {"set": ["tcp", "udp"]})
_DNS = _match(_field("th", "dport"), {"set": list(DNS_PORTS)})


def _resolver_rules(spec: RulesetSpec) -> list[list[dict]]:
    """The resolver's exemption (output only: forwarded packets have no local socket).

    Its uid, TCP or UDP, to port 53/853 anywhere, or in forward mode to the upstreams' exact
    address and port only.  With a cgroup the rule jumps to :data:`RESOLVER_CHAIN`, which
    accepts only sockets made inside that cgroup; anything else returns and meets the DNS block.
    """
    if spec.resolver_uid is None:
        return []
    verdict = ({"jump": {"target": RESOLVER_CHAIN}} if spec.resolver_cgroup else {"accept": None})
    uid = _match(_meta("skuid"), spec.resolver_uid)
    if not spec.upstreams:
        return [[uid, _TCP_UDP, _DNS, verdict]]
    rules = []
    for proto, version in (("ip", 4), ("ip6", 6)):
        pairs = [{"concat": [str(a), port]} for a, port in spec.upstreams if a.version == version]
        if pairs:
            rules.append([uid, _TCP_UDP,
                          _match({"concat": [_field(proto, "daddr"), _field("th", "dport")]},
                                 {"set": pairs}), verdict])
    return rules


def _lan_side_rules(spec: RulesetSpec) -> list[list[dict]]:
    """Forward only: drop what did not enter from the client-facing side (LAN interfaces and/or
    networks), before anything can accept it: grants never let the internet connect in."""
    rules = []
    if spec.lan_interfaces:
        rules.append([_match(_meta("iifname"), {"set": list(spec.lan_interfaces)}, "!="),
                      {"drop": None}])
    if spec.lan_networks:
        for proto, version in (("ip", 4), ("ip6", 6)):
            family = _match(_meta("nfproto"), f"ipv{version}")
            nets = _nets(n for n in spec.lan_networks if n.version == version)
            if nets:
                rules.append([family, _match(_field(proto, "saddr"), {"set": nets}, "!="),
                              {"drop": None}])
            else:                               # no LAN network of this family: none of it
                rules.append([family, {"drop": None}])
    return rules


def _dhcp_rules(spec: RulesetSpec) -> list[list[dict]]:
    """A DHCP client's requests only: 68->67 to broadcast or a configured server, 546->547 to
    ff02::1:2, link-local or a configured server (output only; replies are established)."""
    rules = []
    for proto, version, sport, dport, dests in (
            ("ip", 4, 68, 67, ["255.255.255.255"]),
            ("ip6", 6, 546, 547, ["ff02::1:2", "fe80::/10"])):
        dests = dests + [str(a) for a in spec.dhcp_servers if a.version == version]
        rules.append(_accept(_match(_field("udp", "sport"), sport), _match(_field("udp", "dport"), dport),
                             _match(_field(proto, "daddr"), {"set": _nets(dests)})))
    return rules


def _icmpv6_rules() -> list[list[dict]]:
    """Neighbour discovery and MLD, output only, in shapes that cannot leave the link."""
    hoplimit = lambda n: _match(_field("ip6", "hoplimit"), n)     # noqa: E731
    return [
        _accept(_match(_field("icmpv6", "type"), {"set": list(ND_TYPES)}), hoplimit(255),
                _match(_field("ip6", "daddr"), {"set": _nets(["fe80::/10", "ff02::/16"])})),
        [_match(_field("icmpv6", "type"), {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
         hoplimit(255), {"jump": {"target": ND_CHAIN}}],
        _accept(_match(_field("icmpv6", "type"), {"set": list(MLD_TYPES)}), hoplimit(1),
                _match(_field("ip6", "daddr"), {"set": _nets(["ff00::/8"])})),
    ]


def nd_chain_rules() -> list[list[dict]]:
    """:data:`ND_CHAIN`: a solicitation or advertisement to a unicast (global) address passes
    only when the kernel itself sent it (its neighbour cache, always to an on-link neighbour);
    a process's socket has an owner, so ``meta skuid`` matches and the packet returns."""
    return [[_match(_meta("skuid"), {"range": [0, 0xFFFFFFFF]}), {"return": None}],
            [{"accept": None}]]


def base_chains(spec: RulesetSpec) -> tuple[str, ...]:
    """The base chains the spec wants: its hooks, plus ``input`` with ``drop_input``."""
    return (*spec.hooks, *(("input",) if spec.drop_input else ()))


def chain_rules(spec: RulesetSpec, hook: str) -> list[list[dict]]:
    """The expressions of each rule of one base chain, in order (see the module docstring)."""
    from .nftables_gateway import client_sets, input_rules, open_network_rules   # (cycle)
    from .nftables_fleet import dns_server_rules, own_service_rules
    if hook == "input":
        return input_rules(spec)
    out = hook == "output"
    rules = [_accept(_match({"ct": {"key": "state"}}, ["established", "related"], "in"))]
    if out:
        rules.append(_accept(_match(_meta("oif"), "lo")))
    else:
        rules += _lan_side_rules(spec)
    if out and spec.allow_icmpv6_nd:
        rules += _icmpv6_rules()
    if out and spec.allow_dhcp:
        rules += _dhcp_rules(spec)
    if out:
        rules += _resolver_rules(spec) + own_service_rules(spec)
    rules += dns_server_rules(spec)
    if spec.log_group is not None:          # refused DNS/DoT is reported too (bypass attempts)
        rules.append([_TCP_UDP, _DNS, *_log(spec)])
    rules.append(_refuse(spec, _TCP_UDP, _DNS))        # DNS and DoT: the resolver's, nobody else's
    if not out:
        rules += open_network_rules(spec)
    per_client = spec.per_client and not out
    set_groups: list[tuple[int | None, dict[int, tuple[str, ...]]]] = [
        (None, {v: (n,) for v, n in STATIC_SETS.items()})]
    set_groups += [(i, {v: (n,) for v, n in client_sets(i).items()} if per_client
                    else grant_sets(spec, i)) for i in range(spec.instances)]
    for k, sets in set_groups:          # k None: the static sets
        mark = [] if k is None or spec.ct_mark is None else [_mark_connection(spec.ct_mark)]
        for proto, v in (("ip", 4), ("ip6", 6)):
            if per_client and k is not None:
                saddr = _field("ether" if spec.client_mac else proto, "saddr")
                if v == 6 and spec.client_prefix6 < 128 and not spec.client_mac:     # the client's /N, as it is granted
                    mask = ipaddress.IPv6Network(f"::/{spec.client_prefix6}").netmask
                    saddr = {"&": [saddr, str(mask)]}
                key = {"concat": [saddr, _field(proto, "daddr")]}
            else:
                key = _field(proto, "daddr")
            group = _group_match(spec, k, out, proto, v)
            if group is not None:
                rules += [_accept(*group, _match(key, "@" + name), *mark) for name in sets[v]]
    if spec.log_group is not None:          # no verdict: the refusal below still applies
        rules.append(_log(spec))
    if spec.action == "reject":
        rules.append([_match(_meta("l4proto"), "tcp"), {"counter": COUNTER},
                      {"reject": {"type": "tcp reset"}}])
        rules.append([{"counter": COUNTER}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}])
    else:
        rules.append([{"counter": COUNTER}, {"drop": None}])
    if spec.audit:                          # firewall.enforcement = "audit"
        from .nftables_audit import audit_rules      # (imported late: it imports this module)
        return audit_rules(spec, rules)
    return rules


def _group_match(spec: RulesetSpec, k: int | None, out: bool, proto: str,
                 v: int) -> list[dict] | None:
    """Group mode, forward: instance k's grants only for group k's sources ([] no condition,
    None: the group has no network of this family, no rule; k None: the static sets)."""
    if out or not spec.groups or k is None:
        return []
    nets = _nets(n for n in spec.groups[k] if n.version == v)
    return [_match(_field(proto, "saddr"), {"set": nets})] if nets else None


def wants_nd_chain(spec: RulesetSpec) -> bool:
    return spec.allow_icmpv6_nd and "output" in spec.hooks


def _mark_connection(bits: int) -> dict:
    """``ct mark set ct mark | bits``: other users of the mark keep their bits."""
    return {"mangle": {"key": {"ct": {"key": "mark"}},
                       "value": {"|": [{"ct": {"key": "mark"}}, bits]}}}


def static_set_declarations(spec: RulesetSpec, cgroup_match: str | None = None) -> str:
    """The table, the static sets (with ``auto-merge``) and the resolver's cgroup chain, in nft
    syntax: one transaction run just before the JSON one.

    nft 1.0.6's JSON cannot say ``auto-merge`` (it keeps it in the set's userdata, which only a
    set's creation can write), nor ``socket cgroupv2``.  They change no filtering by
    themselves: an empty set referenced by no rule matches nothing, and the cgroup chain is
    only reached through the output chain's resolver rule, which already demands the resolver's
    uid and port 53/853 (the chain is flushed and refilled at once, so it never stands empty).
    Built only from the validated table name, the validated cgroup path and constants.
    """
    lines = [f"add table {FAMILY} {spec.table}"]
    for v, name in STATIC_SETS.items():
        lines.append(f"add set {FAMILY} {spec.table} {name} "
                     f"{{ type ipv{v}_addr; flags interval; auto-merge; }}")
    if spec.resolver_cgroup and spec.resolver_uid is not None:
        lines += [f"add chain {FAMILY} {spec.table} {RESOLVER_CHAIN}",
                  f"flush chain {FAMILY} {spec.table} {RESOLVER_CHAIN}"]
        if cgroup_match is not None:            # None: the cgroup is missing, exempt nobody
            lines.append(f"add rule {FAMILY} {spec.table} {RESOLVER_CHAIN} {cgroup_match} accept")
    return "\n".join(lines) + "\n"


def ruleset_commands(spec: RulesetSpec, chains: dict[str, ChainState]) -> list[dict]:
    """One transaction that creates or repairs the ruleset, given the chains the table has now.

    Grant sets are only ever ``add``-ed (a no-op when present), so their elements survive.
    """
    t = {"family": FAMILY, "table": spec.table}
    cmds: list[dict] = [{"add": {"table": {"family": FAMILY, "name": spec.table}}},
                        {"add": {"counter": {**t, "name": COUNTER}}}]
    for _instance, v, name in all_grant_sets(spec):
        size = {} if spec.set_size is None else {"size": spec.set_size}   # updates a live set too
        cmds.append({"add": {"set": {**t, "name": name, "type": f"ipv{v}_addr", "flags": ["timeout"],
                                     **size}}})
    from .nftables_gateway import all_client_sets
    for _instance, v, name in all_client_sets(spec):
        size = {} if spec.set_size is None else {"size": spec.set_size}
        cmds.append({"add": {"set": {**t, "name": name, "type": [
                                         "ether_addr" if spec.client_mac else f"ipv{v}_addr", f"ipv{v}_addr"],
                                     "flags": ["timeout"], **size}}})
    for v, name in STATIC_SETS.items():
        cmds.append({"add": {"set": {**t, "name": name, "type": f"ipv{v}_addr", "flags": ["interval"]}}})
        cmds.append({"flush": {"set": {**t, "name": name}}})
        cmds.append({"add": {"element": {**t, "name": name, "elem": static_elements(spec, v)}}})
    for name, state in chains.items():
        if name in HOOKS and state.hook is not None and (
                name not in base_chains(spec) or state.hook != HOOKS[name]
                or state.priority != spec.priority or state.type != "filter"):
            cmds.append({"delete": {"chain": {**t, "name": name}}})   # recreated below if wanted
    if wants_nd_chain(spec):                 # regular chains before the rules that jump to them
        cmds.append({"add": {"chain": {**t, "name": ND_CHAIN}}})
        cmds.append({"flush": {"chain": {**t, "name": ND_CHAIN}}})
        for expr in nd_chain_rules():
            cmds.append({"add": {"rule": {**t, "chain": ND_CHAIN, "expr": expr}}})
    for hook in base_chains(spec):
        cmds.append({"add": {"chain": {**t, "name": hook, "type": "filter", "hook": hook,
                                       "prio": spec.priority, "policy": "drop"}}})
        cmds.append({"flush": {"chain": {**t, "name": hook}}})
        for expr in chain_rules(spec, hook):
            cmds.append({"add": {"rule": {**t, "chain": hook, "expr": expr}}})
    unwanted = {"strikes": not spec.strikes,            # nftables_gateway.STRIKE_CHAIN
                "strikes_out": not spec.uid_strikes,    # nftables_gateway.UID_STRIKE_CHAIN
                ND_CHAIN: not wants_nd_chain(spec),
                RESOLVER_CHAIN: not (spec.resolver_cgroup and spec.resolver_uid is not None)}
    for name, gone in unwanted.items():     # after the flushes above dropped every jump to them
        if gone and name in chains:
            cmds.append({"flush": {"chain": {**t, "name": name}}})
            cmds.append({"delete": {"chain": {**t, "name": name}}})
    return cmds

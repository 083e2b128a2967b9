"""The nftables backend: one ``inet`` table, default drop, answered addresses let through by sets.

What :meth:`NftablesBackend.ensure` programs (``T`` = ``spec.table``)::

    table inet T {
        counter rejected {}
        set allow4  { type ipv4_addr; flags timeout; }          # grants: written per DNS answer
        set allow6  { type ipv6_addr; flags timeout; }
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
            meta l4proto { tcp, udp } th dport { 53, 853 } counter name "rejected" reject with icmpx admin-prohibited
            ip daddr @static4 accept                            # (or: … drop, action "drop")
            ip6 daddr @static6 accept
            ip daddr @allow4 accept
            ip6 daddr @allow6 accept
            ip daddr @allow4_1 accept                           # firewall.instances = 2: the
            ip6 daddr @allow6_1 accept                          # second process's own sets
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
            ip daddr @static4 accept … ip6 daddr @allow6 accept # as in output
            limit rate R/second log group G prefix "nettrust"   # as in output
            meta l4proto tcp counter name "rejected" reject with tcp reset    # as in output
            counter name "rejected" reject with icmpx admin-prohibited
        }
    }

Nothing ICMPv6 and nothing DHCP in forward.

Audit mode (``spec.audit``, firewall.enforcement = "audit", :func:`audit_rules`): the same chains,
but every rule ending in reject or drop becomes ``<its matches> limit rate R/second log group G
prefix "nettrust-audit"`` followed by ``<its matches> counter name "rejected" accept``, and the
plain log rule goes: nothing is refused, what would be is logged and counted.

Two planes:

* The control plane (``ensure``) is one libnftables JSON transaction built as data (``nft -j -f -``
  when the Python binding is missing).  It never deletes the table or the grant sets: ``add`` of an
  existing table/set/counter is a no-op, the static sets and chains are flushed and refilled inside
  the same transaction, so the kernel switches from the old rules to the new ones at commit with no
  moment in between.  A base chain whose hook, type or priority differs from the spec is deleted
  and recreated in that same transaction (the kernel cannot change a hook's priority in place):
  the new chain is hooked while the transaction is prepared and the old one unhooked at commit,
  and a packet must pass every base chain on its hook, so the worst case is an instant of drop,
  never an open moment.  (The static sets are declared just before, see
  :func:`static_set_declarations`.)
* The answer path (``grant``) is a raw netlink batch on a persistent socket
  (:mod:`nettrust_core.netlink.nftables`, which says why it is hand-written): IPv4 and IPv6
  elements to their sets in one batch, acked.  The state reads (``list_grants``, ``status``)
  use a second socket, so a long dump never holds up an answer.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
from typing import NamedTuple, Sequence

from ..errors import FirewallError
from ..netlink import nftables as nl, nftables_state as nft_state, wire
from .base import MAX_INSTANCES, Grant, GrantedElement, RulesetSpec
from .diagnostics import BaseChain

log = logging.getLogger("nettrust.firewall")

FAMILY = "inet"
GRANT_SETS = {4: "allow4", 6: "allow6"}
STATIC_SETS = {4: "static4", 6: "static6"}
COUNTER = "rejected"
LOG_PREFIX = "nettrust"
HOOKS = {"output": 3, "forward": 2}              # NF_INET_LOCAL_OUT, NF_INET_FORWARD
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert",
            "nd-redirect")
MLD_TYPES = ("mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report")
ND_CHAIN = "nd_kernel"                           # regular chains the output chain jumps to
RESOLVER_CHAIN = "resolver_cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"                   # where nft (1.0.6) resolves cgroupv2 paths
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\Z")
_CGROUP = re.compile(r"[A-Za-z0-9_.@:-]+(?:/[A-Za-z0-9_.@:-]+)*\Z")


def grant_sets(instance: int) -> dict[int, str]:
    """The grant sets one resolver process writes, by IP version.

    Instance 0 keeps the names a single process has always used (``allow4``/``allow6``), so
    going from one process to several keeps its grants; instance k writes ``allow4_k``/``allow6_k``.
    Separate sets are what let several processes grant the same address without one shortening
    the other's grant: each process only ever rewrites its own element.
    """
    if instance == 0:
        return dict(GRANT_SETS)
    return {v: f"{name}_{instance}" for v, name in GRANT_SETS.items()}


def all_grant_sets(spec: RulesetSpec) -> list[tuple[int, int, str]]:
    """``(instance, version, set name)`` of every grant set the ruleset holds."""
    return [(k, v, name) for k in range(spec.instances) for v, name in grant_sets(k).items()]



class ChainState(NamedTuple):
    """A chain of our table as the kernel reports it (``hook`` is None for a regular chain)."""

    hook: int | None
    priority: int | None
    policy: str | None
    type: str | None


# -- the ruleset as data ----------------------------------------------------------------------------
def validate_spec(spec: RulesetSpec) -> None:
    """Refuse a spec nft would reject or misread, before anything touches the kernel."""
    problems = []
    if not _NAME.match(spec.table):
        problems.append(f"table name {spec.table!r} (letters, digits, _ . -; up to 63)")
    if spec.action not in ("reject", "drop"):
        problems.append(f"action {spec.action!r} (reject or drop)")
    if not spec.hooks or len(set(spec.hooks)) != len(spec.hooks) or not set(spec.hooks) <= set(HOOKS):
        problems.append(f"hooks {spec.hooks!r} (output, optionally forward)")
    if not isinstance(spec.priority, int) or not -2**31 <= spec.priority < 2**31:
        problems.append(f"priority {spec.priority!r} (a 32-bit integer)")
    if spec.resolver_uid is not None and (not isinstance(spec.resolver_uid, int) or spec.resolver_uid < 0):
        problems.append(f"resolver_uid {spec.resolver_uid!r}")
    if not isinstance(spec.instances, int) or not 1 <= spec.instances <= MAX_INSTANCES:
        problems.append(f"instances {spec.instances!r} (1 to {MAX_INSTANCES})")
    if "forward" in spec.hooks and not (spec.lan_interfaces or spec.lan_networks):
        problems.append("the forward hook without lan_interfaces or lan_networks (grants would "
                        "let the internet connect in)")
    if any(not _IFNAME.match(i) for i in spec.lan_interfaces):
        problems.append(f"lan_interfaces {spec.lan_interfaces!r}")
    if spec.resolver_cgroup is not None and (spec.resolver_uid is None
                                             or not _CGROUP.match(spec.resolver_cgroup)):
        problems.append(f"resolver_cgroup {spec.resolver_cgroup!r} (a cgroup path, with a resolver_uid)")
    if problems:
        raise FirewallError("invalid ruleset: " + "; ".join(problems), table=spec.table, family=FAMILY)


def static_elements(spec: RulesetSpec, version: int) -> list:
    """The static set's elements in nft JSON: loopback plus hosts and networks, overlaps merged."""
    nets = [n for n in LOOPBACK if n.version == version]
    nets += [ipaddress.ip_network(h) for h in spec.static_hosts if h.version == version]
    nets += [n for n in spec.static_networks if n.version == version]
    out: list = []
    for net in ipaddress.collapse_addresses(nets):
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
    for n in ipaddress.collapse_addresses(ipaddress.ip_network(x) for x in nets):
        out.append(str(n.network_address) if n.prefixlen == n.max_prefixlen
                   else {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}})
    return out


def _refuse(spec: RulesetSpec, *matches: dict) -> list[dict]:
    """``matches`` then the chain's refusal, counted (one rule: ICMP for TCP too)."""
    if spec.action == "reject":
        return [*matches, {"counter": COUNTER}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]
    return [*matches, {"counter": COUNTER}, {"drop": None}]


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


def chain_rules(spec: RulesetSpec, hook: str) -> list[list[dict]]:
    """The expressions of each rule of one base chain, in order (see the module docstring)."""
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
        rules += _resolver_rules(spec)
    rules.append(_refuse(spec, _TCP_UDP, _DNS))        # DNS and DoT: the resolver's, nobody else's
    for sets in (STATIC_SETS, *(grant_sets(k) for k in range(spec.instances))):
        mark = [] if sets is STATIC_SETS or spec.ct_mark is None else [_mark_connection(spec.ct_mark)]
        rules.append(_accept(_match(_field("ip", "daddr"), "@" + sets[4]), *mark))
        rules.append(_accept(_match(_field("ip6", "daddr"), "@" + sets[6]), *mark))
    if spec.log_group is not None:          # no verdict: the refusal below still applies
        rules.append([{"limit": {"rate": spec.log_rate, "per": "second", "burst": spec.log_rate}},
                      {"log": {"group": spec.log_group, "prefix": LOG_PREFIX}}])
    if spec.action == "reject":
        rules.append([_match(_meta("l4proto"), "tcp"), {"counter": COUNTER},
                      {"reject": {"type": "tcp reset"}}])
        rules.append([{"counter": COUNTER}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}])
    else:
        rules.append([{"counter": COUNTER}, {"drop": None}])
    if spec.audit:                          # firewall.enforcement = "audit"
        return audit_rules(spec, rules)
    return rules


#: NFLOG prefix of a packet audit mode let through ("would refuse").
AUDIT_PREFIX = "nettrust-audit"


def audit_rules(spec: RulesetSpec, rules: list[list[dict]]) -> list[list[dict]]:
    """Audit mode: every rule that would refuse (drop or reject) logs, counts and accepts.

    The plain log rule goes (each refusal logs itself, with :data:`AUDIT_PREFIX`); the
    ``rejected`` counter then counts "would refuse"; the chain's policy stays drop but nothing
    reaches it.  Rules without a refusal are kept as they are.
    """
    out = []
    for rule in rules:
        if any("log" in expr for expr in rule):
            continue
        if not any("drop" in expr or "reject" in expr for expr in rule):
            out.append(rule)
            continue
        matches = [e for e in rule if not ({"counter", "drop", "reject"} & e.keys())]
        if spec.log_group is not None:
            out.append([*matches, {"limit": {"rate": spec.log_rate, "per": "second",
                                             "burst": spec.log_rate}},
                        {"log": {"group": spec.log_group, "prefix": AUDIT_PREFIX}}])
        out.append([*matches, {"counter": COUNTER}, {"accept": None}])
    return out


def wants_nd_chain(spec: RulesetSpec) -> bool:
    return spec.allow_icmpv6_nd and "output" in spec.hooks


def _mark_connection(bits: int) -> dict:
    """``ct mark set ct mark | bits``: other users of the mark keep their bits."""
    return {"mangle": {"key": {"ct": {"key": "mark"}},
                       "value": {"|": [{"ct": {"key": "mark"}}, bits]}}}


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``…/unified`` on a
    hybrid host), preferring a mount under :data:`CGROUP_ROOT`; None when there is none."""
    found = []
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    found.append(left.split(" ")[4].replace("\\040", " "))
    except OSError:
        return None
    found.sort(key=lambda m: (not (m + "/").startswith(CGROUP_ROOT + "/"), len(m)))
    return found[0] if found else None


def resolver_cgroup_match(spec: RulesetSpec, mount: str | None = None) -> str:
    """``socket cgroupv2 level N "path"`` for the resolver's cgroup, in nft syntax.

    nft (1.0.6) turns the path into the cgroup's id when the rule is loaded, so the cgroup must
    exist then: a missing one is refused here with what to do.  The kernel keeps the id; if the
    cgroup is removed later (its unit stopped) the rule matches nothing -- the resolver loses
    its exemption, fail closed -- until the next load (Unbound's start) reads the new id.
    The level is the path's depth below the root of the hierarchy.
    """
    path = spec.resolver_cgroup or ""
    mount = mount if mount is not None else cgroup2_mount()
    if mount is None:
        raise FirewallError("firewall.resolver_cgroup is set but no cgroup v2 hierarchy is "
                            "mounted", table=spec.table, family=FAMILY)
    where = f"{mount}/{path}"
    if not os.path.isdir(where):
        raise FirewallError(f"firewall.resolver_cgroup: the cgroup {path!r} does not exist "
                            f"({where}); it must exist when the ruleset is loaded -- start the "
                            "resolver's unit first, or fix the path (systemd-cgls shows it)",
                            table=spec.table, family=FAMILY)
    rel = os.path.relpath(where, CGROUP_ROOT)
    if rel.startswith(".."):
        raise FirewallError(f"firewall.resolver_cgroup: the cgroup v2 hierarchy is mounted at "
                            f"{mount}, outside {CGROUP_ROOT}, where nft looks for it",
                            table=spec.table, family=FAMILY)
    return f'socket cgroupv2 level {len(path.split("/"))} "{rel}"'


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
    for v, name in STATIC_SETS.items():
        cmds.append({"add": {"set": {**t, "name": name, "type": f"ipv{v}_addr", "flags": ["interval"]}}})
        cmds.append({"flush": {"set": {**t, "name": name}}})
        cmds.append({"add": {"element": {**t, "name": name, "elem": static_elements(spec, v)}}})
    for name, state in chains.items():
        if name in HOOKS and state.hook is not None and (
                name not in spec.hooks or state.hook != HOOKS[name]
                or state.priority != spec.priority or state.type != "filter"):
            cmds.append({"delete": {"chain": {**t, "name": name}}})   # recreated below if wanted
    if wants_nd_chain(spec):                 # regular chains before the rules that jump to them
        cmds.append({"add": {"chain": {**t, "name": ND_CHAIN}}})
        cmds.append({"flush": {"chain": {**t, "name": ND_CHAIN}}})
        for expr in nd_chain_rules():
            cmds.append({"add": {"rule": {**t, "chain": ND_CHAIN, "expr": expr}}})
    for hook in spec.hooks:
        cmds.append({"add": {"chain": {**t, "name": hook, "type": "filter", "hook": hook,
                                       "prio": spec.priority, "policy": "drop"}}})
        cmds.append({"flush": {"chain": {**t, "name": hook}}})
        for expr in chain_rules(spec, hook):
            cmds.append({"add": {"rule": {**t, "chain": hook, "expr": expr}}})
    unwanted = {ND_CHAIN: not wants_nd_chain(spec),
                RESOLVER_CHAIN: not (spec.resolver_cgroup and spec.resolver_uid is not None)}
    for name, gone in unwanted.items():     # after the flushes above dropped every jump to them
        if gone and name in chains:
            cmds.append({"flush": {"chain": {**t, "name": name}}})
            cmds.append({"delete": {"chain": {**t, "name": name}}})
    return cmds


def _granted(elements: list[nl.Element], version: int, instance: int) -> list[GrantedElement]:
    """Dumped elements of a grant set as GrantedElements (times in seconds)."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return [GrantedElement(make(e.key), (e.timeout_ms or 0) / 1000, (e.expiration_ms or 0) / 1000,
                           e.comment, instance) for e in elements]


# -- the backend ------------------------------------------------------------------------------------
class NftablesBackend:
    """:class:`~nettrust_core.firewall.base.FirewallBackend` on nf_tables.

    ``repairs`` counts grants that found the ruleset missing and rebuilt it; ``errors`` counts
    grants that failed.  Thread-safe: Unbound's worker threads may call :meth:`grant` at once.
    ``instance`` is this resolver process's index among ``spec.instances``: its grants,
    lookups, adoption and revocations touch only its own sets (:func:`grant_sets`); reads for
    people (``list_grants``, ``status``) and ``flush_grants`` cover every instance.
    """

    def __init__(self, spec: RulesetSpec | None = None, *, instance: int = 0,
                 timeout: float = 5.0) -> None:
        self.spec = spec if spec is not None else RulesetSpec()
        validate_spec(self.spec)
        if not isinstance(instance, int) or not 0 <= instance < self.spec.instances:
            raise self._error(f"instance {instance!r} is not one of 0..{self.spec.instances - 1} "
                              f"(firewall.instances = {self.spec.instances})")
        self.instance = instance
        self.grant_sets = grant_sets(instance)
        self.repairs = 0
        self.errors = 0
        self._timeout = timeout
        self._hot: nl.NftablesSocket | None = None      # the answer path's socket
        self._ctl: nl.NftablesSocket | None = None      # dumps and control messages
        self._nft = None                               # libnftables context, made on first ensure
        self._open_lock = threading.Lock()
        self._ctl_lock = threading.Lock()

    # -- sockets ------------------------------------------------------------------------------
    def _socket(self, which: str) -> nl.NftablesSocket:
        with self._open_lock:
            sock = getattr(self, which)
            if sock is None:
                sock = nl.NftablesSocket(self._timeout)
                setattr(self, which, sock)
            return sock

    def close(self) -> None:
        with self._open_lock:
            for which in ("_hot", "_ctl"):
                sock = getattr(self, which)
                if sock is not None:
                    sock.close()
                    setattr(self, which, None)
            self._nft = None

    def _error(self, message: str, **fields) -> FirewallError:
        return FirewallError(message, table=self.spec.table, family=FAMILY, **fields)

    # -- the answer path ----------------------------------------------------------------------
    def grant(self, grants: Sequence[Grant]) -> None:
        """Add or refresh ``grants`` (remaining life := timeout) in one acked netlink batch.

        If the kernel says the table or a set is missing, rebuild the ruleset once (counted in
        ``repairs``) and retry once; any other refusal raises FirewallError (counted in ``errors``).
        """
        if not grants:
            return
        try:
            groups = self._encode(grants)
            sock = self._hot or self._socket("_hot")
            try:
                sock.write_elements(nl.NFT_MSG_NEWSETELEM, self.spec.table, groups)
                return
            except FirewallError as exc:
                if exc.errno != errno_mod.ENOENT:
                    raise
                self.repairs += 1
                log.warning("ruleset missing on grant (%s); rebuilding it", exc)
            self.ensure()
            sock.write_elements(nl.NFT_MSG_NEWSETELEM, self.spec.table, groups)
        except FirewallError:
            self.errors += 1
            raise

    def _encode(self, grants: Sequence[Grant]) -> list[tuple[str, list[bytes], list]]:
        """Elements per grant set; timeouts in whole milliseconds, rounded up."""
        v4: list[bytes] = []
        v6: list[bytes] = []
        a4: list = []
        a6: list = []
        last_comment, udata = None, b""
        element = nl.element
        for g in grants:
            addr = g.address
            try:
                ms = math.ceil(g.timeout * 1000)
            except (TypeError, ValueError, OverflowError):
                ms = 0
            if ms <= 0:
                raise self._error(f"grant timeout must be a positive number of seconds, not {g.timeout!r}",
                                  address=str(addr))
            if g.comment != last_comment:
                last_comment, udata = g.comment, nl.comment_udata(g.comment)
            if addr.version == 4:
                v4.append(element(addr.packed, ms, udata))
                a4.append(addr)
            else:
                v6.append(element(addr.packed, ms, udata))
                a6.append(addr)
        groups = []
        if v4:
            groups.append((self.grant_sets[4], v4, a4))
        if v6:
            groups.append((self.grant_sets[6], v6, a6))
        return groups

    # -- reads --------------------------------------------------------------------------------
    def list_grants(self) -> list[GrantedElement]:
        """Every live grant of every instance, from a netlink dump of each grant set.

        An address several instances granted appears once per instance.  Raises FirewallError
        (errno ENOENT) when the ruleset is absent.  Cost grows with the square of a set's size,
        in the kernel: a set dump restarts its walk from the first element for every 32 KiB
        part (about 1 s for 100k grants, 30-40 s for a million in one set; ``nft list set``
        takes as long).  Grants are not held up meanwhile: they use another socket and the
        kernel's dump takes no lock that writers need.
        """
        out: list[GrantedElement] = []
        sock = self._socket("_ctl")
        for instance, v, name in all_grant_sets(self.spec):
            sock.scan_elements(self.spec.table, name,
                               lambda batch: out.extend(_granted(batch, v, instance)))
        return out

    def scan_own_grants(self, on_batch) -> None:
        """This instance's live grants, handed to ``on_batch`` one dump part at a time.

        On a socket of its own, closed afterwards, so ``on_batch`` may raise to abandon a long
        dump (a stopping resolver) without leaving its remains on a shared socket.
        """
        sock = nl.NftablesSocket(self._timeout)
        try:
            for v, name in self.grant_sets.items():
                sock.scan_elements(self.spec.table, name,
                                   lambda batch: on_batch(_granted(batch, v, self.instance)))
        finally:
            sock.close()

    def lookup(self, address) -> float | None:
        """Seconds left on this instance's grant of ``address``, or None: one GETSETELEM."""
        sock = self._hot or self._socket("_hot")
        e = sock.get_element(self.spec.table, self.grant_sets[address.version], address.packed)
        if e is None or not e.expiration_ms:
            return None
        return e.expiration_ms / 1000

    def _table_flags(self) -> int | None:
        """The table's flags, or None when it does not exist."""
        return nft_state.table_flags(self._socket("_ctl"), self.spec.table)

    def _chains(self) -> dict[str, ChainState]:
        """The chains of our table (a GETCHAIN dump covers every table of the family)."""
        return {c.name: ChainState(c.hook, c.priority, None if c.policy is None else
                                   ("accept" if c.policy == 1 else "drop"), c.type)
                for c in nft_state.chains(self._socket("_ctl"), wire.NFPROTO_INET)
                if c.table == self.spec.table}

    def base_chains(self) -> list[BaseChain]:
        """Every base chain of every table and family (ours and others'), for the priority report."""
        return [BaseChain(c.family, c.table, c.name, wire.HOOK_NAMES.get(c.hook, str(c.hook)),
                          c.priority or 0, c.type or "filter",
                          "accept" if c.policy in (None, 1) else "drop")
                for c in nft_state.chains(self._socket("_ctl")) if c.hook is not None]

    def _set_size(self, name: str) -> int | None:
        """Elements in a set (interval ends not counted), None when the set is absent."""
        try:
            elems = self._socket("_ctl").dump_elements(self.spec.table, name)
        except FirewallError as exc:
            if exc.errno == errno_mod.ENOENT:
                return None
            raise
        return sum(1 for e in elems if not e.flags & nl.NFT_SET_ELEM_INTERVAL_END)

    def status(self, count_elements: bool = True) -> dict:
        """What the kernel has: presence, hooks, priority, policy, action, set sizes, counters.

        Counting elements dumps every set; with a million grants that takes the kernel tens of
        seconds (its set dumps restart from the first element for every 32 KiB part), so callers
        polling for metrics may pass ``count_elements=False``.
        """
        spec = self.spec
        st: dict = {"present": False, "table": spec.table, "family": FAMILY, "dormant": False,
                    "hooks": [], "chains": {}, "priority": None, "policy": None, "action": None,
                    "sets": {}, "counters": {}}
        flags = self._table_flags()
        if flags is None:
            return st
        chains = {n: c for n, c in self._chains().items() if n in HOOKS and c.hook == HOOKS[n]}
        st.update(present=True, dormant=bool(flags & nl.NFT_TABLE_F_DORMANT), hooks=list(chains),
                  chains={n: c._asdict() for n, c in chains.items()})
        if chains:
            first = next(iter(chains.values()))
            st["priority"], st["policy"] = first.priority, first.policy
            exprs = nft_state.expression_names(self._socket("_ctl"), spec.table, next(iter(chains)))
            st["action"] = "reject" if "reject" in exprs else "drop"
        if count_elements:
            st["sets"] = {name: self._set_size(name)
                          for name in (*(n for _k, _v, n in all_grant_sets(spec)),
                                       *STATIC_SETS.values())}
        counter = nft_state.counter(self._socket("_ctl"), spec.table, COUNTER)
        if counter is not None:
            st["counters"][COUNTER] = counter
        return st

    # -- control plane ------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create or repair the ruleset in one transaction; live grants and drop policy stay.

        Reads the table's chains first (to decide which base chains must be recreated); if the
        transaction fails because the table changed meanwhile, reads and tries once more.
        A missing ``resolver_cgroup`` still loads the whole ruleset, with nobody exempt (the
        resolver's DNS is dropped), then raises FirewallError saying so: fail closed, loudly.
        """
        with self._ctl_lock:
            cgroup_match = cgroup_error = None
            if self.spec.resolver_cgroup and self.spec.resolver_uid is not None:
                try:
                    cgroup_match = resolver_cgroup_match(self.spec)
                except FirewallError as exc:    # fail closed: the ruleset, nobody exempt
                    cgroup_error = exc
            self._nft_run(static_set_declarations(self.spec, cgroup_match))
            for attempt in (1, 2):
                cmds = ruleset_commands(self.spec, self._chains())
                try:
                    self._nft_run(json.dumps({"nftables": cmds}), json_input=True)
                    break
                except FirewallError as exc:
                    if attempt == 2:
                        raise
                    log.info("ruleset transaction failed (%s); rereading and retrying", exc)
            flags = self._table_flags()
            if flags and flags & nl.NFT_TABLE_F_DORMANT:
                self._wake_table(flags)
            if cgroup_error is not None:
                raise cgroup_error

    def _wake_table(self, flags: int) -> None:
        """A dormant table filters nothing: clear the flag (nft's JSON cannot say this)."""
        body = (wire.attr(nl.NFTA_TABLE_NAME, wire.strz(self.spec.table))
                + wire.attr(nl.NFTA_TABLE_FLAGS, wire.be32(flags & ~nl.NFT_TABLE_F_DORMANT)))
        fails = self._socket("_ctl").transact([(nl.nft_type(nl.NFT_MSG_NEWTABLE), 0, wire.NFPROTO_INET, body)])
        if fails:
            raise self._error(f"cannot wake the dormant table: {fails[0]}",
                              errno=fails[0].errno)
        log.warning("table inet %s was dormant; woke it up", self.spec.table)

    def _nft_run(self, payload: str, json_input: bool = False) -> None:
        """Run one nft transaction (JSON or nft syntax): libnftables, else ``nft [-j] -f -``."""
        if self._nft is None:
            try:
                import nftables  # python3-nftables (Debian); optional
            except ImportError:
                self._nft = False
            else:
                self._nft = nftables.Nftables()
        if self._nft:
            self._nft.set_json_output(json_input)       # JSON output makes it read JSON input
            rc, _out, err = self._nft.cmd(payload)
        else:
            argv = [shutil.which("nft") or "/usr/sbin/nft", *(["-j"] if json_input else []), "-f", "-"]
            try:
                proc = subprocess.run(argv, input=payload, text=True, capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as exc:
                raise self._error(f"cannot run nft: {exc}") from None
            rc, err = proc.returncode, proc.stderr
        if rc != 0:
            raise self._error(f"nft refused the ruleset: {(err or '').strip() or f'exit {rc}'}")

    def revoke(self, addresses) -> None:
        """Remove grants now, in one batch; elements already gone are ignored.

        Uses DESTROYSETELEM (kernel 6.3+), which unlike DELSETELEM does not fail the whole
        batch over an element that expired meanwhile.
        """
        groups = []
        for v, name in self.grant_sets.items():
            mine = [a for a in addresses if a.version == v]
            if mine:
                groups.append((name, [nl.element(a.packed) for a in mine], mine))
        if groups:
            self._socket("_ctl").write_elements(nl.NFT_MSG_DESTROYSETELEM, self.spec.table, groups)

    def flush_grants(self, own_only: bool = False) -> None:
        """Empty the grant sets in one transaction; the chains (and drop policy) stay.

        Every instance's sets, or with ``own_only`` just this instance's (a resolver process
        that stops must not revoke what the others granted).  Nothing to do when the ruleset
        is absent.
        """
        names = (self.grant_sets.values() if own_only
                 else [n for _k, _v, n in all_grant_sets(self.spec)])
        reqs = [(nl.nft_type(nl.NFT_MSG_DELSETELEM), 0, wire.NFPROTO_INET,
                 nl.setelem_head(self.spec.table, name)) for name in names]
        fails = self._socket("_ctl").transact(reqs)
        if fails and not (fails[0].errno == errno_mod.ENOENT and self._table_flags() is None):
            f = fails[0]
            raise self._error(f"cannot flush grants: {f}",
                              errno=f.errno)

    def remove(self) -> None:
        """Delete the table (egress is open again); an absent table is not an error."""
        body = wire.attr(nl.NFTA_TABLE_NAME, wire.strz(self.spec.table))
        fails = self._socket("_ctl").transact([(nl.nft_type(nl.NFT_MSG_DELTABLE), 0, wire.NFPROTO_INET, body)])
        if fails and fails[0].errno != errno_mod.ENOENT:
            f = fails[0]
            raise self._error(f"cannot delete the table: {f}",
                              errno=f.errno)


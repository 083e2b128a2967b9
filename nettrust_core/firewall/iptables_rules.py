"""The iptables ruleset as data: ``iptables-restore --noflush`` input and ``ipset restore`` input.

The same policy as :mod:`.nftables_rules` (read its docstring: the issue-10 rules hold here
too), in iptables' terms.  With ``C`` = the table name upper-cased (``NETTRUST``) and ``t`` =
the table name (``nettrust``), IPv4 (``iptables-restore``)::

    *filter
    :C - [0:0]                                   # declared (an existing chain is flushed)
    :C_FWD - [0:0] :C_LAN - [0:0]                # hooks = ["output", "forward"]
    -A C -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A C -o lo -j ACCEPT
    -A C -p udp --sport 68 --dport 67 -d 255.255.255.255/32 -j ACCEPT          # allow_dhcp (+ servers)
    -A C -p udp -m owner --uid-owner U -m multiport --dports 53,853 -j ACCEPT  # resolver_uid
    -A C -p tcp -m owner --uid-owner U -m multiport --dports 53,853 -j ACCEPT  # (forward mode:
                                                   -d UPSTREAM --dport PORT per upstream instead;
                                                   with resolver_cgroup: -m cgroup --path P too)
    -A C -p udp -m multiport --dports 53,853 -j REJECT --reject-with icmp-admin-prohibited
    -A C -p tcp -m multiport --dports 53,853 -j REJECT --reject-with icmp-admin-prohibited
    -A C -m set --match-set t-static4 dst -j ACCEPT
    -A C -m set --match-set t4 dst -j CONNMARK --or-mark M      # lifecycle.liveness (ct_mark)
    -A C -m set --match-set t4 dst -j ACCEPT     # grants (instance k: t4_k)
    -A C -m limit --limit R/sec --limit-burst R -j NFLOG --nflog-group G --nflog-prefix nettrust
    -A C -p tcp -j REJECT --reject-with tcp-reset                              # action "reject"
    -A C -j REJECT --reject-with icmp-admin-prohibited                         # (or -j DROP)
    -A OUTPUT -j C                               # only when OUTPUT has no such jump yet
    COMMIT

IPv6 (``ip6tables-restore``) is the same with ``t-static6``/``t6``, ``icmp6-adm-prohibited``, the
DHCPv6 rule (546 -> 547 to ff02::1:2, fe80::/10, servers) and, with ``allow_icmpv6_nd``, the ND
rules (hop limit 255, to fe80::/10 or ff02::/16), solicitations/advertisements elsewhere only
from the kernel (``-j C_ND``: ``-m owner --socket-exists -j RETURN``, ``-j ACCEPT``) and MLD
(hop limit 1, to ff00::/8).  The forward chain ``C_FWD`` (``-A FORWARD -j C_FWD``) has no
loopback, ICMPv6, DHCP or resolver rule; it jumps to ``C_LAN`` first, which RETURNs only
packets entering a LAN interface from a LAN network and drops the rest.

iptables has no "default drop" for a chain of our own: the jump is inserted first in
OUTPUT/FORWARD and our chain ends in a verdict for everything, which is the same.  A chain's
rules are replaced atomically by one ``iptables-restore --noflush`` (one table commit).

The sets (``ipset restore``): grant sets ``hash:ip family inet|inet6 timeout 0 comment``
(``maxelem`` from ``set_size``) are only ever created with ``-exist`` (their elements survive);
the static sets are ``hash:net``, refilled in a temporary set and swapped in (no moment empty).
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import FirewallError
from .base import RulesetSpec
from .nftables_rules import DNS_PORTS, LOG_PREFIX, LOOPBACK
from .nftables_spec import validate_spec

ND_TYPES = ("router-solicitation", "router-advertisement", "neighbour-solicitation",
            "neighbour-advertisement", "redirect")
MLD_TYPES = ("130", "131", "132", "143")
_SETNAME_MAX = 31


def chain_name(spec: RulesetSpec) -> str:
    return spec.table.upper()


def grant_set_names(spec: RulesetSpec, instance: int) -> dict[int, str]:
    suffix = "" if instance == 0 else f"_{instance}"
    return {v: f"{spec.table}{v}{suffix}" for v in (4, 6)}


def static_set_names(spec: RulesetSpec) -> dict[int, str]:
    return {v: f"{spec.table}-static{v}" for v in (4, 6)}


def all_grant_set_names(spec: RulesetSpec) -> list[tuple[int, int, str]]:
    return [(k, v, n) for k in range(spec.instances) for v, n in grant_set_names(spec, k).items()]


def validate(spec: RulesetSpec) -> None:
    validate_spec(spec)
    longest = max([*(n for _k, _v, n in all_grant_set_names(spec)),
                   *static_set_names(spec).values()], key=len) + "-new"
    if len(longest) > _SETNAME_MAX or len(chain_name(spec)) + 4 > 28:
        raise FirewallError(f"table name {spec.table!r} is too long for ipset/iptables names "
                            f"(set {longest!r} > {_SETNAME_MAX} characters)", table=spec.table)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", spec.table):
        raise FirewallError(f"table name {spec.table!r}: letters, digits and _ only for iptables",
                            table=spec.table)


def _nets(version: int, items) -> list[str]:
    nets = [ipaddress.ip_network(x) for x in items]
    # one IP version at a time (collapse_addresses refuses a mix; its stub cannot say so)
    same = (n for n in nets if n.version == version)
    return [str(n) for n in ipaddress.collapse_addresses(same)]  # type: ignore[type-var]


def static_networks(spec: RulesetSpec, version: int) -> list[str]:
    return _nets(version, [*(n for n in LOOPBACK), *spec.static_hosts, *spec.static_networks])


def _reject(version: int) -> str:
    return "icmp-admin-prohibited" if version == 4 else "icmp6-adm-prohibited"


def _refuse(spec: RulesetSpec, version: int) -> str:
    return (f"-j REJECT --reject-with {_reject(version)}" if spec.action == "reject" else "-j DROP")


def _resolver_rules(spec: RulesetSpec, chain: str, version: int) -> list[str]:
    if spec.resolver_uid is None:
        return []
    who = f"-m owner --uid-owner {spec.resolver_uid}"
    if spec.resolver_cgroup:
        who += f" -m cgroup --path {spec.resolver_cgroup}"
    ports = ",".join(map(str, DNS_PORTS))
    out = []
    if not spec.upstreams:
        for proto in ("udp", "tcp"):
            out.append(f"-A {chain} -p {proto} {who} -m multiport --dports {ports} -j ACCEPT")
        return out
    plen = 32 if version == 4 else 128
    for address, port in spec.upstreams:
        if address.version != version:
            continue
        for proto in ("udp", "tcp"):
            out.append(f"-A {chain} -d {address}/{plen} -p {proto} {who} --dport {port} -j ACCEPT")
    return out


def _dhcp_rules(spec: RulesetSpec, chain: str, version: int) -> list[str]:
    if version == 4:
        dests, sport, dport = ["255.255.255.255"], 68, 67
    else:
        dests, sport, dport = ["ff02::1:2", "fe80::/10"], 546, 547
    dests += [str(a) for a in spec.dhcp_servers if a.version == version]
    return [f"-A {chain} -d {d} -p udp --sport {sport} --dport {dport} -j ACCEPT"
            for d in _nets(version, dests)]


def _icmpv6_rules(chain: str, nd_chain: str) -> list[str]:
    out = []
    for dest in ("fe80::/10", "ff02::/16"):
        for t in ND_TYPES:
            out.append(f"-A {chain} -d {dest} -p ipv6-icmp -m icmp6 --icmpv6-type {t} "
                       "-m hl --hl-eq 255 -j ACCEPT")
    for t in ("neighbour-solicitation", "neighbour-advertisement"):
        out.append(f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -m hl --hl-eq 255 "
                   f"-j {nd_chain}")
    for t in MLD_TYPES:
        out.append(f"-A {chain} -d ff00::/8 -p ipv6-icmp -m icmp6 --icmpv6-type {t} "
                   "-m hl --hl-eq 1 -j ACCEPT")
    return out


def _tail(spec: RulesetSpec, chain: str, version: int) -> list[str]:
    """DNS block, static set, grant sets, log, refusal: shared by output and forward."""
    ports = ",".join(map(str, DNS_PORTS))
    out = [f"-A {chain} -d {net} -p {proto} -m multiport --dports {ports} -j ACCEPT"
           for net in _nets(version, spec.dns_servers) for proto in ("udp", "tcp")]
    out += [f"-A {chain} -p {proto} -m multiport --dports {ports} {_refuse(spec, version)}"
            for proto in ("udp", "tcp")]
    out.append(f"-A {chain} -m set --match-set {static_set_names(spec)[version]} dst -j ACCEPT")
    for k in range(spec.instances):
        name = grant_set_names(spec, k)[version]
        if spec.ct_mark is not None:
            out.append(f"-A {chain} -m set --match-set {name} dst -j CONNMARK --or-mark "
                       f"{spec.ct_mark:#x}")
        out.append(f"-A {chain} -m set --match-set {name} dst -j ACCEPT")
    if spec.log_group is not None:
        out.append(f"-A {chain} -m limit --limit {spec.log_rate}/sec --limit-burst {spec.log_rate} "
                   f"-j NFLOG --nflog-group {spec.log_group} --nflog-prefix {LOG_PREFIX}")
    if spec.action == "reject":
        out.append(f"-A {chain} -p tcp -j REJECT --reject-with tcp-reset")
    out.append(f"-A {chain} {_refuse(spec, version)}")
    return out


def chains(spec: RulesetSpec, version: int) -> dict[str, list[str]]:
    """Our chains and their rules, in order (regular chains first)."""
    c = chain_name(spec)
    out: dict[str, list[str]] = {}
    nd = f"{c}_ND"
    if version == 6 and spec.allow_icmpv6_nd and "output" in spec.hooks:
        out[nd] = [f"-A {nd} -m owner --socket-exists -j RETURN", f"-A {nd} -j ACCEPT"]
    if "forward" in spec.hooks:
        lan = f"{c}_LAN"
        rules = []
        ifaces: list[str | None] = list(spec.lan_interfaces) or [None]
        # LAN networks configured but none of this family: nothing returns, all is dropped.
        nets: list[str | None] = (list(_nets(version, spec.lan_networks)) if spec.lan_networks
                                  else [None])
        for iface in ifaces:
            for net in nets:
                match = (f" -i {iface}" if iface else "") + (f" -s {net}" if net else "")
                rules.append(f"-A {lan}{match} -j RETURN")
        rules.append(f"-A {lan} -j DROP")
        out[lan] = rules
    if "output" in spec.hooks:
        rules = [f"-A {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                 f"-A {c} -o lo -j ACCEPT"]
        if version == 6 and spec.allow_icmpv6_nd:
            rules += _icmpv6_rules(c, nd)
        if spec.allow_dhcp:
            rules += _dhcp_rules(spec, c, version)
        rules += _resolver_rules(spec, c, version)
        rules += [f"-A {c} -d {a}/{32 if version == 4 else 128} -p tcp --dport {port} -j ACCEPT"
                  for a, port in spec.own_services if a.version == version]
        out[c] = rules + _tail(spec, c, version)
    if "forward" in spec.hooks:
        f = f"{c}_FWD"
        out[f] = ([f"-A {f} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                   f"-A {f} -j {c}_LAN"] + _tail(spec, f, version))
    return out


def jumps(spec: RulesetSpec) -> dict[str, str]:
    """Built-in chain -> the chain of ours it must jump to first."""
    c = chain_name(spec)
    return {**({"OUTPUT": c} if "output" in spec.hooks else {}),
            **({"FORWARD": f"{c}_FWD"} if "forward" in spec.hooks else {})}


def restore_input(spec: RulesetSpec, version: int,
                  present_jumps: dict[tuple[str, str], int] | None = None,
                  stale_chains: tuple[str, ...] = ()) -> str:
    """``iptables-restore --noflush`` input: declare and fill our chains, add missing jumps
    (``present_jumps``: (built-in chain, our chain) -> how many such jumps there are now;
    extra ones are deleted), and drop ``stale_chains`` (ours, no longer wanted) after
    unhooking them."""
    present_jumps = present_jumps or {}
    lines = ["*filter"]
    ours = chains(spec, version)
    lines += [f":{name} - [0:0]" for name in ours]
    for rules in ours.values():
        lines += rules
    for builtin, target in jumps(spec).items():
        have = present_jumps.get((builtin, target), 0)
        if have == 0:
            lines.append(f"-I {builtin} 1 -j {target}")
        for _ in range(max(0, have - 1)):
            lines.append(f"-D {builtin} -j {target}")
    for (builtin, target), n in present_jumps.items():
        if target in stale_chains:
            lines += [f"-D {builtin} -j {target}"] * n
    for name in stale_chains:
        lines.append(f"-F {name}")
        lines.append(f"-X {name}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipset_input(spec: RulesetSpec) -> str:
    """``ipset restore`` input: grant sets created if absent, static sets refilled by swap."""
    lines = []
    size = f" maxelem {spec.set_size}" if spec.set_size else ""
    for _k, v, name in all_grant_set_names(spec):
        family = "inet" if v == 4 else "inet6"
        lines.append(f"create {name} hash:ip family {family} timeout 0 comment{size} -exist")
    for v, name in static_set_names(spec).items():
        family = "inet" if v == 4 else "inet6"
        new = f"{name}-new"
        lines.append(f"create {name} hash:net family {family} -exist")
        lines.append(f"create {new} hash:net family {family} -exist")
        lines.append(f"flush {new}")
        lines += [f"add {new} {net}" for net in static_networks(spec, v)]
        lines.append(f"swap {new} {name}")
        lines.append(f"destroy {new}")
    return "\n".join(lines) + "\n"

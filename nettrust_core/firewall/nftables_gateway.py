"""The gateway's part of the nftables ruleset (issue 13), as data like :mod:`.nftables_rules`.

* ``gateway.per_client``: the forward chain accepts ``ip saddr . ip daddr @clients4`` (and
  ``ip6 saddr . ip6 daddr @clients6``) instead of the destination-only grant sets; the sets are
  concatenations with timeouts, one pair per instance like the grant sets
  (``clients4``/``clients6``, ``clients4_<k>``/``clients6_<k>``).
* ``gateway.open_networks``: ``ip saddr { … } accept`` in forward, after the LAN-side check
  and the DNS/DoT refusal (an open network still resolves through this gateway only).
* Strikes (``gateway.strike_threshold`` / ``strike_dns_rate``): in nft syntax (nft 1.0.6's JSON
  cannot say a meter), run with the static set declarations::

      set strike4 { type ipv4_addr; flags dynamic,timeout; size 65535; }     # and strike6
      set dnsrate4 { type ipv4_addr; flags dynamic,timeout; timeout 10s; size 65535; }
      chain strikes {
          type filter hook prerouting priority P; policy accept;
          iifname { <lan> } fib saddr . iif oif missing counter name "spoofed" drop
          iif "lo" return
          ip saddr { <management_networks> } return                  # never struck
          meta l4proto { tcp, udp } th dport { 53, 853 } ip saddr @strike4 counter name "struck" drop
          udp dport 53 update @dnsrate4 { ip saddr limit rate over R/second burst R packets }
              add @strike4 { ip saddr timeout PENALTY } counter name "struck" drop  # strike_dns_rate
          … the same for IPv6 …
      }

* ``gateway.drop_input``: an ``input`` chain, policy drop::

      chain input {
          type filter hook input priority P; policy drop;
          ct state established,related accept
          iif "lo" accept
          icmpv6 type { nd-… } ip6 hoplimit 255 accept            # on-link by construction
          icmpv6 type { mld-… } ip6 hoplimit 1 ip6 saddr { fe80::/10, :: } accept
          udp sport 67 udp dport 68 accept                         # the gateway's DHCP client
          udp sport 547 udp dport 546 accept
          meta nfproto ipv4 iifname { <lan> } [ip saddr { <lan_networks> }] meta l4proto { tcp, udp } th dport { 53, 853 } accept
          iifname { <lan> } udp sport 68 udp dport 67 accept       # a DHCP server here
          meta nfproto ipv4 ip saddr { <management_networks> } tcp dport { <ports> } accept
          … the same for IPv6 …
          counter name "rejected" drop
      }
"""

from __future__ import annotations

import math
import sys

from ..netlink import nftables as nl
from .base import IPAddress, MacAddress, RulesetSpec
from .nftables_rules import (COUNTER, MLD_TYPES, ND_TYPES, _DNS, _TCP_UDP, _accept, _field,
                             _match, _meta, _nets)

#: Gateway mode (``spec.per_client``): ``client . destination`` grant sets, per instance.
CLIENT_SETS = {4: "clients4", 6: "clients6"}


def client_sets(instance: int) -> dict[int, str]:
    """The ``client . destination`` sets one resolver process writes (gateway mode), by version."""
    if instance == 0:
        return dict(CLIENT_SETS)
    return {v: f"{name}_{instance}" for v, name in CLIENT_SETS.items()}


def pair_key(client: IPAddress | MacAddress, address: IPAddress) -> bytes:
    """A ``client . destination`` element's key (a MAC's 6 bytes padded to 8)."""
    if isinstance(client, MacAddress):
        return nl.concat_key(client.packed, address.packed)
    return client.packed + address.packed           # already register-aligned


def all_client_sets(spec: RulesetSpec) -> list[tuple[int, int, str]]:
    """``(instance, version, set name)`` of every per-client set (none unless ``per_client``)."""
    if not spec.per_client:
        return []
    return [(k, v, name) for k in range(spec.instances) for v, name in client_sets(k).items()]


def open_network_rules(spec: RulesetSpec) -> list[list[dict]]:
    """Forward only (``gateway.open_networks``): these sources go anywhere without a grant --
    after the LAN-side check and the DNS/DoT refusal, so they still use our resolver."""
    rules = []
    for proto, version in (("ip", 4), ("ip6", 6)):
        nets = _nets(n for n in spec.open_networks if n.version == version)
        if nets:
            rules.append(_accept(_match(_field(proto, "saddr"), {"set": nets})))
    return rules


def _lan_side(spec: RulesetSpec, proto: str, version: int) -> list[dict] | None:
    """Matches for "entered from the client-facing side" in one family (None: no such side)."""
    matches = []
    if spec.lan_interfaces:
        matches.append(_match(_meta("iifname"), {"set": list(spec.lan_interfaces)}))
    if spec.lan_networks:
        nets = _nets(n for n in spec.lan_networks if n.version == version)
        if not nets:
            return None
        matches.append(_match(_field(proto, "saddr"), {"set": nets}))
    return matches


def input_rules(spec: RulesetSpec) -> list[list[dict]]:
    """``gateway.drop_input``: what may reach the gateway itself; the chain's policy drops the
    rest (counted).  DNS and DoT only from the LAN side, management ports only from the
    management networks (or the LAN side), DHCP (server and client side), ICMPv6 ND and MLD in
    shapes that cannot come from off-link, and the ICMP errors that belong to connections."""
    hoplimit = lambda n: _match(_field("ip6", "hoplimit"), n)     # noqa: E731
    rules = [_accept(_match({"ct": {"key": "state"}}, ["established", "related"], "in")),
             _accept(_match(_meta("iif"), "lo")),
             _accept(_match(_field("icmpv6", "type"), {"set": list(ND_TYPES)}), hoplimit(255)),
             _accept(_match(_field("icmpv6", "type"), {"set": list(MLD_TYPES)}), hoplimit(1),
                     _match(_field("ip6", "saddr"), {"set": _nets(["fe80::/10", "::/128"])})),
             # the gateway's own DHCP client (its WAN side): a server's replies
             _accept(_match(_field("udp", "sport"), 67), _match(_field("udp", "dport"), 68)),
             _accept(_match(_field("udp", "sport"), 547), _match(_field("udp", "dport"), 546))]
    for proto, version in (("ip", 4), ("ip6", 6)):
        family = _match(_meta("nfproto"), f"ipv{version}")
        side = _lan_side(spec, proto, version)
        if side is not None:
            rules.append(_accept(family, *side, _TCP_UDP, _DNS))
            sport, dport = (68, 67) if version == 4 else (546, 547)
            # a DHCP server on the gateway: the clients' requests (from 0.0.0.0 / link-local,
            # so by interface when lan_interfaces is set)
            dhcp_side = ([m for m in side if "iifname" in repr(m)] or side)
            rules.append(_accept(*dhcp_side, _match(_field("udp", "sport"), sport),
                                 _match(_field("udp", "dport"), dport)))
        if spec.management_ports:
            ports = _match(_field("tcp", "dport"), {"set": sorted(set(spec.management_ports))})
            if spec.management_networks:
                nets = _nets(n for n in spec.management_networks if n.version == version)
                if nets:
                    rules.append(_accept(family, _match(_field(proto, "saddr"), {"set": nets}),
                                         ports))
            elif side is not None:
                rules.append(_accept(family, *side, ports))
    rules.append([{"counter": COUNTER}, {"drop": None}])
    return rules


#: The strike machinery's names (see the module docstring).
STRIKE_CHAIN = "strikes"
UID_STRIKE_CHAIN, UID_STRIKE_SET = "strikes_out", "strike_uids"
STRIKE_SETS = {4: "strike4", 6: "strike6"}
RATE_SETS = {4: "dnsrate4", 6: "dnsrate6"}
STRUCK, SPOOFED = "struck", "spoofed"


def strike_declarations(spec: RulesetSpec, family: str = "inet") -> str:
    """The strike sets, counters and chain in nft syntax ("" without strikes).

    Built only from validated values: the table name, interface names, networks, integers.
    Re-running it is idempotent (the sets are declared as the kernel keeps them once a rule
    adds to them); the chain is flushed and refilled in the same transaction.
    """
    if not (spec.strikes or spec.uid_strikes):
        return ""
    t = f"{family} {spec.table}"
    lines = [f"add table {t}", f"add counter {t} {STRUCK}", f"add counter {t} {SPOOFED}"]
    if spec.uid_strikes:
        exempt = ", ".join(str(u) for u in sorted({0, spec.resolver_uid or 0}))
        lines += [f"add set {t} {UID_STRIKE_SET} {{ typeof meta skuid; flags timeout; }}",
                  f"add chain {t} {UID_STRIKE_CHAIN} {{ type filter hook output priority "
                  f"{spec.priority}; policy accept; }}", f"flush chain {t} {UID_STRIKE_CHAIN}",
                  f"add rule {t} {UID_STRIKE_CHAIN} meta skuid {{ {exempt} }} return",
                  f"add rule {t} {UID_STRIKE_CHAIN} meta l4proto {{ tcp, udp }} th dport "
                  f'{{ 53, 853 }} meta skuid @{UID_STRIKE_SET} counter name "{STRUCK}" drop']
    if not spec.strikes:
        return "\n".join(lines) + "\n"
    penalty = max(1, int(spec.strike_penalty))
    for v in (4, 6):
        lines.append(f"add set {t} {STRIKE_SETS[v]} {{ type ipv{v}_addr; flags dynamic,timeout; "
                     "size 65535; }")
        if spec.strike_rate:
            lines.append(f"add set {t} {RATE_SETS[v]} {{ type ipv{v}_addr; flags dynamic,timeout; "
                         "timeout 10s; size 65535; }")
    lines += [f"add chain {t} {STRIKE_CHAIN} {{ type filter hook prerouting priority "
              f"{spec.priority}; policy accept; }}", f"flush chain {t} {STRIKE_CHAIN}"]
    rule = f"add rule {t} {STRIKE_CHAIN} "
    if spec.lan_interfaces:
        names = ", ".join(f'"{i}"' for i in spec.lan_interfaces)
        lines.append(rule + f'iifname {{ {names} }} fib saddr . iif oif missing '
                     f'counter name "{SPOOFED}" drop')
    lines.append(rule + 'iif "lo" return')
    for proto, v in (("ip", 4), ("ip6", 6)):
        nets = [str(n) for n in spec.management_networks if n.version == v]
        if nets:
            lines.append(rule + f"{proto} saddr {{ {', '.join(nets)} }} return")
    for proto, v in (("ip", 4), ("ip6", 6)):
        lines.append(rule + f"meta l4proto {{ tcp, udp }} th dport {{ 53, 853 }} {proto} saddr "
                     f'@{STRIKE_SETS[v]} counter name "{STRUCK}" drop')
        if spec.strike_rate:
            r = int(spec.strike_rate)
            lines.append(rule + f"meta nfproto ipv{v} udp dport 53 update @{RATE_SETS[v]} "
                         f"{{ {proto} saddr limit rate over {r}/second burst {r} packets }} "
                         f"add @{STRIKE_SETS[v]} {{ {proto} saddr timeout {penalty}s }} "
                         f'counter name "{STRUCK}" drop')
    return "\n".join(lines) + "\n"


def strike_element(address: IPAddress | int, seconds: float) -> tuple[str, list[bytes], list]:
    """``(set, [element], [address])`` striking an address, or a uid (an int: 32 bits in host
    order, as ``meta skuid`` loads it), for ``seconds``."""
    if isinstance(address, int):
        key, name = address.to_bytes(4, sys.byteorder), UID_STRIKE_SET
    else:
        key, name = address.packed, STRIKE_SETS[address.version]
    return name, [nl.element(key, max(1000, math.ceil(seconds * 1000)))], [address]

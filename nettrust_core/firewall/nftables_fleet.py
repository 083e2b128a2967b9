"""The fleet's rules (:mod:`nettrust_core.fleet`), part of :func:`.nftables_rules.chain_rules`:
a follower's masters' DNS ports for everyone (``fleet.masters``), a fleet node's Redis for this
host only (``fleet.redis_url``)."""

from __future__ import annotations

from .base import RulesetSpec
from .nftables_rules import _DNS, _TCP_UDP, _accept, _field, _match, _meta, _nets


def dns_server_rules(spec: RulesetSpec) -> list[list[dict]]:
    """``spec.dns_servers`` (a fleet follower's masters): TCP or UDP to their port 53/853 from
    anyone, output and forward, before the DNS refusal; nothing else of them."""
    rules = []
    for proto, version in (("ip", 4), ("ip6", 6)):
        nets = _nets(a for a in spec.dns_servers if a.version == version)
        if nets:
            rules.append(_accept(_TCP_UDP, _match(_field(proto, "daddr"), {"set": nets}), _DNS))
    return rules


def own_service_rules(spec: RulesetSpec) -> list[list[dict]]:
    """``spec.own_services`` (a fleet node's Redis): TCP to that address and port, output only."""
    rules = []
    for proto, version in (("ip", 4), ("ip6", 6)):
        pairs = [{"concat": [str(a), port]} for a, port in spec.own_services if a.version == version]
        if pairs:
            rules.append(_accept(_match(_meta("l4proto"), "tcp"),
                                 _match({"concat": [_field(proto, "daddr"), _field("th", "dport")]},
                                        {"set": pairs})))
    return rules

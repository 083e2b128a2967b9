"""Audit mode (firewall.enforcement = "audit"): the ruleset of :mod:`.nftables_rules` with every
refusal turned into log, count and accept -- an admin deploys NetTrust, watches what it *would*
refuse (events say "would refuse"), and only then enforces.
"""

from __future__ import annotations

from .base import RulesetSpec
from .nftables_rules import COUNTER

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

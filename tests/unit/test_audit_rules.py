"""Audit mode (firewall.enforcement = "audit") as data: every refusing rule of both chains
becomes log + count + accept; nothing else changes; events say "would refuse"."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace

from nettrust_core.config import parse_config
from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.nftables_audit import AUDIT_PREFIX
from nettrust_core.firewall.nftables_rules import COUNTER, chain_rules
from nettrust_core.lifecycle import unauthorized
from nettrust_core.lifecycle.unauthorized import UnauthorizedWatcher
from nettrust_core.netlink.nflog import Attempt
from nettrust_core.ruleset import ruleset_spec

net = ipaddress.ip_network
FULL = RulesetSpec(resolver_uid=1, hooks=("output", "forward"), lan_interfaces=("lan0",),
                   lan_networks=(net("10.0.0.0/24"),), log_group=5)


def verdicts(rule):
    return {k for expr in rule for k in expr if k in ("accept", "drop", "reject")}


def test_enforce_refuses_and_audit_refuses_nothing_in_either_chain():
    for hook in ("output", "forward"):
        enforce = chain_rules(FULL, hook)
        audit = chain_rules(replace(FULL, audit=True), hook)
        assert any(verdicts(r) & {"drop", "reject"} for r in enforce)          # the control
        assert not any(verdicts(r) & {"drop", "reject"} for r in audit)
        refusing = [r for r in enforce if verdicts(r) & {"drop", "reject"}]
        # each refusal: a rate-limited log with the audit prefix, then counted and accepted
        logs = [r for r in audit if any("log" in e for e in r)]
        assert len(logs) == len(refusing)
        assert all(r[-1]["log"] == {"group": 5, "prefix": AUDIT_PREFIX} and
                   any("limit" in e for e in r) for r in logs)
        counted = [r for r in audit if {"counter": COUNTER} in r]
        assert len(counted) == len(refusing) and all(r[-1] == {"accept": None} for r in counted)
        # every rule that did not refuse is kept as it was, in order
        kept = [r for r in enforce if not verdicts(r) & {"drop", "reject"}
                and not any("log" in e for e in r)]
        assert [r for r in audit if r in kept] == kept


def test_audit_without_log_group_still_counts_and_accepts():
    audit = chain_rules(replace(FULL, audit=True, log_group=None), "output")
    assert not any("log" in e for r in audit for e in r)
    assert audit[-1] == [{"counter": COUNTER}, {"accept": None}]


def test_the_config_key_reaches_the_spec_and_combines_with_either_mode():
    for mode in ("denylist", "allowlist"):
        config = parse_config(f'[general]\nmode = "{mode}"\n[firewall]\nenforcement = "audit"\n'
                              'resolver_user = ""\n', "t.toml")
        assert ruleset_spec(config).audit is True and config.mode == mode
    assert ruleset_spec(parse_config('[firewall]\nresolver_user = ""\n', "t.toml")).audit is False


def test_the_watcher_reports_the_audit_prefix_as_would_refuse():
    class Reporter:
        def __init__(self):
            self.events = []

        def event(self, kind, **fields):
            self.events.append((kind, fields))

    assert unauthorized.AUDIT_PREFIX == AUDIT_PREFIX
    reporter, counters = Reporter(), Counter()
    watcher = UnauthorizedWatcher(5, reporter, counters)
    for prefix in ("nettrust", AUDIT_PREFIX):
        watcher.handle(Attempt("10.0.0.2", "198.51.100.9", "tcp", 443, "output", prefix, None, None))
    assert [f["verdict"] for _, f in reporter.events] == ["refused", "would refuse"]
    assert counters["unauthorized"] == 2 and counters["would_refuse"] == 1

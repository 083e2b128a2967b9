"""The ``record-only`` backend (NetworkPolicy mode without privileges), without a kernel: it
never fails a grant, remembers what it granted until the expiry, stays bounded, and a resolver
using only it needs no CAP_NET_ADMIN — while any kernel backend still does (the control).
The kernel side (Unbound holding only CAP_NET_BIND_SERVICE) is
tests/integration/test_kube_networkpolicy.py."""

from __future__ import annotations

import ipaddress

import pytest

from nettrust_core.answer import A, Answer, Record, Security
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import parse_config
from nettrust_core.errors import FirewallError
from nettrust_core.firewall import registry
from nettrust_core.firewall.base import Grant, RulesetSpec
from nettrust_core.firewall.record_only import RecordOnlyBackend, needs_net_admin
from nettrust_core.ruleset import make_backend
from nettrust_core.unbound_settings import CAP_NET_ADMIN, privilege_problem

ip = ipaddress.ip_address
NO_CAPS = 1 << 10                          # CAP_NET_BIND_SERVICE only, as the pod holds
RECORD_ONLY = ('[firewall]\nbackends = ["record-only"]\n'
               '[lifecycle]\nliveness = false\nunauthorized = false\n')


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_registry_knows_record_only_and_the_config_accepts_it():
    assert registry.backend_class("record-only") is RecordOnlyBackend
    config = parse_config(RECORD_ONLY)
    fan = make_backend(config)
    assert fan.names == ("record-only",)
    assert not needs_net_admin(config.firewall.backends)
    assert needs_net_admin(["record-only", "nftables"]) and needs_net_admin(["recording"])


def test_grants_are_remembered_until_they_expire_and_never_shortened():
    clock = Clock()
    b = RecordOnlyBackend(clock=clock)
    b.ensure()
    b.grant([Grant(ip("198.51.100.7"), 60, "api.example.com"), Grant(ip("2001:db8::7"), 5)])
    b.grant([Grant(ip("198.51.100.7"), 10)])                 # shorter: kept at 60
    assert b.lookup(ip("198.51.100.7")) == pytest.approx(60)
    clock.now += 6
    assert b.lookup(ip("2001:db8::7")) is None
    assert [g.address for g in b.list_grants()] == [ip("198.51.100.7")]
    b.revoke([ip("198.51.100.7")])
    assert b.lookup(ip("198.51.100.7")) is None and b.list_grants() == []
    st = b.status()
    assert st.present and st.backend == "record-only" and st.family == "none"


def test_client_pairs_are_kept_apart_from_host_grants():
    b = RecordOnlyBackend()
    b.grant([Grant(ip("198.51.100.7"), 60, "x", ip("10.98.1.2"))])
    assert b.lookup(ip("198.51.100.7")) is None               # not granted to everyone
    assert b.lookup_pair(ip("10.98.1.2"), ip("198.51.100.7")) == pytest.approx(60, abs=1)
    assert b.lookup_pair(ip("10.98.2.2"), ip("198.51.100.7")) is None
    assert [(p.client, p.address) for p in b.list_pairs()] == [(ip("10.98.1.2"), ip("198.51.100.7"))]
    b.revoke_pairs([(ip("10.98.1.2"), ip("198.51.100.7"))])
    assert b.list_pairs() == []
    with pytest.raises(FirewallError, match="cannot drop"):
        b.strike(ip("10.98.1.2"), 10)


def test_past_the_set_size_the_nearest_expiries_go_first():
    clock = Clock()
    b = RecordOnlyBackend(RulesetSpec(set_size=100), clock=clock)
    b.grant([Grant(ip(f"198.18.0.{i}"), 10 + i) for i in range(101)])
    kept = {g.address for g in b.list_grants()}
    assert len(kept) == 95 and ip("198.18.0.100") in kept and ip("198.18.0.0") not in kept


def test_an_answer_is_granted_and_reported_through_record_only():
    config = parse_config(RECORD_ONLY)
    backend = make_backend(config)
    auth = Authorizer(config, backend)
    auth.start()
    try:
        rec = Record("api.example.com", A, 300, ip("198.51.100.7"))
        decision = auth.authorize(Answer("api.example.com", A, 0, Security.INSECURE, (rec,),
                                        client="10.98.1.2"))
        assert decision.error is None and decision.written == 1
        assert backend.lookup(ip("198.51.100.7")) is not None
    finally:
        auth.stop()


def test_record_only_needs_no_cap_net_admin_but_nftables_does():
    config = parse_config(RECORD_ONLY)
    assert privilege_problem(config, 0, NO_CAPS) is None
    # control: the same capabilities with the default (nftables) backend refuse, saying why
    why = privilege_problem(parse_config('[firewall]\nresolver_user = ""\n'), 0, NO_CAPS)
    assert why is not None and "no CAP_NET_ADMIN" in why
    assert privilege_problem(parse_config('[firewall]\nresolver_user = ""\n'), 0,
                             NO_CAPS | 1 << CAP_NET_ADMIN) is None


def test_record_only_with_kernel_reading_lifecycle_features_says_which_keys():
    config = parse_config('[firewall]\nbackends = ["record-only"]\n')
    why = privilege_problem(config, 0, NO_CAPS)
    assert why is not None and "lifecycle.liveness" in why and "lifecycle.unauthorized" in why
    assert privilege_problem(config, 0, NO_CAPS | 1 << CAP_NET_ADMIN) is None


def test_the_networkpolicy_agent_pool_renders_a_record_only_resolver():
    from nettrust_core.kube.render import agent_pool_objects
    pool = {"apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool", "metadata": {"name": "p", "uid": "u"},
            "spec": {"image": "x", "enforcement": "networkpolicy"}}
    objects = agent_pool_objects(pool)
    toml = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["nettrust.toml"]
    config = parse_config(toml)
    assert config.firewall.backends == ("record-only",)
    assert privilege_problem(config, 0, NO_CAPS) is None
    ds = next(o for o in objects if o["kind"] == "DaemonSet")
    caps = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}

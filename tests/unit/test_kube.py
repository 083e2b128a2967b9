"""Kubernetes renderers, CRDs and the shipped manifests, offline: desired-state semantics, every
rendered object round-tripped through the kubernetes client's models (a misspelt field is lost in
the round trip and fails), custom resources against the CRD schemas, and the committed YAML (raw
manifests and the Helm chart) equal to what the code renders."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import require
from nettrust_core.grant_feed import FeedGrant
from nettrust_core.kube.bundle import operator_objects
from nettrust_core.kube.crds import CRDS, validate
from nettrust_core.kube.desired import Desired, Pod, desired, selects
from nettrust_core.kube.render import agent_pool_objects, calico_network_set, cilium_policy, network_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _client():
    try:
        import jsonschema  # noqa: F401
        from kubernetes import client
    except ImportError:
        require(["kubernetes client / jsonschema missing (pip install 'nettrust[operator]')"], "operator extra")
    return client


def _policy(**spec):
    base = {"podSelector": {"matchLabels": {"app": "web"}}, "domains": ["**.example.com"]}
    return {"apiVersion": "nettrust.io/v1alpha1", "kind": "EgressPolicy",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"}, "spec": {**base, **spec}}


PODS = [Pod("shop", "web-1", ("10.0.0.5", "fd00::5"), {"app": "web", "tier": "front"}),
        Pod("shop", "db-1", ("10.0.0.6",), {"app": "db"}),
        Pod("other", "web-2", ("10.0.0.7",), {"app": "web"})]


def test_desired_is_the_live_grants_of_the_selected_pods_to_allowed_names():
    grants = [FeedGrant("10.0.0.5", "198.51.100.1", "api.example.com", 200),
              FeedGrant("fd00::5", "2001:db8::1", "cdn.example.com", 200),
              FeedGrant("10.0.0.6", "198.51.100.2", "api.example.com", 200),     # db pod: not selected
              FeedGrant("10.0.0.7", "198.51.100.3", "api.example.com", 200),     # another namespace
              FeedGrant("10.0.0.5", "198.51.100.4", "example.com", 200),         # apex: not **.
              FeedGrant("10.0.0.5", "198.51.100.5", "api.example.com", 90),      # expired at 100
              FeedGrant(None, "198.51.100.6", "api.example.com", 200)]           # the node's own
    got = desired(_policy(), PODS, grants, now=100)
    assert got.cidrs() == ["198.51.100.1/32", "2001:db8::1/128"] and got.dropped == 0


def test_ttl_floor_ceiling_previous_and_cap():
    grants = [FeedGrant("10.0.0.5", f"192.0.2.{i}", "a.example.com", 100 + i) for i in range(1, 6)]
    got = desired(_policy(ttl={"minSeconds": 50, "maxSeconds": 30}), PODS, grants, now=100)
    assert set(got.addresses.values()) == {130.0}                   # ceiling wins over the floor
    got = desired(_policy(ttl={"minSeconds": 50}), PODS, grants, now=100)
    assert got.addresses["192.0.2.1"] == 150.0
    later = desired(_policy(ttl={"minSeconds": 50}), PODS, [], now=140, previous=got.addresses)
    assert len(later.addresses) == 5                                 # held by the floor, grants gone
    assert desired(_policy(), PODS, [], now=151, previous=got.addresses).addresses == {}
    capped = desired(_policy(maxAddresses=2), PODS, grants, now=100)
    assert capped.cidrs() == ["192.0.2.4/32", "192.0.2.5/32"] and capped.dropped == 3


def test_label_selector_semantics():
    labels = {"app": "web", "tier": "front"}
    assert selects({}, labels)
    assert selects({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}, labels)
    assert not selects({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels)
    assert selects({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert not selects({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not selects({"matchLabels": {"app": "db"}}, labels)


def _model_name(obj) -> str:
    kind = obj["kind"]
    version = obj["apiVersion"].split("/")[-1].capitalize()
    return f"{version}{kind}"


def _roundtrip(client, obj) -> None:
    api = client.ApiClient()
    model = api._ApiClient__deserialize(obj, _model_name(obj))    # required fields are checked here
    back = api.sanitize_for_serialization(model)
    assert back == obj, f"{obj['kind']}: fields lost or changed in the kubernetes model round trip"


def test_every_rendered_builtin_object_is_a_valid_kubernetes_object():
    client = _client()
    wanted = Desired({"198.51.100.1": 1.0, "2001:db8::1": 1.0}, 0)
    pool = {"apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool", "metadata": {"name": "p", "uid": "u-2"},
            "spec": {"image": "nettrust:1", "upstreamDNS": ["10.96.0.10"],
                     "sharedState": {"backend": "redis", "endpoint": "rediss://r:6379", "tlsSecretRef": "fleet"}}}
    objects = [network_policy(_policy(ports=[{"port": 443}]), wanted), network_policy(_policy(), Desired({}, 0)),
               *agent_pool_objects(pool), *agent_pool_objects({**pool, "spec": {"image": "x",
                                                                                 "enforcement": "networkpolicy"}}),
               *operator_objects("nettrust:1")]
    for obj in objects:
        _roundtrip(client, obj)
    with pytest.raises(ValueError):       # a missing required field is caught offline
        _roundtrip(client, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"name": "x"}, "spec": {"podSelector": {},
                                                                "egress": [{"to": [{"ipBlock": {}}]}]}})


def test_custom_resources_and_the_non_builtin_renderings_follow_their_schemas():
    _client()
    for example in (DEPLOY / "kubernetes" / "examples").glob("*.yaml"):
        validate(yaml.safe_load(example.read_text()))
    for bad, where in ((_policy(domains=["bad domain!"]), "spec/domains/0"),
                       (_policy(ports=[{"port": 70000}]), "spec/ports/0/port"),
                       (_policy(enforcement="iptables"), "spec/enforcement")):
        with pytest.raises(ValueError, match=where):
            validate(bad)
    cnp = cilium_policy(_policy(domains=["api.stripe.com", "*.example.com", "**.cdn.example.com"]))
    assert cnp["spec"]["egress"][1]["toFQDNs"] == [{"matchName": "api.stripe.com"}, {"matchPattern": "*.example.com"},
                                                   {"matchPattern": "**.cdn.example.com"}]
    ns = calico_network_set(_policy(), Desired({"192.0.2.1": 1.0}, 0))
    assert ns["spec"]["nets"] == ["192.0.2.1/32"] and ns["metadata"]["labels"]["nettrust.io/egress-policy"] == "web"


def test_committed_manifests_equal_the_rendering():
    shipped = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "nettrust-operator.yaml").read_text()) if d]
    assert shipped == operator_objects("nettrust:latest"), "regenerate: python -m nettrust_core.kube.bundle --write"
    crds = [yaml.safe_load(p.read_text()) for p in sorted((DEPLOY / "helm" / "nettrust" / "crds").glob("*.yaml"))]
    assert sorted(crds, key=lambda c: c["metadata"]["name"]) == sorted(CRDS, key=lambda c: c["metadata"]["name"])


def test_helm_chart_renders_the_same_objects():
    """No helm binary here (not in Debian 12): the chart's templates use only plain value
    substitutions, which this test performs, and the result must equal the bundle."""
    chart = DEPLOY / "helm" / "nettrust"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    text = (chart / "templates" / "operator.yaml").read_text()
    used = set(re.findall(r"\{\{[^}]*\}\}", text))
    assert used <= {"{{ .Values.image }}", "{{ .Values.grantFeed }}", "{{ .Values.grantFeedTlsSecret }}",
                    "{{ .Release.Namespace }}"}, used
    text = (text.replace("{{ .Values.image }}", values["image"]).replace("{{ .Values.grantFeed }}", values["grantFeed"])
            .replace("{{ .Values.grantFeedTlsSecret }}", values["grantFeedTlsSecret"])
            .replace("{{ .Release.Namespace }}", "nettrust-system"))
    rendered = [d for d in yaml.safe_load_all(text) if d]
    assert rendered == operator_objects(values["image"], "nettrust-system", values["grantFeed"],
                                        values["grantFeedTlsSecret"])[1 + len(CRDS):]


def test_render_verb_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_policy(ports=[{"port": 70000}])))
    run = subprocess.run([sys.executable, "-m", "nettrust_core.cli", "kube", "render", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and str(bad) in run.stderr and "spec/ports/0/port" in run.stderr


def test_the_resolver_and_the_cli_never_import_kopf_kubernetes_or_boto3():
    code = ("import sys, nettrust_core.service, nettrust_core.cli, nettrust_core.kube.render, "
            "nettrust_core.kube.desired, nettrust_core.cloud.sink;"
            "print(sorted(m for m in ('kopf', 'kubernetes', 'boto3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_networkpolicy_agents_are_reachable_through_a_node_local_service():
    """Without hostNetwork the link-local address does not exist in the agent's pod: it listens
    on the pod's addresses, a Service with internalTrafficPolicy Local leads each node's pods
    to their own node's agent, and the policies' DNS rule admits the agent pods."""
    pool = {"apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool", "metadata": {"name": "np", "uid": "u"},
            "spec": {"image": "x", "enforcement": "networkpolicy", "dnsServiceIP": "10.96.0.53"}}
    objects = {o["kind"]: o for o in agent_pool_objects(pool)}
    pod_spec = objects["DaemonSet"]["spec"]["template"]["spec"]
    assert pod_spec["hostNetwork"] is False
    snippet = objects["ConfigMap"]["data"]["node-local.conf"]
    assert "interface-automatic: yes" in snippet and "169.254" not in snippet
    svc = objects["Service"]["spec"]
    assert svc["internalTrafficPolicy"] == "Local" and svc["clusterIP"] == "10.96.0.53"
    assert svc["selector"] == objects["DaemonSet"]["spec"]["selector"]["matchLabels"]
    # the hostNetwork agents keep the link-local address and get no Service
    privileged = {o["kind"]: o for o in agent_pool_objects({**pool, "spec": {"image": "x"}})}
    assert "Service" not in privileged
    assert "interface: 169.254.20.10" in privileged["ConfigMap"]["data"]["node-local.conf"]
    rule = network_policy(_policy(), Desired({}, 0))["spec"]["egress"][0]
    peer = rule["to"][0]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nettrust-agent"}
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "nettrust-system"}
    own = network_policy(_policy(resolver={"cidr": "10.0.0.10/32"}), Desired({}, 0))["spec"]["egress"][0]
    assert own["to"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]

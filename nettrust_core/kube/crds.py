"""The two custom resources: ``EgressPolicy`` (namespaced) and ``AgentPool`` (cluster-wide).

The schemas are the contract the API server enforces; :func:`validate` applies the same
``openAPIV3Schema`` offline (jsonschema), so the tests and ``nettrust kube render --check`` catch
a bad object without a cluster.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidValue

GROUP = "nettrust.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_NAME_PATTERN = r"^(\*\*?\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$|^\*\*?$"

_CONDITIONS = {
    "type": "array",
    "items": {"type": "object", "required": ["type", "status"], "properties": {
        "type": {"type": "string"}, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"}, "message": {"type": "string"},
        "lastTransitionTime": {"type": "string"}}}}

_LABEL_SELECTOR = {
    "type": "object", "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"], "properties": {
                "key": {"type": "string"},
                "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                "values": {"type": "array", "items": {"type": "string"}}}}}}}

EGRESS_POLICY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["spec"], "properties": {
        "spec": {"type": "object", "required": ["podSelector", "domains"], "properties": {
            "podSelector": _LABEL_SELECTOR,
            "domains": {"type": "array", "minItems": 1, "maxItems": 256,
                        "items": {"type": "string", "maxLength": 253, "pattern": _NAME_PATTERN}},
            "ports": {"type": "array", "maxItems": 64, "items": {
                "type": "object", "required": ["port"], "properties": {
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"], "default": "TCP"}}}},
            "enforcement": {"type": "string", "enum": ["nftables", "networkpolicy", "cilium", "calico"],
                            "default": "nftables"},
            "ttl": {"type": "object", "properties": {
                "minSeconds": {"type": "integer", "minimum": 0, "maximum": 86400},
                "maxSeconds": {"type": "integer", "minimum": 1, "maximum": 604800}}},
            "maxAddresses": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
            "resolver": {"type": "object", "properties": {
                "cidr": {"type": "string"}, "namespace": {"type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}}},
        "status": {"type": "object", "properties": {
            "addressCount": {"type": "integer"}, "droppedAddresses": {"type": "integer"},
            "observedGeneration": {"type": "integer"}, "networkPolicyRef": {"type": "string"},
            "conditions": _CONDITIONS}}}}

AGENT_POOL_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["spec"], "properties": {
        "spec": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "minLength": 1},
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
            "role": {"type": "string", "enum": ["standalone", "master", "follower"], "default": "standalone"},
            "enforcement": {"type": "string", "enum": ["nftables", "namespaces", "networkpolicy"],
                            "default": "nftables"},
            "listenAddress": {"type": "string", "default": "169.254.20.10"},
            "dnsServiceIP": {"type": "string"},
            "podNetworks": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
            "upstreamDNS": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
            "namespaces": {"type": "array", "items": {"type": "string"}},
            "sharedState": {"type": "object", "properties": {
                "backend": {"type": "string", "enum": ["none", "redis"], "default": "none"},
                "endpoint": {"type": "string"}, "tlsSecretRef": {"type": "string"}}}}},
        "status": {"type": "object", "properties": {
            "desiredNodes": {"type": "integer"}, "readyNodes": {"type": "integer"},
            "conditions": _CONDITIONS}}}}


def _crd(kind: str, plural: str, short: str, scope: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "shortNames": [short]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": schema},
                "additionalPrinterColumns": [
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}}


EGRESS_POLICY_CRD = _crd("EgressPolicy", "egresspolicies", "ntep", "Namespaced", EGRESS_POLICY_SCHEMA)
AGENT_POOL_CRD = _crd("AgentPool", "agentpools", "ntpool", "Cluster", AGENT_POOL_SCHEMA)
CRDS = (EGRESS_POLICY_CRD, AGENT_POOL_CRD)


def validate(obj: dict[str, Any]) -> None:
    """Check a custom resource against its CRD's schema; :class:`InvalidValue` says where it fails."""
    import jsonschema  # the operator extra's dependency, not the resolver's

    kind = obj.get("kind")
    schema = {"EgressPolicy": EGRESS_POLICY_SCHEMA, "AgentPool": AGENT_POOL_SCHEMA}.get(str(kind))
    if schema is None:
        raise InvalidValue(f"not a NetTrust custom resource: kind {kind!r}")
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(object)"
        raise InvalidValue(f"{kind} {obj.get('metadata', {}).get('name', '?')}: {where}: {exc.message}") from None

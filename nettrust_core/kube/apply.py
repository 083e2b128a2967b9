"""Create-or-patch and delete of rendered manifests through the kubernetes client.

One table says which client call handles which kind, so the operator's handlers stay a few lines.
Imported only by the operator (the kubernetes client is the ``operator`` extra's dependency).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("nettrust.kube")

_BUILTIN: dict[str, tuple[Callable[[], Any], str]] = {
    "NetworkPolicy": (client.NetworkingV1Api, "namespaced_network_policy"),
    "DaemonSet": (client.AppsV1Api, "namespaced_daemon_set"),
    "ConfigMap": (client.CoreV1Api, "namespaced_config_map"),
    "ServiceAccount": (client.CoreV1Api, "namespaced_service_account"),
    "Service": (client.CoreV1Api, "namespaced_service"),
    "ClusterRole": (client.RbacAuthorizationV1Api, "cluster_role"),
    "ClusterRoleBinding": (client.RbacAuthorizationV1Api, "cluster_role_binding"),
}
_CUSTOM = {"CiliumNetworkPolicy": "ciliumnetworkpolicies", "NetworkSet": "networksets"}


def _call(verb: str, obj: Mapping[str, Any], body: Mapping[str, Any] | None = None) -> Any:
    kind, meta = obj["kind"], obj["metadata"]
    ns = meta.get("namespace")
    if kind in _BUILTIN:
        api_class, suffix = _BUILTIN[kind]
        method = getattr(api_class(), f"{verb}_{suffix}")
        args: list[Any] = [] if verb == "create" else [meta["name"]]
        if suffix.startswith("namespaced"):
            args.append(ns)
        if body is not None:
            args.append(body)
        return method(*args)
    group, version = obj["apiVersion"].split("/")
    api = client.CustomObjectsApi()
    plural = _CUSTOM[kind]
    if verb == "create":
        return api.create_namespaced_custom_object(group, version, ns, plural, body)
    method = getattr(api, f"{'get' if verb == 'read' else verb}_namespaced_custom_object")
    return method(group, version, ns, plural, meta["name"], *([body] if body is not None else []))


def apply(obj: Mapping[str, Any]) -> str:
    """Create ``obj``, or patch it to the rendering when it exists and differs; says which."""
    try:
        current = _call("read", obj)
    except ApiException as exc:
        if exc.status != 404:
            raise
        _call("create", obj, obj)
        return "created"
    current = current if isinstance(current, dict) else client.ApiClient().sanitize_for_serialization(current)
    if all(current.get(k) == v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")):
        return "unchanged"
    # A JSON merge patch of the whole object: lists (ipBlocks, rules) are replaced as a whole, which
    # is what a re-render means; no read-modify-write race on resourceVersion.
    _call("patch", obj, obj)
    return "patched"


def delete(obj: Mapping[str, Any]) -> bool:
    """Delete ``obj``; False when it was already gone."""
    try:
        _call("delete", obj)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True

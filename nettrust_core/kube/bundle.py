"""The operator's install bundle: namespace, CRDs, RBAC and its Deployment, as one list.

``nettrust kube manifests`` prints it; ``deploy/kubernetes/nettrust-operator.yaml`` and the Helm
chart's output are checked against it by the tests, so the three cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from .crds import CRDS

NAMESPACE = "nettrust-system"
LABELS = {"app.kubernetes.io/name": "nettrust-operator", "app.kubernetes.io/part-of": "nettrust"}

_RULES = [
    {"apiGroups": ["nettrust.io"], "resources": ["egresspolicies", "egresspolicies/status",
                                                 "agentpools", "agentpools/status"],
     "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps", "serviceaccounts"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings"],
     "verbs": ["get", "list", "create", "patch", "delete", "bind", "escalate"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["cilium.io"], "resources": ["ciliumnetworkpolicies"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["projectcalico.org"], "resources": ["networksets"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
]


def operator_objects(image: str, namespace: str = NAMESPACE,
                     feed: str = "sqlite:/var/lib/nettrust/stats.db") -> list[dict[str, Any]]:
    name = "nettrust-operator"
    meta = {"name": name, "namespace": namespace, "labels": dict(LABELS)}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        *CRDS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name, "labels": dict(LABELS)}, "rules": _RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name, "labels": dict(LABELS)},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                  "selector": {"matchLabels": dict(LABELS)},
                  "template": {"metadata": {"labels": dict(LABELS)}, "spec": {
                      "serviceAccountName": name,
                      "containers": [{
                          "name": "operator", "image": image, "command": ["nettrust", "operator"],
                          "env": [{"name": "NETTRUST_GRANT_FEED", "value": feed}],
                          "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                              "runAsUser": 65534, "capabilities": {"drop": ["ALL"]}}}]}}}},
    ]

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
    {"apiGroups": [""], "resources": ["configmaps", "serviceaccounts", "services"],
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
                     feed: str = "sqlite:/var/lib/nettrust/stats.db",
                     feed_tls_secret: str = "nettrust-fleet-tls") -> list[dict[str, Any]]:
    """The operator's install bundle.  ``feed_tls_secret``: the ``kubernetes.io/tls`` secret
    (``ca.crt``, ``tls.crt``, ``tls.key``) a ``rediss://`` grant feed reads at
    ``/etc/nettrust/tls``; optional, so a ``sqlite:`` feed needs none."""
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
                          "volumeMounts": [{"name": "grant-feed-tls", "mountPath": "/etc/nettrust/tls",
                                            "readOnly": True}],
                          "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                              "runAsUser": 65534, "capabilities": {"drop": ["ALL"]}}}],
                      "volumes": [{"name": "grant-feed-tls",
                                   "secret": {"secretName": feed_tls_secret, "optional": True}}]}}}},
    ]


def write_deploy(root: str) -> list[str]:
    """Regenerate the shipped YAML under ``root``/deploy from the code (``python -m
    nettrust_core.kube.bundle --write``); tests/unit/test_kube.py fails when they differ."""
    import os

    import yaml

    written = []
    base = os.path.join(root, "deploy")

    def put(rel: str, text: str) -> None:
        with open(os.path.join(base, rel), "w", encoding="utf-8") as f:
            f.write(text)
        written.append(rel)
    put("kubernetes/nettrust-operator.yaml",
        "# Generated: python -m nettrust_core.kube.bundle --write (same as `nettrust kube manifests`).\n"
        + yaml.safe_dump_all(operator_objects("nettrust:latest"), sort_keys=False))
    for crd in CRDS:
        put(f"helm/nettrust/crds/{crd['metadata']['name']}.yaml", yaml.safe_dump(crd, sort_keys=False))
    marks = {"@@IMAGE@@": "{{ .Values.image }}", "@@NS@@": "{{ .Release.Namespace }}",
             "@@FEED@@": "{{ .Values.grantFeed }}", "@@FEEDTLS@@": "{{ .Values.grantFeedTlsSecret }}"}
    text = yaml.safe_dump_all(operator_objects("@@IMAGE@@", "@@NS@@", "@@FEED@@", "@@FEEDTLS@@")[1 + len(CRDS):],
                              sort_keys=False)
    for mark, template in marks.items():
        text = text.replace(mark, template)
    put("helm/nettrust/templates/operator.yaml",
        "# Generated: python -m nettrust_core.kube.bundle --write (the objects of `nettrust kube manifests`).\n"
        + text)
    return written


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m nettrust_core.kube.bundle --write")
    here = __file__.rsplit("/nettrust_core/", 1)[0]
    print("\n".join(write_deploy(here)))

"""What the custom resources become: pure functions from dictionaries to manifests.

``EgressPolicy`` -> a ``NetworkPolicy`` (vanilla: one /32 or /128 ipBlock per granted address,
plus DNS to the node resolver), or a ``CiliumNetworkPolicy`` (``toFQDNs``: names, no address
churn), or a Calico ``NetworkSet`` (addresses only; a static policy selects it).
``AgentPool`` -> the node agent's ``ConfigMap``, ``DaemonSet`` and RBAC.
Every rendered object carries an owner reference to its custom resource, so the API server's
garbage collector removes it with its owner; the operator's finalizer removes it too (an emulator
or a cluster with the collector off).
"""

from __future__ import annotations

from typing import Any, Mapping

from .crds import API_VERSION
from .desired import Desired

MANAGED_BY = {"app.kubernetes.io/managed-by": "nettrust-operator"}
DEFAULT_RESOLVER = "169.254.20.10/32"     # the node-local resolver's link-local address
AGENT_NAMESPACE = "nettrust-system"
#: The pod networks when an AgentPool names none (RFC 1918, shared address space, ULA).
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
AGENT_LABEL = {"app.kubernetes.io/name": "nettrust-agent"}


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner.get("apiVersion", API_VERSION), "kind": owner["kind"],
            "name": meta["name"], "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def _meta(name: str, owner: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(MANAGED_BY),
                            "ownerReferences": [owner_reference(owner)]}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def policy_object_name(policy: Mapping[str, Any]) -> str:
    return f"nettrust-{policy['metadata']['name']}"


def _ports(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"port": p["port"], "protocol": p.get("protocol", "TCP")} for p in spec.get("ports") or []]


def _dns_rule(spec: Mapping[str, Any]) -> dict[str, Any]:
    """DNS to the resolver: ``resolver.cidr`` when given; otherwise the node agents' pods (the
    NetworkPolicy-mode agents are reached through their Service, and a policy judges the
    Service's backend pod addresses, not its cluster IP) and the link-local node address."""
    resolver = spec.get("resolver") or {}
    port = int(resolver.get("port", 53))
    if resolver.get("cidr"):
        to: list[dict[str, Any]] = [{"ipBlock": {"cidr": resolver["cidr"]}}]
    else:
        namespace = resolver.get("namespace", AGENT_NAMESPACE)
        to = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
               "podSelector": {"matchLabels": dict(AGENT_LABEL)}},
              {"ipBlock": {"cidr": DEFAULT_RESOLVER}}]
    return {"to": to, "ports": [{"port": port, "protocol": "UDP"}, {"port": port, "protocol": "TCP"}]}


def network_policy(policy: Mapping[str, Any], wanted: Desired) -> dict[str, Any]:
    """The vanilla NetworkPolicy: DNS to the resolver, then the granted addresses (if any).

    With no address granted the policy still selects the pods for egress, so they reach only
    their resolver: the fail-closed state, as with nftables.
    """
    spec = policy["spec"]
    egress = [_dns_rule(spec)]
    cidrs = wanted.cidrs()
    if cidrs:
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": c}} for c in cidrs]}
        if spec.get("ports"):
            rule["ports"] = _ports(spec)
        egress.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(policy_object_name(policy), policy, policy["metadata"].get("namespace")),
        "spec": {"podSelector": spec.get("podSelector") or {}, "policyTypes": ["Egress"], "egress": egress}}


def _fqdn(pattern: str) -> dict[str, str]:
    if pattern in ("*", "**"):
        return {"matchPattern": "*"}
    if pattern.startswith("*"):
        return {"matchPattern": pattern}       # Cilium: "*." one label, "**." any depth (1.16+)
    return {"matchName": pattern}


def cilium_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A CiliumNetworkPolicy: names, not addresses, so nothing changes as answers come and go."""
    spec = policy["spec"]
    dns = {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                                            "k8s-app": "kube-dns"}}],
           "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}],
                        "rules": {"dns": [{"matchPattern": "*"}]}}]}
    names: dict[str, Any] = {"toFQDNs": [_fqdn(d) for d in spec["domains"]]}
    if spec.get("ports"):
        names["toPorts"] = [{"ports": [{"port": str(p["port"]), "protocol": p["protocol"]}
                                       for p in _ports(spec)]}]
    selector = spec.get("podSelector") or {}
    return {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": _meta(policy_object_name(policy), policy, policy["metadata"].get("namespace")),
        "spec": {"endpointSelector": selector, "egress": [dns, names]}}


def calico_network_set(policy: Mapping[str, Any], wanted: Desired) -> dict[str, Any]:
    """A Calico NetworkSet labelled for the policy; a static Calico policy selects it by label."""
    meta = _meta(policy_object_name(policy), policy, policy["metadata"].get("namespace"))
    meta["labels"]["nettrust.io/egress-policy"] = policy["metadata"]["name"]
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet", "metadata": meta,
            "spec": {"nets": wanted.cidrs()}}


# --- AgentPool -------------------------------------------------------------------------------

def _agent_config(pool: Mapping[str, Any]) -> str:
    """The node agent's nettrust.toml: gateway mode, pods as clients, grants per pod; in
    NetworkPolicy mode a resolver that writes nothing to the kernel (``record-only``: no
    CAP_NET_ADMIN) and only reports its grants, for the operator to render."""
    spec = pool["spec"]
    upstreams = spec.get("upstreamDNS") or []
    lines = ['[general]', 'mode = "denylist"', '', '[upstream]',
             f'mode = "{"forward" if upstreams else "recurse"}"',
             "servers = [" + ", ".join(f'"{u}"' for u in upstreams) + "]", '']
    enforcement = spec.get("enforcement", "nftables")
    # Pods are the clients (gateway.per_client): every pod that receives an answer, from the
    # cache too, gets its own grant, published with its address.  The pod networks are the
    # LAN side (a node's pod veths have no fixed names); unset: the private ranges.
    pods = spec.get("podNetworks") or list(PRIVATE_NETWORKS)
    lines += ['[firewall]', 'hooks = ["output", "forward"]',
              "lan_networks = [" + ", ".join(f'"{n}"' for n in pods) + "]"]
    if enforcement == "networkpolicy":
        # nothing written to the kernel (no ruleset: the hooks only say whose traffic is
        # judged); liveness and unauthorized read the kernel (conntrack, NFLOG): off
        lines += ['backends = ["record-only"]', '', '[lifecycle]', 'liveness = false',
                  'unauthorized = false']
    elif enforcement == "namespaces":
        lines.append('backends = ["namespaces"]')
    lines += ['', '[gateway]', 'per_client = true', '']
    shared = spec.get("sharedState") or {}
    if shared.get("backend", "none") == "redis":
        # every node agent publishes its grants: the fleet's stream, the operator's grant feed
        tls = "/etc/nettrust/tls"
        lines += ['[fleet]', 'role = "master"', f'redis_url = "{shared.get("endpoint", "")}"',
                  f'ca_file = "{tls}/ca.crt"', f'cert_file = "{tls}/tls.crt"',
                  f'key_file = "{tls}/tls.key"', '']
    return "\n".join(lines)


def _unbound_snippet(pool: Mapping[str, Any]) -> str:
    """Where Unbound listens: the link-local node address on the host's network (hostNetwork
    agents); in NetworkPolicy mode, without hostNetwork, every address of the pod (which the
    agents' Service, ``internalTrafficPolicy: Local``, forwards to), answering from the address
    asked (``interface-automatic``)."""
    if pool["spec"].get("enforcement", "nftables") == "networkpolicy":
        listen = "    interface-automatic: yes\n"
    else:
        listen = f"    interface: {pool['spec'].get('listenAddress', '169.254.20.10')}\n"
    return "server:\n" + listen + "    access-control: 0.0.0.0/0 allow\n    access-control: ::/0 allow\n"


def _dns_service(name: str, pool: Mapping[str, Any], namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """NetworkPolicy mode: the agents' Service; each node's pods reach their own node's agent
    (``internalTrafficPolicy: Local``). Point the kubelet's ``--cluster-dns`` or the pods'
    ``dnsConfig`` at its cluster IP (``spec.dnsServiceIP`` fixes it)."""
    spec: dict[str, Any] = {"selector": dict(labels), "internalTrafficPolicy": "Local",
                            "ports": [{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                                      {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}]}
    if pool["spec"].get("dnsServiceIP"):
        spec["clusterIP"] = pool["spec"]["dnsServiceIP"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(f"{name}-dns", pool, namespace),
            "spec": spec}


def agent_pool_objects(pool: Mapping[str, Any], namespace: str = AGENT_NAMESPACE) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole(+Binding), ConfigMap and DaemonSet of the node agents (and
    in NetworkPolicy mode the Service the pods reach them through)."""
    name = f"nettrust-{pool['metadata']['name']}"
    spec = pool["spec"]
    labels = {**AGENT_LABEL, "nettrust.io/pool": pool["metadata"]["name"]}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, pool, namespace)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(name, pool, None),
            "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": ["nettrust.io"], "resources": ["egresspolicies"],
                       "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": _meta(name, pool, None),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, pool, namespace),
              "data": {"nettrust.toml": _agent_config(pool), "node-local.conf": _unbound_snippet(pool)}}
    privileged = spec.get("enforcement", "nftables") != "networkpolicy"
    container: dict[str, Any] = {
        "name": "nettrust", "image": spec["image"],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/nettrust/nettrust.toml",
                          "subPath": "nettrust.toml", "readOnly": True},
                         {"name": "config", "mountPath": "/etc/nettrust/unbound.conf.d/node-local.conf",
                          "subPath": "node-local.conf", "readOnly": True}],
        "securityContext": ({"capabilities": {"add": ["NET_ADMIN", "NET_BIND_SERVICE"]}} if privileged
                            else {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"],
                                                                                     "add": ["NET_BIND_SERVICE"]}}),
        "readinessProbe": {"exec": {"command": ["nettrust", "status"]}, "periodSeconds": 10}}
    shared = spec.get("sharedState") or {}
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}]
    if shared.get("tlsSecretRef"):
        container["volumeMounts"].append({"name": "fleet-tls", "mountPath": "/etc/nettrust/tls", "readOnly": True})
        volumes.append({"name": "fleet-tls", "secret": {"secretName": shared["tlsSecretRef"]}})
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(name, pool, namespace),
        "spec": {"selector": {"matchLabels": labels},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"serviceAccountName": name, "hostNetwork": privileged,
                                       "dnsPolicy": "Default",
                                       "nodeSelector": dict(spec.get("nodeSelector") or {}),
                                       "tolerations": [{"operator": "Exists"}],
                                       "containers": [container], "volumes": volumes}}}}
    if not privileged:
        return [account, role, binding, config, daemonset, _dns_service(name, pool, namespace, labels)]
    return [account, role, binding, config, daemonset]

"""Which granted addresses an ``EgressPolicy``'s workloads may reach: the desired state.

Pure functions, so the operator's reconcile loop, the tests and ``nettrust kube`` agree: select the
policy's pods by label, keep the live grants made for those pods to names the policy allows, hold
each address at least ``ttl.minSeconds`` and at most ``ttl.maxSeconds`` past its grant, and cap the
result at ``maxAddresses`` — keeping the addresses that live longest and counting the others
(a policy object rewritten on every answer, or one past the API server's request size, is worse
than a stated cap).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..patterns import PatternSet, normalize_name
from ..grant_feed import FeedGrant, keep_longest


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    addresses: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Pod:
        meta, status = obj.get("metadata", {}), obj.get("status", {}) or {}
        ips = [p.get("ip") for p in status.get("podIPs") or []] or [status.get("podIP")]
        return cls(meta.get("namespace", "default"), meta.get("name", ""),
                   tuple(ip for ip in ips if ip), dict(meta.get("labels") or {}))


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector selects everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Desired:
    addresses: dict[str, float]     # address -> until (Unix time)
    dropped: int                    # live addresses left out by maxAddresses

    def cidrs(self) -> list[str]:
        """The ipBlock CIDRs, /32 and /128, in a stable order (no rewrite when nothing changed)."""
        nets = sorted((ipaddress.ip_address(a) for a in self.addresses), key=lambda a: (a.version, a))
        return [f"{a}/{a.max_prefixlen}" for a in nets]


def desired(policy: Mapping[str, Any], pods: Iterable[Pod], grants: Iterable[FeedGrant],
            now: float, previous: Mapping[str, float] | None = None) -> Desired:
    """The addresses ``policy`` opens for its pods at ``now``.

    ``previous`` (address -> until, from the last reconcile) keeps an address through its
    ``ttl.minSeconds`` floor after its grant ran out.
    """
    meta, spec = policy.get("metadata", {}), policy["spec"]
    namespace = meta.get("namespace", "default")
    selector = spec.get("podSelector") or {}
    members = {ip for pod in pods if pod.namespace == namespace and selects(selector, pod.labels)
               for ip in pod.addresses}
    names = PatternSet(spec["domains"])
    ttl = spec.get("ttl") or {}
    floor, ceiling = float(ttl.get("minSeconds", 0)), ttl.get("maxSeconds")
    until: dict[str, float] = {a: t for a, t in (previous or {}).items() if t > now}
    for grant in grants:
        if grant.expires <= now or grant.client not in members:
            continue
        if names.matches(normalize_name(grant.name)) is None:
            continue
        end = max(grant.expires, now + floor)
        if ceiling is not None:
            end = min(end, now + float(ceiling))
        if end > until.get(grant.address, 0.0):
            until[grant.address] = end
    return Desired(*keep_longest(until, int(spec.get("maxAddresses", 1000))))

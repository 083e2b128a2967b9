"""The operator: thin kopf handlers over the pure renderers (``nettrust operator`` runs it).

``EgressPolicy``: on create/update/resume and then every ``NETTRUST_RECONCILE_SECONDS`` (the
debounce: the policy object is rewritten at most that often, never once per answer) the desired
addresses are recomputed from the grant feed and the pods the policy selects, the enforcement
object is applied only when it changed, and the status says how many addresses it holds and
whether the cap dropped any. Deleting the policy deletes what it rendered (finalizer).
``AgentPool``: renders the node agents' DaemonSet, ConfigMap and RBAC; deleting it removes them.

Settings from the environment: ``NETTRUST_GRANT_FEED`` (``sqlite:/var/lib/nettrust/stats.db``,
the node agent's statistics database, or ``rediss://…`` the fleet's stream, every node's grants:
:mod:`nettrust_core.grant_feed_redis`) and ``NETTRUST_RECONCILE_SECONDS`` (default 5).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import time
from typing import Any

import kopf
from kubernetes import client, config

from . import apply as kube_apply
from ..errors import InvalidValue, NetTrustError
from ..grant_feed import FeedGrant, GrantFeed, feed_from_spec
from .crds import GROUP, VERSION
from .desired import Desired, Pod, desired
from .render import agent_pool_objects, calico_network_set, cilium_policy, network_policy, policy_object_name

RECONCILE_SECONDS = float(os.environ.get("NETTRUST_RECONCILE_SECONDS", "5"))
_previous: dict[tuple[str, str], dict[str, float]] = {}   # (namespace, policy) -> address -> until


_feeds: dict[str, GrantFeed] = {}   # spec -> feed: a fleet feed is a reader thread, made once


def grant_feed() -> GrantFeed:
    spec = os.environ.get("NETTRUST_GRANT_FEED", "sqlite:/var/lib/nettrust/stats.db")
    feed = _feeds.get(spec)
    if feed is None:
        try:
            feed = _feeds[spec] = feed_from_spec(spec)
        except InvalidValue as exc:
            raise kopf.PermanentError(f"NETTRUST_GRANT_FEED: {exc}") from None
    return feed


def live_grants(now: float) -> list[FeedGrant]:
    """The feed's live grants; a feed not read yet (the fleet's, replaying or unreachable) is a
    temporary error: the policy object keeps what it holds, never rendered empty meanwhile."""
    try:
        return list(grant_feed().live(now))
    except (NetTrustError, sqlite3.Error) as exc:
        raise kopf.TemporaryError(f"grant feed: {exc}", delay=RECONCILE_SECONDS) from None


@kopf.on.login()
def _login(**kwargs: Any) -> Any:
    """In a pod, the service account; elsewhere $KUBECONFIG (read now, not at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def _client(settings: kopf.OperatorSettings, **_: Any) -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    settings.persistence.finalizer = "nettrust.io/cleanup"


def _pods(namespace: str) -> list[Pod]:
    listing = client.CoreV1Api().list_namespaced_pod(namespace)
    return [Pod.from_object(client.ApiClient().sanitize_for_serialization(p)) for p in listing.items]


def _rendered(policy: dict[str, Any], wanted: Desired) -> dict[str, Any]:
    enforcement = policy["spec"].get("enforcement", "nftables")
    if enforcement == "cilium":
        return cilium_policy(policy)
    if enforcement == "calico":
        return calico_network_set(policy, wanted)
    return network_policy(policy, wanted)


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": now}


def reconcile_policy(body: kopf.Body, patch: kopf.Patch) -> None:
    policy = {"apiVersion": body["apiVersion"], "kind": body["kind"],
              "metadata": dict(body["metadata"]), "spec": dict(body["spec"])}
    namespace, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
    if policy["spec"].get("enforcement", "nftables") == "nftables":
        patch.status["conditions"] = [_condition("Ready", True, "NodeEnforced",
                                                 "enforced by the node agents' nftables")]
        return
    now = time.time()
    wanted = desired(policy, _pods(namespace), live_grants(now), now, _previous.get((namespace, name)))
    _previous[(namespace, name)] = wanted.addresses
    kube_apply.apply(_rendered(policy, wanted))
    patch.status["addressCount"] = len(wanted.addresses)
    patch.status["droppedAddresses"] = wanted.dropped
    patch.status["observedGeneration"] = body["metadata"].get("generation", 0)
    patch.status["networkPolicyRef"] = policy_object_name(policy)
    patch.status["conditions"] = [
        _condition("Ready", True, "Rendered", f"{len(wanted.addresses)} addresses"),
        _condition("Capped", wanted.dropped > 0, "MaxAddresses" if wanted.dropped else "UnderCap",
                   f"{wanted.dropped} live addresses over maxAddresses left out")]


@kopf.on.resume(GROUP, VERSION, "egresspolicies")
@kopf.on.create(GROUP, VERSION, "egresspolicies")
@kopf.on.update(GROUP, VERSION, "egresspolicies", field="spec")
def egress_policy_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_policy(body, patch)


@kopf.timer(GROUP, VERSION, "egresspolicies", interval=RECONCILE_SECONDS, initial_delay=RECONCILE_SECONDS)
def egress_policy_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_policy(body, patch)


@kopf.on.delete(GROUP, VERSION, "egresspolicies")
def egress_policy_deleted(body: kopf.Body, **_: Any) -> None:
    policy = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
              "spec": dict(body["spec"])}
    _previous.pop((policy["metadata"]["namespace"], policy["metadata"]["name"]), None)
    if policy["spec"].get("enforcement", "nftables") != "nftables":
        kube_apply.delete(_rendered(policy, Desired({}, 0)))


@kopf.on.resume(GROUP, VERSION, "agentpools")
@kopf.on.create(GROUP, VERSION, "agentpools")
@kopf.on.update(GROUP, VERSION, "agentpools", field="spec")
def agent_pool_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    pool = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
            "spec": dict(body["spec"])}
    done = [kube_apply.apply(obj) for obj in agent_pool_objects(pool)]
    patch.status["conditions"] = [_condition("Ready", True, "Rendered",
                                             f"{len(done)} objects ({', '.join(sorted(set(done)))})")]


@kopf.on.delete(GROUP, VERSION, "agentpools")
def agent_pool_deleted(body: kopf.Body, **_: Any) -> None:
    pool = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
            "spec": dict(body["spec"])}
    for obj in reversed(agent_pool_objects(pool)):
        kube_apply.delete(obj)

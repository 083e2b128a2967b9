"""The operator end to end against a FAKE Kubernetes API server (the KMock emulator: no
kube-apiserver can run on this machine — see tests/integration/kmock_server.py for what it lacks),
with kopf's own test runner and the real kubernetes client; the grants come from a real NetTrust
statistics database (the node agent's schema, rows as the agent writes them).

What an admin would see: an ``EgressPolicy`` in NetworkPolicy mode becomes a NetworkPolicy whose
ipBlocks are exactly the live grants made for the policy's pods to the policy's names; an address
leaves when its grant expires; the cap drops addresses and says so in the status; deleting the
policy deletes the NetworkPolicy; an ``AgentPool`` becomes the node agents' DaemonSet, ConfigMap
and RBAC, and deleting it removes them.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import require
from tests.integration.lab_util import wait_for

kopf = pytest.importorskip("kopf") if not os.environ.get("CI") else __import__("kopf")

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _environment_restored():
    """The operator reads its settings from the environment: set for this module only (left
    behind, they leaked into every later test's subprocesses)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The emulator on a loopback port and a kubeconfig naming it; KUBECONFIG set for kopf."""
    try:
        import kmock  # noqa: F401
    except ImportError:
        require(["kmock missing (pip install kmock, run-tests does)"], "operator prerequisites")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "kmock_server.py"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        cfg = tmp_path_factory.mktemp("kube") / "config"
        cfg.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: kmock, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: test, user: {{token: test}}}}]
contexts: [{{name: kmock, context: {{cluster: kmock, user: test}}}}]
current-context: kmock
""")
        os.environ["KUBECONFIG"] = str(cfg)
        from kubernetes import client, config
        config.load_kube_config(config_file=str(cfg))
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def grants_db(tmp_path_factory):
    from nettrust_core.agent.schema import SCHEMA
    path = tmp_path_factory.mktemp("stats") / "stats.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.commit()
    db.close()
    return path


def add_grant(path: Path, client_ip: str, address: str, name: str, lifetime: float) -> None:
    db = sqlite3.connect(path)
    now = time.time()
    db.execute("INSERT OR IGNORE INTO clients(address, first_seen) VALUES (?, ?)", (client_ip, now))
    db.execute("INSERT OR IGNORE INTO domains(name, first_seen) VALUES (?, ?)", (name, now))
    db.execute("""INSERT INTO grants(ts, address, family, domain_id, client_id, timeout, expires, written)
                  VALUES (?, ?, ?, (SELECT id FROM domains WHERE name = ?),
                          (SELECT id FROM clients WHERE address = ?), ?, ?, 1)""",
               (now, address, 6 if ":" in address else 4, name, client_ip, lifetime, now + lifetime))
    db.commit()
    db.close()


@pytest.fixture(scope="module")
def operator(api, grants_db):
    os.environ["NETTRUST_GRANT_FEED"] = f"sqlite:{grants_db}"
    os.environ["NETTRUST_RECONCILE_SECONDS"] = "1"
    from kopf.testing import KopfRunner
    with KopfRunner(["run", "-A", "--standalone", "-m", "nettrust_core.kube.operator"]) as runner:
        time.sleep(1.0)
        yield runner
    assert runner.exception is None, runner.stdout


def _pod(api, name: str, ip: str, labels: dict) -> None:
    api.CoreV1Api().create_namespaced_pod("shop", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"podIP": ip}})


def _custom(api):
    return api.CustomObjectsApi()


def _ip_blocks(api, name: str) -> set[str] | None:
    from kubernetes.client.exceptions import ApiException
    try:
        policy = api.NetworkingV1Api().read_namespaced_network_policy(name, "shop")
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    blocks = {peer.ip_block.cidr for rule in policy.spec.egress for peer in rule.to or [] if peer.ip_block}
    return blocks - {"169.254.20.10/32"}


def test_egress_policy_becomes_network_policy_of_live_grants(api, operator, grants_db):
    _pod(api, "web-1", "10.20.0.5", {"app": "web"})
    _pod(api, "batch-1", "10.20.0.6", {"app": "batch"})
    add_grant(grants_db, "10.20.0.5", "198.51.100.7", "api.example.com", 300)
    add_grant(grants_db, "10.20.0.5", "2001:db8::7", "api.example.com", 300)
    add_grant(grants_db, "10.20.0.6", "198.51.100.8", "api.example.com", 300)   # another workload
    add_grant(grants_db, "10.20.0.5", "203.0.113.9", "evil.test", 300)          # a name not allowed
    add_grant(grants_db, "10.20.0.5", "198.51.100.10", "cdn.example.com", 3)    # runs out soon
    _custom(api).create_namespaced_custom_object("nettrust.io", "v1alpha1", "shop", "egresspolicies", {
        "apiVersion": "nettrust.io/v1alpha1", "kind": "EgressPolicy",
        "metadata": {"name": "web", "namespace": "shop", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "domains": ["**.example.com"],
                 "enforcement": "networkpolicy", "ports": [{"port": 443}], "maxAddresses": 3}})

    blocks = wait_for(lambda: _ip_blocks(api, "nettrust-web"), "the rendered NetworkPolicy")
    assert blocks == {"198.51.100.7/32", "2001:db8::7/128", "198.51.100.10/32"}
    # the grant of three seconds runs out: its address leaves the policy
    wait_for(lambda: _ip_blocks(api, "nettrust-web") == {"198.51.100.7/32", "2001:db8::7/128"},
             "the expired address to leave", timeout=15)

    # past maxAddresses: the longest-lived are kept and the status says how many were left out
    for i in range(3):
        add_grant(grants_db, "10.20.0.5", f"198.51.100.{20 + i}", "api.example.com", 600 + i)

    def capped():
        obj = _custom(api).get_namespaced_custom_object("nettrust.io", "v1alpha1", "shop", "egresspolicies", "web")
        status = obj.get("status") or {}
        return status if status.get("droppedAddresses") else None
    status = wait_for(capped, "the cap to show in the status")
    assert status["addressCount"] == 3 and status["droppedAddresses"] == 2
    assert any(c["type"] == "Capped" and c["status"] == "True" for c in status["conditions"])
    assert _ip_blocks(api, "nettrust-web") == {"198.51.100.20/32", "198.51.100.21/32", "198.51.100.22/32"}

    _custom(api).delete_namespaced_custom_object("nettrust.io", "v1alpha1", "shop", "egresspolicies", "web")
    wait_for(lambda: _ip_blocks(api, "nettrust-web") is None, "the NetworkPolicy to be deleted")


def test_cilium_enforcement_renders_names_not_addresses(api, operator):
    _custom(api).create_namespaced_custom_object("nettrust.io", "v1alpha1", "shop", "egresspolicies", {
        "apiVersion": "nettrust.io/v1alpha1", "kind": "EgressPolicy",
        "metadata": {"name": "pay", "namespace": "shop", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "domains": ["api.stripe.com", "*.example.com"],
                 "enforcement": "cilium"}})

    def rendered():
        from kubernetes.client.exceptions import ApiException
        try:
            return _custom(api).get_namespaced_custom_object("cilium.io", "v2", "shop", "ciliumnetworkpolicies",
                                                             "nettrust-pay")
        except ApiException:
            return None
    cnp = wait_for(rendered, "the CiliumNetworkPolicy")
    assert cnp["spec"]["egress"][1]["toFQDNs"] == [{"matchName": "api.stripe.com"},
                                                   {"matchPattern": "*.example.com"}]


def test_agent_pool_renders_the_node_agents_and_cleans_up(api, operator):
    try:
        api.CoreV1Api().create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": "nettrust-system"}})
    except Exception:  # noqa: BLE001 - the emulator's namespace handling has gaps; the objects need none
        pass
    _custom(api).create_cluster_custom_object("nettrust.io", "v1alpha1", "agentpools", {
        "apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": "edge", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {"image": "nettrust:test", "upstreamDNS": ["10.96.0.10"], "nodeSelector": {"role": "edge"}}})
    apps = api.AppsV1Api()

    def daemonset():
        from kubernetes.client.exceptions import ApiException
        try:
            return apps.read_namespaced_daemon_set("nettrust-edge", "nettrust-system")
        except ApiException:
            return None
    ds = wait_for(daemonset, "the node agents' DaemonSet")
    assert ds.spec.template.spec.node_selector == {"role": "edge"}
    assert ds.spec.template.spec.containers[0].image == "nettrust:test"
    cm = api.CoreV1Api().read_namespaced_config_map("nettrust-edge", "nettrust-system")
    assert 'servers = ["10.96.0.10"]' in cm.data["nettrust.toml"] and "per_client = true" in cm.data["nettrust.toml"]
    assert api.RbacAuthorizationV1Api().read_cluster_role("nettrust-edge").rules

    _custom(api).delete_cluster_custom_object("nettrust.io", "v1alpha1", "agentpools", "edge")
    wait_for(lambda: daemonset() is None, "the DaemonSet to be removed")

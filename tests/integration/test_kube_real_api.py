"""The operator against a REAL Kubernetes API server (envtest or kind): the tier this machine
cannot run (no kube-apiserver, envtest or kind can be had here — see README, Kubernetes).

Opt-in, not a prerequisite: it runs only with ``NETTRUST_KUBE_REAL=1`` and ``KUBECONFIG``
naming a disposable cluster (it installs the CRDs and creates namespace ``nettrust-e2e``). What
the emulator cannot show is checked here: the CRDs are accepted as structural schemas, a bad
``EgressPolicy`` is refused by the API server's validation, and the garbage collector removes
the rendered NetworkPolicy with its owner.

    NETTRUST_KUBE_REAL=1 KUBECONFIG=~/.kube/kind-config ./run-tests tests/integration/test_kube_real_api.py
"""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from tests.integration.lab_util import wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.skipif(
    os.environ.get("NETTRUST_KUBE_REAL") != "1" or not os.environ.get("KUBECONFIG"),
    reason="opt-in: NETTRUST_KUBE_REAL=1 and KUBECONFIG of a disposable cluster")]

NS = "nettrust-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from nettrust_core.agent.schema import SCHEMA
    from nettrust_core.kube.crds import CRDS
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    ext = client.ApiextensionsV1Api()
    for crd in CRDS:
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
    try:
        client.CoreV1Api().create_namespace({"metadata": {"name": NS}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    db = tmp_path_factory.mktemp("stats") / "stats.db"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    conn.close()
    os.environ["NETTRUST_GRANT_FEED"] = f"sqlite:{db}"
    os.environ["NETTRUST_RECONCILE_SECONDS"] = "1"
    from kopf.testing import KopfRunner
    with KopfRunner(["run", "-A", "--standalone", "-m", "nettrust_core.kube.operator"]):
        time.sleep(2)
        yield client, db
    client.CoreV1Api().delete_namespace(NS)


def test_the_api_server_validates_and_collects_what_the_operator_renders(cluster):
    from kubernetes.client.exceptions import ApiException
    client, _ = cluster
    custom = client.CustomObjectsApi()
    bad = {"apiVersion": "nettrust.io/v1alpha1", "kind": "EgressPolicy", "metadata": {"name": "bad"},
           "spec": {"podSelector": {}, "domains": ["x"], "ports": [{"port": 70000}]}}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("nettrust.io", "v1alpha1", NS, "egresspolicies", bad)
    assert refused.value.status == 422
    good = {"apiVersion": "nettrust.io/v1alpha1", "kind": "EgressPolicy", "metadata": {"name": "web"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "domains": ["**.example.com"],
                     "enforcement": "networkpolicy"}}
    custom.create_namespaced_custom_object("nettrust.io", "v1alpha1", NS, "egresspolicies", good)
    net = client.NetworkingV1Api()

    def rendered():
        try:
            return net.read_namespaced_network_policy("nettrust-web", NS)
        except ApiException:
            return None
    policy = wait_for(rendered, "the NetworkPolicy", timeout=60)
    assert policy.metadata.owner_references[0].kind == "EgressPolicy"
    custom.delete_namespaced_custom_object("nettrust.io", "v1alpha1", NS, "egresspolicies", "web")
    wait_for(lambda: rendered() is None, "the NetworkPolicy to go with its owner", timeout=60)

"""The Kubernetes node agent in namespaces: a "node" namespace (the lab's host) running Unbound and
the module with the configuration the operator renders for an ``AgentPool`` (its ConfigMap,
byte for byte, plus this test's table name), the node-local resolver on a link-local address of the
node (the NodeLocal DNSCache pattern), and two "pod" namespaces on veths.

What a pod would notice: pod A's lookup opens the address for pod A only; pod B, which did not
ask, is refused; after B asks (a cache hit of the node-local resolver) B connects too.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import require
from netns_util import NetNS
from secnet import tcp_probe
from test_gateway import _veth, resolve

pytestmark = pytest.mark.integration

NODE_LOCAL = "169.254.20.10"
TABLE = "ntk8s"
PODS = {"a": ("poda", "10.98.1.2", "10.98.1.1", "fd98:1::2", "fd98:1::1"),
        "b": ("podb", "10.98.2.2", "10.98.2.1", "fd98:2::2", "fd98:2::1")}
POOL = {"apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool", "metadata": {"name": "t", "uid": "u"},
        "spec": {"image": "nettrust:test", "listenAddress": NODE_LOCAL,
                 "podNetworks": ["10.98.0.0/16", "fd98::/16"]}}


def _rendered_config() -> tuple[str, str]:
    from nettrust_core.kube.render import agent_pool_objects
    config_map = next(o for o in agent_pool_objects(POOL) if o["kind"] == "ConfigMap")
    toml, snippet = config_map["data"]["nettrust.toml"], config_map["data"]["node-local.conf"]
    # the lab's recursion: its own root; the test's table and short grants
    toml = toml.replace("[firewall]\n", f'[firewall]\ntable = "{TABLE}"\n', 1)
    return toml + '\n[grants]\nmin_ttl = "1s"\n[lifecycle]\nliveness = false\nunauthorized = false\n', snippet


@pytest.fixture(scope="module")
def node():
    from testbed.lab import Lab, missing_prerequisites
    from testbed.product import NetTrustHost
    require(missing_prerequisites(("unbound", "nft")))
    toml, snippet = _rendered_config()
    with Lab() as lab:
        lab.run("host", ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        # NodeLocal DNSCache puts it on a dummy interface; this kernel has no dummy module, and
        # the node's loopback serves the same purpose (a local address no pod owns)
        lab.run("host", ["ip", "addr", "add", f"{NODE_LOCAL}/32", "dev", "lo"])
        lab.run("net", ["ip", "route", "add", "10.98.0.0/16", "via", lab.host_v4])
        pods: dict[str, NetNS] = {}
        try:
            for name, (node_if, p4, n4, p6, n6) in PODS.items():
                pods[name] = NetNS(f"ntk8s-{name}-{os.getpid()}")
                _veth(lab.host_ns, pods[name], node_if, p4, n4, p6, n6)
            host = NetTrustHost(lab, toml)
            proc = lab.start_unbound(host.unbound_conf() + snippet, env=host.env())
            yield lab, pods
            assert "Traceback" not in proc.log_text(), proc.log_text()[-3000:]
        finally:
            lab.stop_unbound()
            for ns in pods.values():
                ns.delete()


def _pairs(lab) -> set[tuple[str, str]]:
    out = lab.run("host", ["nft", "list", "set", "inet", TABLE, "clients4"]).stdout
    return set(re.findall(r"([0-9a-f:.]+) \. ([0-9a-f:.]+)", " ".join(out.split())))


def test_a_pods_lookup_opens_for_that_pod_only(node):
    lab, pods = node
    assert pods["a"].run(resolve, NODE_LOCAL, "www.fw.test", "A", False) == ["198.51.100.10"]
    assert pods["a"].run(tcp_probe, "198.51.100.10", 80) == "connected"
    assert pods["b"].run(tcp_probe, "198.51.100.10", 80) != "connected"
    assert ("10.98.2.2", "198.51.100.10") not in _pairs(lab)
    assert pods["b"].run(resolve, NODE_LOCAL, "www.fw.test", "A", False) == ["198.51.100.10"]
    assert ("10.98.2.2", "198.51.100.10") in _pairs(lab)
    assert pods["b"].run(tcp_probe, "198.51.100.10", 80) == "connected"


def test_the_rendered_configuration_is_what_runs(node):
    lab, _ = node
    ruleset = lab.run("host", ["nft", "list", "table", "inet", TABLE]).stdout
    assert "10.98.0.0/16" in ruleset                      # podNetworks became lan_networks
    out = subprocess.run(["ip", "netns", "exec", lab.host_ns, "ss", "-lun"], capture_output=True, text=True)
    assert f"{NODE_LOCAL}:53" in out.stdout               # the node-local listen address

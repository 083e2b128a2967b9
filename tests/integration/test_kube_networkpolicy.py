"""NetworkPolicy mode for real, without privileges: a "node" (the lab's host namespace) runs Unbound
and the module with the configuration the operator renders for an ``AgentPool`` with
``enforcement: networkpolicy`` (its ConfigMap: ``firewall.backends = ["record-only"]``), as the
``unbound`` user holding only CAP_NET_BIND_SERVICE — the pod's securityContext — and a
``nettrust agent`` as ``unbound`` holding nothing; a "pod" namespace on a veth asks the node-local
resolver.  The same resolver is a fleet master publishing to a real redis-server (mutual TLS).

The operator runs with kopf's test runner against a FAKE Kubernetes API server (the KMock
emulator, tests/integration/kmock_server.py: no kube-apiserver can run here), fed from the node's
statistics database (``sqlite:``) or from the fleet's stream (``rediss://``, read from another
network namespace than the node's, through a TCP relay: "across nodes").

What a user would notice: the pod's answer arrives and nothing on the node holds kernel state or
privileges; the grant becomes an ipBlock of the NetworkPolicy, from either feed, and leaves when it
expires; the control: the nftables backend under the same capabilities refuses to start, saying
why.  The lag from the answer to the ipBlock in the (emulated) API is measured and printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import require
from fleet_util import MASTER, REDIS_PORT, fleet_certs, fleet_section, start_redis
from lab_util import wait_for
from netns_util import NetNS
from test_gateway import _veth
from test_kube_operator import _environment_restored, api  # noqa: F401 - fixtures, shared

pytestmark = pytest.mark.integration

NODE_LOCAL = "169.254.20.10"
POD = ("npodnode", "10.98.1.2", "10.98.1.1", "fd98:1::2", "fd98:1::1")
POD_B = "10.98.1.3"        # another workload's pod (a second address in the same namespace)
POOL = {"apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool", "metadata": {"name": "np", "uid": "u"},
        "spec": {"image": "nettrust:test", "listenAddress": NODE_LOCAL, "enforcement": "networkpolicy"}}
CAP_NET_BIND_SERVICE = 1 << 10
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
SYSTEM_PYTHON = "/usr/bin/python3"
RECONCILE_SECONDS = "1"
LAG_NAMES = 50


def _rendered_config() -> tuple[str, str]:
    from nettrust_core.kube.render import agent_pool_objects
    config_map = next(o for o in agent_pool_objects(POOL) if o["kind"] == "ConfigMap")
    return config_map["data"]["nettrust.toml"], config_map["data"]["node-local.conf"]


def _relay(lab, target: tuple[str, int]):
    """A TCP relay from this namespace's loopback to ``target`` in the lab's host namespace (the
    operator here reads the fleet's Redis over it, TLS end to end); returns (port, close)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while True:
            try:
                down, _ = listener.accept()
            except OSError:
                return
            up = lab.socket("host")
            up.connect(target)
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def close() -> None:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    return listener.getsockname()[1], close


@pytest.fixture(scope="module")
def node():
    import pwd

    from testbed.lab import Lab, missing_prerequisites
    from testbed.product import NetTrustHost, stats_section
    require(missing_prerequisites(("unbound", "redis-server", "openssl")))
    toml, snippet = _rendered_config()
    with Lab() as lab:
        unbound = pwd.getpwnam("unbound")
        lab.run("host", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        lab.run("host", ["ip", "addr", "add", f"{NODE_LOCAL}/32", "dev", "lo"])
        lab.run("net", ["ip", "route", "add", "10.98.0.0/16", "via", lab.host_v4])
        pod = NetNS("ntnp")
        close_relay = None
        try:
            _veth(lab.host_ns, pod, *POD)
            pod.sh("ip", "addr", "add", f"{POD_B}/24", "dev", "eth0")   # a second pod's address
            certs = fleet_certs(Path(lab.work_dir) / "certs", ("m1", "operator"),
                                server_names=(MASTER, "127.0.0.1"))
            start_redis(lab, certs)
            config = (toml + '[grants]\nmin_ttl = "1s"\ngrace = "1s"\n' + stats_section(lab)
                      + fleet_section(certs, "m1", "master", hold="0s"))
            host = NetTrustHost(lab, config)
            stats_dir = Path(host.config.stats.database).parent
            os.chown(stats_dir, unbound.pw_uid, unbound.pw_gid)
            # the agent as the unprivileged user too: nothing of NetworkPolicy mode is privileged
            agent = lab.spawn("host", [SYSTEM_PYTHON, "-m", "nettrust_core.cli", "-c", str(host.config_path),
                                       "agent"], log_name="agent", user="unbound",
                              env={"PYTHONPATH": f"{host.code_dir}:{DIST_PACKAGES}"})
            stats = host.config.stats
            wait_for(lambda: (os.path.exists(stats.report_socket) and os.path.exists(stats.dnstap_socket))
                     or not agent.alive(), "the agent's sockets")
            assert agent.alive(), agent.log_tail()
            proc = lab.start_unbound(host.unbound_conf() + snippet, env=host.env(),
                                     caps=("net_bind_service",))
            port, close_relay = _relay(lab, (MASTER, REDIS_PORT))
            feed = (f"rediss://127.0.0.1:{port}/0?ca={certs}/ca.crt&cert={certs}/operator.crt"
                    f"&key={certs}/operator.key")
            yield {"lab": lab, "pod": pod, "host": host, "unbound": proc, "agent": agent,
                   "config": config, "snippet": snippet, "sqlite": f"sqlite:{host.config.stats.database}",
                   "redis": feed}
            assert "Traceback" not in proc.log_text(), proc.log_text()[-3000:]
        finally:
            if close_relay is not None:
                close_relay()
            lab.stop_unbound()
            pod.delete()


@pytest.fixture(scope="module")
def operator(api, node):  # noqa: F811 - the shared fixture
    os.environ["NETTRUST_GRANT_FEED"] = node["sqlite"]
    os.environ["NETTRUST_RECONCILE_SECONDS"] = RECONCILE_SECONDS
    from kopf.testing import KopfRunner
    try:
        with KopfRunner(["run", "-A", "--standalone", "-m", "nettrust_core.kube.operator"]) as runner:
            time.sleep(1.0)
            yield runner
    finally:
        from nettrust_core.kube import operator as kube_operator
        for feed in kube_operator._feeds.values():      # the fleet feed's reader thread
            stop = getattr(feed, "stop", None)
            if stop is not None:
                stop()
        kube_operator._feeds.clear()
    assert runner.exception is None, runner.stdout


# -- what the pod does, from this process (sockets made inside its namespace: no fork) -----
def pod_resolve(node, qname: str, sock: socket.socket | None = None,
                source: str | None = None) -> tuple[list[str], float]:
    """The pod's query to the node-local resolver: its addresses, and when the answer arrived."""
    import dns.message
    import dns.query
    own = sock is None
    sock = sock or node["pod"].socket(socket.AF_INET, socket.SOCK_DGRAM)
    if own and source:
        sock.bind((source, 0))
    try:
        r = dns.query.udp(dns.message.make_query(qname, "A"), NODE_LOCAL, timeout=5, sock=sock)
        at = time.time()
    finally:
        if own:
            sock.close()
    return [rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address")], at


def pod_connect(node, address: str, port: int = 80) -> str:
    s = node["pod"].socket()
    s.settimeout(1.5)
    try:
        s.connect((address, port))
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()


def _ip_blocks(api, namespace: str, name: str) -> set[str] | None:  # noqa: F811
    from kubernetes.client.exceptions import ApiException
    try:
        policy = api.NetworkingV1Api().read_namespaced_network_policy(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    blocks = {peer.ip_block.cidr for rule in policy.spec.egress or [] for peer in rule.to or []
              if peer.ip_block}
    return blocks - {f"{NODE_LOCAL}/32"}


def _policy(api, namespace: str, name: str, pod_ip: str = POD[1]) -> None:  # noqa: F811
    """The pod (its address as the node saw it) and an EgressPolicy in NetworkPolicy mode."""
    api.CoreV1Api().create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-pod", "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"podIP": pod_ip}})
    api.CustomObjectsApi().create_namespaced_custom_object("nettrust.io", "v1alpha1", namespace, "egresspolicies", {
        "apiVersion": "nettrust.io/v1alpha1", "kind": "EgressPolicy",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {"podSelector": {"matchLabels": {"app": name}}, "domains": ["**.fw.test"],
                 "enforcement": "networkpolicy", "ports": [{"port": 80}]}})


def _delete_policy(api, namespace: str, name: str) -> None:  # noqa: F811
    api.CustomObjectsApi().delete_namespaced_custom_object("nettrust.io", "v1alpha1", namespace,
                                                           "egresspolicies", name)
    wait_for(lambda: _ip_blocks(api, namespace, f"nettrust-{name}") is None, "the NetworkPolicy to go")


# -- 1: no privileges, no kernel state, and the grant reaches the feed ----------------------------
def test_the_resolver_holds_only_cap_net_bind_service_and_writes_no_kernel_state(node):
    status = Path(f"/proc/{node['unbound'].pid}/status").read_text()
    # setpriv exec'd into unbound: the pid is Unbound's own (ip netns exec and setpriv exec too)
    assert re.search(r"^Name:\s+unbound$", status, re.M), status[:200]
    caps = dict(re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status, re.M))
    assert int(caps["CapEff"], 16) == CAP_NET_BIND_SERVICE and int(caps["CapBnd"], 16) == CAP_NET_BIND_SERVICE
    assert int(Path(f"/proc/{node['agent'].pid}/status").read_text().split("CapEff:")[1].split()[0], 16) == 0
    addresses, _ = pod_resolve(node, "www.fw.test")
    assert addresses == ["198.51.100.10"]
    # nothing in the node's kernel: no table, so nothing here filters (the CNI enforces the
    # NetworkPolicy): an address the pod never asked for is reachable from the node's side
    assert node["lab"].run("host", ["nft", "list", "tables"]).stdout.strip() == ""
    assert pod_connect(node, "203.0.113.80") == "connected"
    assert "Traceback" not in node["unbound"].log_text()


def test_the_grant_reaches_the_statistics_feed_and_becomes_an_ip_block(node, api, operator):  # noqa: F811
    from nettrust_core.grant_feed import FeedGrant, feed_from_spec
    os.environ["NETTRUST_GRANT_FEED"] = node["sqlite"]
    addresses, _ = pod_resolve(node, "h7.fw.test")
    assert addresses == ["198.18.0.7"]
    feed = feed_from_spec(node["sqlite"])

    def granted():
        return {(g.client, g.address, g.name) for g in feed.live(time.time())}
    found = wait_for(lambda: (g := granted()) and (POD[1], "198.18.0.7", "h7.fw.test") in g and g,
                     "the grant in the statistics database")
    assert all(isinstance(g, FeedGrant) for g in feed.live(time.time())) and found
    _policy(api, "npsql", "web")
    blocks = wait_for(lambda: _ip_blocks(api, "npsql", "nettrust-web"), "the rendered NetworkPolicy")
    assert "198.18.0.7/32" in blocks and "198.51.100.10/32" in blocks   # both of the pod's names
    assert "203.0.113.80/32" not in blocks                              # connected, never asked
    _delete_policy(api, "npsql", "web")


# -- 2: the fleet's stream as the feed, across nodes ---------------------------------------------
def test_the_fleet_stream_feeds_the_network_policy_and_expired_grants_leave(node, api, operator):  # noqa: F811
    # published before the operator reads the stream at all: it must come from the replay
    assert pod_resolve(node, "h8.fw.test")[0] == ["198.18.0.8"]
    time.sleep(0.5)
    os.environ["NETTRUST_GRANT_FEED"] = node["redis"]
    try:
        _policy(api, "npfleet", "fleet")
        blocks = wait_for(lambda: _ip_blocks(api, "npfleet", "nettrust-fleet"), "the NetworkPolicy")
        assert "198.18.0.8/32" in blocks
        # followed live: a short grant (TTL 3 s + 1 s grace) appears, then leaves on expiry
        assert pod_resolve(node, "s5.fw.test")[0] == ["198.19.0.5"]
        wait_for(lambda: "198.19.0.5/32" in (_ip_blocks(api, "npfleet", "nettrust-fleet") or ()),
                 "the followed grant as an ipBlock", timeout=10)
        wait_for(lambda: "198.19.0.5/32" not in (_ip_blocks(api, "npfleet", "nettrust-fleet") or ()),
                 "the expired grant to leave", timeout=20)
        assert "198.18.0.8/32" in _ip_blocks(api, "npfleet", "nettrust-fleet")   # control: still live
        _delete_policy(api, "npfleet", "fleet")
    finally:
        os.environ["NETTRUST_GRANT_FEED"] = node["sqlite"]


def test_a_second_workload_asking_a_cached_name_gets_its_own_ip_block_from_the_stream(node, api, operator):  # noqa: F811
    """Pods are the agent's clients (gateway.per_client): the second pod's answer — a cache
    hit, while the first pod's grant lives — grants and publishes its own pair, so the stream
    feeds its own workload's policy; a third workload that never asked gets nothing."""
    os.environ["NETTRUST_GRANT_FEED"] = node["redis"]
    try:
        _policy(api, "npattr", "first")
        _policy(api, "npattr", "second", pod_ip=POD_B)
        assert pod_resolve(node, "h9.fw.test")[0] == ["198.18.0.9"]
        wait_for(lambda: "198.18.0.9/32" in (_ip_blocks(api, "npattr", "nettrust-first") or ()),
                 "the first pod's grant as its ipBlock")
        assert "198.18.0.9/32" not in (_ip_blocks(api, "npattr", "nettrust-second") or ())
        assert pod_resolve(node, "h9.fw.test", source=POD_B)[0] == ["198.18.0.9"]
        wait_for(lambda: "198.18.0.9/32" in (_ip_blocks(api, "npattr", "nettrust-second") or ()),
                 "the second pod's own grant as its ipBlock")
        _policy(api, "npattr", "third", pod_ip="10.98.1.4")
        wait_for(lambda: _ip_blocks(api, "npattr", "nettrust-third") is not None, "the third policy")
        time.sleep(2 * float(RECONCILE_SECONDS))
        assert "198.18.0.9/32" not in _ip_blocks(api, "npattr", "nettrust-third")
        for name in ("first", "second", "third"):
            _delete_policy(api, "npattr", name)
    finally:
        os.environ["NETTRUST_GRANT_FEED"] = node["sqlite"]


# -- 3: the lag from the DNS answer to the ipBlock in the (emulated) API ------------------------
def _lag(node, api, feed: str, namespace: str, first: int) -> list[float]:  # noqa: F811
    from testbed.zones import h_address
    os.environ["NETTRUST_GRANT_FEED"] = feed
    _policy(api, namespace, "lag")
    wait_for(lambda: _ip_blocks(api, namespace, "nettrust-lag") is not None, "the NetworkPolicy")
    names = {f"h{i}.fw.test": f"{h_address(i)[0]}/32" for i in range(first, first + LAG_NAMES)}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            now = time.time()
            for cidr in _ip_blocks(api, namespace, "nettrust-lag") or ():
                seen.setdefault(cidr, now)
            stop.wait(0.02)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    answered: dict[str, float] = {}
    sock = node["pod"].socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for qname, cidr in names.items():
            addresses, at = pod_resolve(node, qname, sock)
            assert [f"{a}/32" for a in addresses] == [cidr]
            answered[cidr] = at
            time.sleep(0.1)
        wait_for(lambda: set(answered) <= set(seen), "every answered address as an ipBlock", timeout=30)
    finally:
        stop.set()
        poller.join()
        sock.close()
        _delete_policy(api, namespace, "lag")
    return [seen[c] - answered[c] for c in answered]


def test_lag_from_the_answer_to_the_ip_block(node, api, operator, capsys):  # noqa: F811
    figures = {}
    try:
        for label, feed, namespace, first in (("sqlite", node["sqlite"], "nplag1", 100),
                                              ("fleet stream", node["redis"], "nplag2", 200)):
            lags = sorted(_lag(node, api, feed, namespace, first))
            p50 = statistics.median(lags)
            p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
            figures[label] = (p50, p99, lags[-1])
            # every address arrived after its answer, within two reconcile periods, the agent's
            # join (1 s) and flush, or the stream
            assert lags[0] > 0 and p99 < 2 * float(RECONCILE_SECONDS) + 3.0, (label, lags)
    finally:
        os.environ["NETTRUST_GRANT_FEED"] = node["sqlite"]
    with capsys.disabled():
        for label, (p50, p99, worst) in figures.items():
            print(f"\nAPI lag, answer -> ipBlock in the KMock API ({LAG_NAMES} names, reconcile "
                  f"{RECONCILE_SECONDS} s, {label} feed): p50 {p50:.2f} s, p99 {p99:.2f} s, max {worst:.2f} s")


# -- the control: a kernel backend under the same capabilities fails closed at start --------------
def test_control_the_nftables_backend_under_the_same_capabilities_refuses_to_start(node):
    from testbed.errors import LabError
    from testbed.product import NetTrustHost
    lab = node["lab"]
    lab.stop_unbound()
    config = node["config"].replace('backends = ["record-only"]', 'backends = ["nftables"]')
    assert config != node["config"]
    host = NetTrustHost(lab, config, name="nftcontrol")
    with pytest.raises(LabError) as err:
        lab.start_unbound(host.unbound_conf() + node["snippet"], env=host.env(), caps=("net_bind_service",))
    assert "no CAP_NET_ADMIN" in str(err.value), str(err.value)[-2000:]
    assert lab.run("host", ["nft", "list", "tables"]).stdout.strip() == ""

"""The fleet's test bed: a lab (master Unbound + redis-server with TLS in its host namespace),
and follower namespaces, each linked to the lab's internet namespace, running ``nettrust
follow`` with its own nftables ruleset; the follower's own host is the client behind it.

::

    follower ns fN (10.99.N.2) --veth-- lab net ns (10.99.N.1, routes, targets)
                                            |
                                   lab host ns 192.0.2.2: Unbound (master), redis-server (TLS)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from netns_util import REPO, NetNS, _setns

from testbed.process import LabProcess
from testbed.product import NetTrustHost

REDIS_PORT = 6390
MASTER = "192.0.2.2"
URL = f"rediss://{MASTER}:{REDIS_PORT}/0"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def fleet_certs(certs: Path, nodes, server_names=(MASTER,), rogue=()) -> Path:
    """A CA, Redis's server certificate and one per node in ``certs``; ``rogue``: nodes also
    certified by another CA (in ``certs/rogue``).  Test keys, readable by Unbound's user."""
    from nettrust_core.fleet.certs import make_ca, make_cert
    make_ca(certs)
    make_cert(certs, "server", server_names=list(server_names))
    for node in nodes:
        make_cert(certs, node)
    if rogue:
        make_ca(certs / "rogue", name="another-ca")
        for node in rogue:
            make_cert(certs / "rogue", node)
    for root, _dirs, files in os.walk(certs):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return certs


def connect_from(ns: NetNS, address: str, port: int = 80, timeout: float = 0.9):
    """True, or the error's name (ConnectionRefusedError: a follower's firewall refused it)."""
    s = ns.socket()
    s.settimeout(timeout)
    try:
        s.connect((address, port))
        return True
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()


def fleet_section(certs: Path, node: str, role: str, cert: str | None = None, **more) -> str:
    """``cert``: the certificate's name in ``certs`` (default: the node's own)."""
    cert = cert or node
    keys = {"role": role, "node": node, "redis_url": URL, "ca_file": str(certs / "ca.crt"),
            "cert_file": str(certs / f"{cert}.crt"), "key_file": str(certs / f"{cert}.key"),
            **more}
    return "[fleet]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


class MasterHost(NetTrustHost):
    """The product's Unbound, also listening on the veth address for the followers' clients."""

    def unbound_conf(self) -> str:
        return super().unbound_conf() + (f"server:\n    interface: {MASTER}\n"
                                         "    access-control: 10.99.0.0/16 allow\n")


def start_redis(lab, certs: Path) -> LabProcess:
    proc = lab.spawn("host", ["redis-server", "--bind", MASTER, "--port", "0",
                              "--tls-port", str(REDIS_PORT),
                              "--tls-cert-file", str(certs / "server.crt"),
                              "--tls-key-file", str(certs / "server.key"),
                              "--tls-ca-cert-file", str(certs / "ca.crt"),
                              "--tls-auth-clients", "yes", "--protected-mode", "no", "--save", "", "--appendonly", "no",
                              "--dir", str(certs)], log_name="redis")
    if not proc.wait_for_log("Ready to accept connections", timeout=10):
        raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}")
    return proc


class FollowerNode:
    """One follower namespace with its ``nettrust follow``."""

    def __init__(self, lab, index: int, certs: Path, extra: str = "") -> None:
        self.lab = lab
        self.index = index
        self.node = f"f{index}"
        self.address = f"10.99.{index}.2"
        self.ns = NetNS("ntfl")
        self.proc: LabProcess | None = None
        work = Path(lab.work_dir) / "fleet"
        work.mkdir(exist_ok=True)
        self.status_file = work / f"{self.node}.json"
        self.config_path = work / f"{self.node}.toml"
        self.write_config(certs, extra)
        peer = f"fl{index}-{lab.token[-4:]}"
        self.ns.sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", peer, "netns",
                   lab.net_ns)
        self.ns.sh("ip", "addr", "add", f"{self.address}/24", "dev", "v0")
        self.ns.sh("ip", "link", "set", "v0", "up")
        self.ns.sh("ip", "route", "add", "default", "via", f"10.99.{index}.1")
        lab.run("net", ["ip", "addr", "add", f"10.99.{index}.1/24", "dev", peer])
        lab.run("net", ["ip", "link", "set", peer, "up"])
        lab.run("net", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def write_config(self, certs: Path, extra: str = "", cert: str | None = None) -> None:
        self.config_path.write_text(
            '[reachable]\nhosts = ["192.0.2.2"]\n[lifecycle]\nliveness = false\n'
            'unauthorized = false\n[log]\nlevel = "debug"\n'
            # The follower's host asks the master (as root here): its ruleset lets root's DNS out.
            '[firewall]\nresolver_user = "root"\n' + extra
            + fleet_section(certs, self.node, "follower", cert,
                            status_file=str(self.status_file)))

    def start(self, *, wait: bool = True) -> LabProcess:
        self.status_file.unlink(missing_ok=True)
        logs = Path(self.lab.work_dir) / "logs"
        log_path = logs / f"{self.node}-{int(time.time() * 1000)}.log"
        argv = ["ip", "netns", "exec", self.ns.name, sys.executable, "-m", "nettrust_core.cli",
                "-c", str(self.config_path), "follow", "--log-level", "debug"]
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": REPO})
        self.proc = LabProcess(popen, name=self.node, ns=self.ns.name, argv=argv,
                               log_path=log_path)
        self.lab.processes.append(self.proc)
        if wait:
            self.wait_connected()
        return self.proc

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_connected(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.get("connected") and st.get("time", 0) > time.time() - 2:
                return st
            if self.proc is not None and not self.proc.alive():
                raise RuntimeError(f"follower {self.node} exited:\n{self.proc.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"follower {self.node} not connected: {st}\n"
                                     f"{self.proc.log_tail() if self.proc else ''}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            if sig == signal.SIGKILL:
                self.proc.kill(signal.SIGKILL)
                self.proc.wait(10)
            else:
                self.proc.stop()
            self.proc = None

    def python(self, code: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.ns.python(code, check=check)

    def connect(self, address: str, port: int = 80, timeout: float = 0.9):
        """True, or the error's name (ConnectionRefusedError: the follower's firewall)."""
        return connect_from(self.ns, address, port, timeout)

    def resolve(self, name: str) -> list[str]:
        out = self.ns.sh("dig", f"@{MASTER}", "+tries=1", "+time=3", "+short", name, "A",
                         check=False).stdout
        return [ln for ln in out.split() if ln[:1].isdigit()]

    def element_timeout(self, address: str) -> float | None:
        """Seconds left on ``address`` in this follower's kernel sets (None: not there), read
        with ``nettrust hosts --json`` in its namespace."""
        out = self.ns.sh(sys.executable, "-m", "nettrust_core.cli", "-c", str(self.config_path),
                         "hosts", "--json").stdout
        for g in json.loads(out):
            if g["address"] == address:
                return float(g["expires_in"])
        return None

    def close(self) -> None:
        self.stop()
        self.ns.delete()


def _is_address(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def client_names(lab) -> set[str]:
    """The CLIENT SETNAME of every connection Redis holds (``redis-cli`` with the tool's
    certificate, in the lab's host namespace)."""
    certs = f"{lab.work_dir}/certs"
    out = lab.run("host", ["redis-cli", "-h", MASTER, "-p", str(REDIS_PORT), "--tls", "--cacert",
                           f"{certs}/ca.crt", "--cert", f"{certs}/tool.crt",
                           "--key", f"{certs}/tool.key", "CLIENT", "LIST"], check=False).stdout
    return {m.group(1) for m in re.finditer(r"name=(\S+)", out)}


def in_host(lab, fn, *args):
    """``fn(*args)`` inside the lab's host namespace (where redis listens), in a forked child."""
    import pickle
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _setns(f"/run/netns/{lab.host_ns}")
            data = pickle.dumps((True, fn(*args)))
        except BaseException as exc:           # noqa: BLE001 - shipped to the parent
            data = pickle.dumps((False, repr(exc)))
        os.write(w, data)
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise AssertionError(value)
    return value


#: A gateway follower's two client networks: name -> (its interface, client, gateway address).
GATEWAY_CLIENTS = {"a": ("lana", "10.99.61.2", "10.99.61.1"),
                   "b": ("lanb", "10.99.62.2", "10.99.62.1")}


class GatewayFollower(FollowerNode):
    """A follower in gateway mode (``gateway.per_client``): its namespace forwards for two
    client namespaces (``GATEWAY_CLIENTS``) and ``nettrust follow`` enforces on the forward
    hook.  No [reachable]: its clients reach the masters' DNS through ``fleet.masters`` only,
    and it reaches Redis through the rule ``fleet.redis_url`` derives (output only)."""

    def __init__(self, lab, index: int, certs: Path, node: str) -> None:
        self.gateway_node = node
        super().__init__(lab, index, certs)
        self.clients: dict[str, NetNS] = {}
        self.ns.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        try:
            for name, (iface, address, gateway) in GATEWAY_CLIENTS.items():
                client = self.clients[name] = NetNS(f"ntfc{name}")
                client.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", iface,
                          "netns", self.ns.name)
                client.sh("ip", "addr", "add", f"{address}/24", "dev", "eth0")
                client.sh("ip", "link", "set", "eth0", "up")
                client.sh("ip", "link", "set", "lo", "up")
                self.ns.sh("ip", "addr", "add", f"{gateway}/24", "dev", iface)
                self.ns.sh("ip", "link", "set", iface, "up")
                client.sh("ip", "route", "add", "default", "via", gateway)
                lab.run("net", ["ip", "route", "add", f"{address.rsplit('.', 1)[0]}.0/24",
                                "via", self.address])
        except BaseException:
            self.close()
            raise

    def write_config(self, certs: Path, extra: str = "", cert: str | None = None) -> None:
        self.node = getattr(self, "gateway_node", self.node)
        self.config_path.write_text(
            '[firewall]\nhooks = ["output", "forward"]\nlan_interfaces = ["lana", "lanb"]\n'
            'resolver_user = ""\ntable = "ntfleetgw"\n[gateway]\nper_client = true\n'
            '[lifecycle]\nliveness = false\nunauthorized = false\n[log]\nlevel = "debug"\n'
            + extra + fleet_section(certs, self.node, "follower", cert,
                                    status_file=str(self.status_file), masters=[MASTER]))

    def client_connect(self, who: str, address: str, port: int = 80, timeout: float = 0.9):
        """True, or the error's name (ConnectionRefusedError: the follower refused it)."""
        return connect_from(self.clients[who], address, port, timeout)

    def client_resolve(self, who: str, name: str, *more: str, server: str = MASTER) -> list[str]:
        out = self.clients[who].sh("dig", f"@{server}", "+tries=1", "+time=2", "+short", *more,
                                   name, "A", check=False).stdout
        return [t for t in out.split() if _is_address(t)]

    def pairs(self) -> set[tuple[str, str]]:
        """The ``client . destination`` pairs in this follower's kernel set."""
        out = self.ns.sh("nft", "list", "set", "inet", "ntfleetgw", "clients4").stdout
        return set(re.findall(r"([0-9.]+) \. ([0-9.]+)", " ".join(out.split())))

    def close(self) -> None:
        for client in getattr(self, "clients", {}).values():
            client.delete()
        super().close()

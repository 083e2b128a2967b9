"""The resolvers the benchmark compares, each started fresh (empty cache, empty sets) per round.

All listen on 127.0.0.1:53 in the lab's host namespace and resolve the lab's zones, so the same
dnsperf workload reaches each of them the same way.  A configuration the product or the machine
cannot provide raises :class:`Unavailable` with the reason, and the report says so.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import time
from pathlib import Path

from testbed import netns
from testbed.errors import LabError
from testbed.product import NetTrustHost, stats_section

from .zone import ZONE


class Unavailable(Exception):
    """This configuration cannot run here; the message says why."""


def unbound_server(threads: int, module_config: str) -> str:
    """The server: clause of the Unbound configurations the benchmark writes itself."""
    return (f"server:\n    interface: 127.0.0.1\n    port: 53\n    num-threads: {threads}\n"
            f"    so-reuseport: yes\n    verbosity: 1\n    module-config: \"{module_config}\"\n")


#: The configuration NetTrust runs with in the benchmark: the product's defaults.
NETTRUST_DEFAULT = ""

#: Every name of the benchmark zone is under one registrable domain (bench.test), so the default
#: per-domain budget (grants.max_per_domain = 4096, a flood defence with tests of its own) would
#: refuse every grant past the first 4096 and the benchmark would time the refusing path, not
#: the write (and fail the race). A real site's names span many domains: lift the budget here.
UNCAPPED = "max_per_domain = 67108864\n"


def uncapped(text: str) -> str:
    """``text`` with the per-domain budget lifted (added to its [grants] table, or a new one)."""
    if "[grants]\n" in text:
        return text.replace("[grants]\n", "[grants]\n" + UNCAPPED, 1)
    return text + "\n[grants]\n" + UNCAPPED

#: Modes the issue asks about that the product (or this machine) does not offer.
NOT_SUPPORTED = {
    "PowerDNS Recursor": "skipped (optional)",
}


class Server:
    """Start/stop one resolver configuration in a lab."""

    key = ""
    label = ""

    def __init__(self, lab) -> None:
        self.lab = lab

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class PlainUnbound(Server):
    """Unbound without NetTrust: ``validator iterator``, two threads — the limit to compare with."""

    key = "plain"
    label = "Unbound plain (2 threads)"

    def start(self) -> None:
        conf = unbound_server(2, "validator iterator") + self.lab.unbound_zone_conf()
        self.lab.start_unbound(conf, caps=("net_bind_service",))

    def stop(self) -> None:
        self.lab.stop_unbound()


class PlainUnboundProcesses(Server):
    """Plain Unbound as several one-thread processes sharing the port (so-reuseport), the shape
    of "NetTrust x2 processes" without NetTrust: what that shape costs Unbound itself."""

    def __init__(self, lab, instances: int = 2) -> None:
        super().__init__(lab)
        self.instances = instances
        self.key = f"plain_x{instances}"
        self.label = f"Unbound plain x{instances} processes"

    def start(self) -> None:
        conf = unbound_server(1, "validator iterator") + self.lab.unbound_zone_conf()
        for k in range(self.instances):
            self.lab.start_unbound(conf, caps=("net_bind_service",), name=f"unbound{k}")

    def stop(self) -> None:
        self.lab.stop_unbound()


class PassThroughModule(Server):
    """Unbound with a Python module that does nothing (one thread, like NetTrust): the floor
    any pythonmod pays, so the report can tell Unbound's Python cost from NetTrust's own."""

    key = "passthrough"
    label = "Unbound + no-op Python module"
    script = Path(__file__).with_name("passthrough_module.py")

    def start(self) -> None:
        staged = Path(self.lab.work_dir) / "passthrough_module.py"   # readable by 'unbound'
        shutil.copyfile(self.script, staged)
        os.chmod(staged, 0o644)
        conf = (unbound_server(1, "python validator iterator") + self.lab.unbound_zone_conf()
                + f'python:\n    python-script: "{staged}"\n')
        self.lab.start_unbound(conf, caps=("net_bind_service",),
                               env={"PYTHONPATH": "/usr/lib/python3/dist-packages"})

    def stop(self) -> None:
        self.lab.stop_unbound()


class PassThroughRuleset(PassThroughModule):
    """The no-op module with NetTrust's ruleset loaded and nothing of NetTrust running: every DNS
    packet on loopback pays the firewall's per-packet cost (the netfilter hooks the ruleset
    registers: its output chain, and conntrack, which its ``ct state`` rules switch on) and
    nothing else.  On cache hits, where no NetTrust code runs, this is the floor of every
    NetTrust deployment.  (Measured by hand, 2026-12-07: a raw-priority ``notrack`` for loopback
    on top did not lift it -- 116k/119k hits a second against 120k/111k without -- so the cost
    is the hooks' evaluation, not conntrack's look-ups.)"""

    key = "passthrough_ruleset"
    label = "no-op module + NetTrust's ruleset"

    def start(self) -> None:
        # NetTrust loads its ruleset at start and leaves it when it stops (fail closed).
        self.ruleset = NetTrustHost(self.lab, uncapped(NETTRUST_DEFAULT), name=self.key)
        self.ruleset.start()
        self.ruleset.stop()
        super().start()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.ruleset.nettrust("remove", check=False)


class NetTrust(Server):
    """Unbound + NetTrust as ``testbed.product.NetTrustHost`` renders it.

    ``instances > 1``: several single-threaded Unbound processes sharing the port with
    so-reuseport, each with its own grant sets (NetTrustHost's ``instances=``, issue 5b).
    """

    def __init__(self, lab, *, instances: int = 1, config_text: str = NETTRUST_DEFAULT) -> None:
        super().__init__(lab)
        self.instances = instances
        self.config_text = uncapped(config_text)
        self.key = "nettrust" if instances == 1 else f"nettrust_x{instances}"
        self.label = "NetTrust default" if instances == 1 else f"NetTrust x{instances} processes"
        self.host = None

    def make_host(self) -> NetTrustHost:
        if self.instances == 1:
            return NetTrustHost(self.lab, self.config_text, name=self.key)
        if "instances" not in inspect.signature(NetTrustHost).parameters:
            raise Unavailable("unavailable: testbed.product.NetTrustHost has no instances= "
                              "(several Unbound processes with so-reuseport, issue 5b)")
        # The product's switch: every process reads firewall.instances and its own index.
        text = f"{self.config_text}\n[firewall]\ninstances = {self.instances}\n"
        try:
            return NetTrustHost(self.lab, text, name=self.key, instances=self.instances)
        except Exception as exc:   # a config key the product does not know yet, …
            raise Unavailable(f"unavailable: {type(exc).__name__}: {exc}") from exc

    def start(self) -> None:
        self.host = self.make_host()
        self.host.start()

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
            # The ruleset outlives Unbound by design (fail closed); the next configuration
            # must start from an open firewall and empty sets.
            self.host.nettrust("remove", check=False)
            self.host = None


#: The gateway configuration: per-client grants, so every cache hit runs the reply_cache callback.
GATEWAY_CONFIG = """
[firewall]
hooks = ["output", "forward"]
lan_interfaces = ["lo"]
[gateway]
per_client = true
[grants]
max_per_client = 262144
"""
#: (Above) the benchmark's one gateway client asks every name of the miss phase: its cap of pairs
#: (by default max_per_set / 16 = 16,384) is lifted to the set's size as the per-domain budget
#: is, or the rest of the phase would time refused answers, not written pairs.
#: dnsperf's source address for the gateway configuration: a client that is not this host
#: (the callback returns at once for loopback clients), on the host namespace's lo.
GATEWAY_CLIENT = "10.255.0.1"


class NetTrustGateway(NetTrust):
    """NetTrust in gateway mode with per-client callbacks (issue 13): dnsperf queries from
    :data:`GATEWAY_CLIENT`, so each cache hit is checked against the per-client grants (and the
    first hit of each name writes its ``client . destination`` pair)."""

    client_source = GATEWAY_CLIENT

    def __init__(self, lab) -> None:
        super().__init__(lab, config_text=GATEWAY_CONFIG)
        self.key = "nettrust_gateway"
        self.label = "NetTrust gateway (per-client)"

    def start(self) -> None:
        self.lab.run("host", ["ip", "addr", "replace", f"{GATEWAY_CLIENT}/32", "dev", "lo"])
        self.host = self.make_host()
        render = self.host.unbound_conf
        self.host.unbound_conf = lambda: (render() + "server:\n    access-control: "
                                          f"{GATEWAY_CLIENT}/32 allow\n")
        self.host.start()


class NetTrustStats(NetTrust):
    """NetTrust default with statistics on (``[stats]``, cache hits collected through dnstap)
    and ``nettrust agent`` receiving them: what statistics cost against NetTrust default."""

    def __init__(self, lab, *, cache_hits: bool = True) -> None:
        # stats.cache_hits = false: no dnstap; only the answers the module judges are recorded
        # (Unbound's own counters still count every hit: `unbound-control stats_noreset`).
        key = "nettrust_stats" if cache_hits else "nettrust_stats_nohits"
        database = str(Path(lab.work_dir) / "stats" / f"{key}.db")     # one per configuration
        super().__init__(lab, config_text=stats_section(lab, cache_hits=cache_hits, database=database))
        self.key = key
        self.label = ("NetTrust + statistics" if cache_hits
                      else "NetTrust + statistics (cache_hits = false)")

    def start(self) -> None:
        self.host = self.make_host()
        try:
            # First: Unbound's dnstap connects to the agent's socket when it starts.
            self.host.start_agent()
        except RuntimeError as exc:     # e.g. python3-prometheus-client missing (bench/run installs it)
            self.host.stop_agent()
            self.host = None
            last = str(exc).strip().splitlines()[-1:] or [""]
            raise Unavailable(f"unavailable: nettrust agent did not start: {last[0]}") from exc
        self.host.start()

    def stop(self) -> None:
        host = self.host
        try:
            super().stop()
        finally:
            if host is not None:
                host.stop_agent()


class Dnsmasq(Server):
    """dnsmasq (the peer) forwarding to the lab's NSD, adding every bench.test answer to an
    nftables set with ``--nftset`` (sets with a 1 h default timeout, matched by an output chain)."""

    key = "dnsmasq"
    label = "dnsmasq --nftset"
    table = "ntbench_dnsmasq"

    def ruleset(self) -> str:
        t = self.table
        return (f"table inet {t} {{\n"
                f"  set allow4 {{ type ipv4_addr; flags timeout; timeout 1h; }}\n"
                f"  set allow6 {{ type ipv6_addr; flags timeout; timeout 1h; }}\n"
                f"  chain output {{ type filter hook output priority 0; policy accept;\n"
                f"    ip daddr @allow4 accept\n    ip6 daddr @allow6 accept\n  }}\n}}\n")

    def start(self) -> None:
        if self.lab.extra_zones.get(ZONE) is None:
            raise LabError(f"the lab has no {ZONE} zone")
        self.lab.run("host", ["nft", "-f", "-"], input=self.ruleset())
        t = self.table
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces", "--port=53",
                "--pid-file=", "--log-facility=-", f"--server={self.lab.nsd_v4}",
                "--cache-size=10000", "--dns-forward-max=1000",
                f"--nftset=/{ZONE}/4#inet#{t}#allow4,6#inet#{t}#allow6"]
        self.process = self.lab.spawn("host", argv, log_name="dnsmasq")
        deadline = time.monotonic() + 10
        while netns.dns_probe(self.lab.host_ns, "127.0.0.1", f"n0.{ZONE}.", 1, rd=True) is None:
            if not self.process.alive() or time.monotonic() > deadline:
                raise LabError(f"dnsmasq did not answer; log:\n{self.process.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.stop()
        self.lab.run("host", ["nft", "delete", "table", "inet", self.table], check=False)

    def set_size(self) -> int:
        """Elements dnsmasq put into allow4 (proves --nftset is really working)."""
        out = self.lab.run("host", ["nft", "list", "set", "inet", self.table, "allow4"]).stdout
        return out.count("expires")


def dnsmasq_version() -> str:
    try:
        out = subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0] if out else "unknown"

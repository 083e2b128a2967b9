"""NetTrust itself inside a lab: Unbound + the module + nftables in the lab's host namespace.

Used by the integration tests and by the sandbox walkthrough, so both run the product the same
way an installed host does: the include comes from :func:`nettrust_core.unbound_conf.render`,
Unbound runs as ``unbound`` holding only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, and the CLI is
the real ``nettrust`` command.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import nettrust_core
import unbound_module
from nettrust_core.config import load_config
from nettrust_core.unbound_conf import render

SYSTEM_PYTHON = "/usr/bin/python3"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"

LISTEN = """server:
    interface: 127.0.0.1
    interface: ::1
    port: 53
    do-ip6: yes
    verbosity: 1
    num-threads: {threads}
    so-reuseport: yes
    log-servfail: yes
    val-log-level: 1
"""


class NetTrustHost:
    """One configuration of NetTrust running (or ready to run) in ``lab``'s host namespace."""

    def __init__(self, lab, config_text: str, *, name: str = "nettrust", threads: int = 1,
                 mode: str = "stub", instances: int | None = None) -> None:
        """``instances``: how many Unbound processes share port 53 (so-reuseport), each told its
        index by NETTRUST_INSTANCE; the config must say the same (``firewall.instances``)."""
        self.lab = lab
        self.name = name
        self.threads = threads
        self.mode = mode
        self.code_dir = _stage_code(Path(lab.work_dir) / "code")
        self.config_path = Path(lab.work_dir) / "nettrust" / f"{name}.toml"
        self.config_path.parent.mkdir(mode=0o755, exist_ok=True)
        self.config_path.write_text(config_text)
        os.chmod(self.config_path, 0o644)
        self.config = load_config(self.config_path)
        self.instances = self.config.firewall.instances if instances is None else instances
        if self.instances != self.config.firewall.instances:
            raise ValueError(f"instances={instances}: the config must set firewall.instances = "
                             f"{instances} (it says {self.config.firewall.instances})")
        self.process = None         # instance 0
        self.processes: list = []   # one per instance
        #: Unbound's local control socket, as Debian's package configures one (the module flushes
        #: names from Unbound's cache through it: nettrust_core.cache_invalidation).  One process
        #: only: several instances would share the path.
        self.control_socket: str | None = None
        if self.instances == 1:
            run_dir = Path(lab.work_dir) / "run"
            run_dir.mkdir(exist_ok=True)
            run_dir.chmod(0o1777)   # Unbound binds it as unbound, or as root holding two caps
            self.control_socket = str(run_dir / f"{name}.ctl")

    @property
    def script(self) -> Path:
        return self.code_dir / "unbound_module" / "nettrust_unbound.py"

    def zone_conf(self) -> str:
        """The lab's part of the Unbound configuration (zones, trust anchors) for this config;
        also what the container image gets as a snippet in /etc/nettrust/unbound.conf.d/."""
        zones = self.lab.unbound_zone_conf(self.mode)
        if self.config.upstream.mode == "forward":
            # NetTrust's own include forwards "." to the configured servers: keep only the lab's
            # server: settings (trust anchors, local-zone exceptions).
            zones = zones.split("forward-zone:")[0].split("stub-zone:")[0]
            zones = "\n".join(ln for ln in zones.splitlines() if "root-hints" not in ln) + "\n"
        return zones

    def unbound_conf(self) -> str:
        conf = LISTEN.format(threads=self.threads) + self.zone_conf() + render(self.config, script=str(self.script))
        if self.control_socket is not None:
            conf += ("remote-control:\n    control-enable: yes\n"
                     f"    control-interface: {self.control_socket}\n    control-use-cert: no\n")
        return conf

    def env(self, instance: int = 0) -> dict[str, str]:
        env = {"NETTRUST_CONFIG": str(self.config_path), "PYTHONPATH": DIST_PACKAGES}
        if self.instances > 1:
            env["NETTRUST_INSTANCE"] = str(instance)
        return env

    def start(self, *, user: str | None = "unbound", caps: tuple[str, ...] | None = None):
        """Start every instance (one after the other, each ready before the next); ``caps``:
        instead of the lab's default capabilities (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE)."""
        conf = self.unbound_conf()
        self.processes = []
        if caps is not None:
            self.caps = caps                 # kept for later restarts
        caps = getattr(self, "caps", None)
        more = {} if caps is None else {"caps": caps}
        for k in range(self.instances):
            name = "unbound" if self.instances == 1 else f"unbound{k}"
            self.processes.append(self.lab.start_unbound(conf, user=user, env=self.env(k), name=name,
                                                         **more))
        self.process = self.processes[0]
        return self.process

    def stop(self) -> int | None:
        return self.lab.stop_unbound()

    def kill(self, sig) -> None:
        self.lab.kill_unbound(sig)
        for proc in self.processes:
            proc.wait(10)

    def log(self, instance: int | None = None) -> str:
        """One instance's Unbound log, or (None) every instance's one after the other."""
        procs = self.processes if instance is None else [self.processes[instance]]
        return "".join(p.log_text() for p in procs)

    def nettrust(self, *args: str, check: bool = True):
        """Run the real CLI in the host namespace (as root, like an administrator would)."""
        return self.lab.run("host", [SYSTEM_PYTHON, "-m", "nettrust_core.cli", "-c", str(self.config_path),
                                     *args], check=check,
                            env={"PYTHONPATH": f"{self.code_dir}:{DIST_PACKAGES}"})

    def start_agent(self, timeout: float = 10.0):
        """Run ``nettrust agent`` for this configuration ([stats] enabled, see
        :func:`stats_section`) as root in the host namespace; it stops with the lab."""
        stats = self.config.stats
        self.agent = self.lab.spawn("host", [sys.executable, "-m", "nettrust_core.cli", "-c",
                                             str(self.config_path), "agent"],
                                    log_name=f"{self.name}-agent",
                                    env={"PYTHONPATH": str(self.code_dir)})
        deadline = time.monotonic() + timeout
        while not (os.path.exists(stats.dnstap_socket) and os.path.exists(stats.report_socket)):
            if not self.agent.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"nettrust agent did not start:\n{self.agent.log_tail()}")
            time.sleep(0.02)
        return self.agent

    def stop_agent(self) -> int | None:
        agent, self.agent = getattr(self, "agent", None), None
        return agent.stop() if agent is not None else None

    def grants(self) -> dict[str, dict]:
        """address → {name, expires_in, timeout}, from the kernel via ``nettrust hosts --json``."""
        out = self.nettrust("hosts", "--json").stdout
        return {g["address"]: g for g in json.loads(out) if "client" not in g and "struck" not in g}


def stats_section(lab, **keys) -> str:
    """A ``[stats]`` section with the database and sockets under the lab's work dir."""
    base = Path(lab.work_dir) / "stats"
    base.mkdir(mode=0o755, exist_ok=True)
    values = {"enabled": True, "database": str(base / "stats.db"),
              "report_socket": str(base / "agent.sock"),
              "dnstap_socket": str(base / "dnstap.sock"), "flush_interval": "200ms", **keys}
    return "[stats]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def _stage_code(target: Path) -> Path:
    """Copy the module and the core where the unbound user can read them (the checkout may not be)."""
    if not (target / "nettrust_core").exists():
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        for package in (nettrust_core, unbound_module):
            src = Path(package.__file__).parent
            shutil.copytree(src, target / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        for root, _dirs, files in os.walk(target):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
    return target

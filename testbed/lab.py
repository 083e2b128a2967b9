"""A disposable two-namespace network with authoritative DNS, for integration tests and the sandbox.

::

    host ns  (nt3fa9-host)                          internet ns  (nt3fa9-net)
    Unbound on 127.0.0.1 / ::1        veth          NSD on 203.0.113.53 / 2001:db8:100::53
    192.0.2.2  2001:db8:ffff::2  <------------>  192.0.2.1  2001:db8:ffff::1
    default routes via the net ns                 AnyIP: 198.18.0.0/15, 198.51.100.0/24,
                                                  203.0.113.0/24, 2001:db8:{100,118,119}::/48
                                                  HTTP :80 and TCP echo :7 on all of them

``with Lab() as lab:`` builds it (fresh DNSSEC keys, signed zones, NSD, servers) and tears it
down again on exit, on exceptions, Ctrl-C, SIGTERM/SIGHUP and interpreter exit.  Nothing in the
root namespace changes except ``/run/nettrust-lab/<token>/``, ``/run/netns/<name>`` and, after
``set_resolver``, ``/etc/netns/<host ns>/``; all of them are removed again.  ``cleanup_stale()``
removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import netns
from . import zones as zonedata
from .errors import LabCommandError, LabError, find_tool, missing_tool_message, require_tool
from .process import LabProcess, _signal_group, command_env, privilege_argv
from .teardown import (ETC_NETNS, LAB_ROOT, cleanup_stale, kill_netns_pids, register,
                       signals_deferred, unregister, write_owner)

__all__ = ["Lab", "LAB_ROOT", "cleanup_stale", "missing_prerequisites"]

SERVERS_SCRIPT = Path(__file__).with_name("servers.py")
SYSTEM_PYTHON = "/usr/bin/python3"
START_TOOLS = ("ip", "sysctl", "setpriv", "nsd", "nsd-checkconf", "ldns-keygen", "ldns-signzone",
               "ldns-verify-zone", SYSTEM_PYTHON)

_READY_TIMEOUT = 10.0

# Settings start_unbound appends so the process stays in the foreground, logs to its LabProcess
# log and does not try to drop privileges the lab has already dropped.
_UNBOUND_FORCED = """
# Appended by testbed.Lab.start_unbound:
server:
    username: ""
    chroot: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
"""


def missing_prerequisites(tools: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Why a lab cannot start here (empty list: it can); ``tools`` adds tools a caller needs.

    Each entry is a sentence a user can act on, e.g. the apt package of a missing tool.
    """
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network namespaces, veth pairs, port 53): run as root")
    if not Path("/proc/self/ns/net").exists():
        problems.append("this kernel has no network namespaces (CONFIG_NET_NS)")
    for tool in dict.fromkeys((*START_TOOLS, *tools)):
        if find_tool(tool) is None:
            problems.append(missing_tool_message(tool))
    if "unbound" in tools:
        try:
            pwd.getpwnam("unbound")
        except KeyError:
            problems.append("user 'unbound' does not exist (apt-get install unbound creates it)")
    return problems


class Lab:
    """Two network namespaces joined by a veth pair, with NSD, HTTP and echo servers in one.

    Use as a context manager, or call ``start()`` and ``close()``.  The names (``token``,
    ``host_ns``, ``work_dir``, …) are set at construction and final once ``start()`` returns
    (``start()`` picks another token if the first is taken); the namespaces exist between
    ``start()`` and ``close()``.
    """

    # Link between the namespaces (RFC 5737 / RFC 3849 documentation ranges).
    host_v4 = "192.0.2.2"
    net_v4 = "192.0.2.1"
    host_v6 = "2001:db8:ffff::2"
    net_v6 = "2001:db8:ffff::1"
    link_v4 = "192.0.2.0/24"
    link_v6 = "2001:db8:ffff::/64"
    # Prefixes the internet namespace answers on in full (AnyIP local routes).
    anyip_v4 = ("198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24")
    anyip_v6 = ("2001:db8:100::/48", "2001:db8:118::/48", "2001:db8:119::/48")
    nsd_v4 = zonedata.NSD_V4
    nsd_v6 = zonedata.NSD_V6
    upstream_addresses = (zonedata.NSD_V4, zonedata.NSD_V6)
    http_port = 80
    echo_port = 7
    zones = tuple(zonedata.ZONES)
    signed_zones = zonedata.SIGNED_ZONES

    def __init__(self, *, extra_records: dict[str, list[str]] | None = None,
                 extra_zones: dict[str, list[str]] | None = None,
                 work_root: str | os.PathLike = LAB_ROOT) -> None:
        self.extra_records = zonedata.normalise_extra_records(extra_records)
        self.extra_zones = zonedata.normalise_extra_zones(extra_zones)
        self.work_root = Path(work_root)
        self._set_token(_new_token())
        self.processes: list[LabProcess] = []
        self.nsd: LabProcess | None = None
        self.servers: LabProcess | None = None
        self.unbound: LabProcess | None = None       # the one last started
        self.unbounds: dict[str, LabProcess] = {}    # by name: several may share the port
        self.zone_files: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self._state = "new"
        self._owner_pid = os.getpid()
        self._ns_created: list[str] = []
        self._ns_fds: dict[str, int] = {}
        self._etc_created: list[Path] = []
        self._work_dir_created = False

    def _set_token(self, token: str) -> None:
        self.token = token
        self.host_ns = f"{token}-host"
        self.net_ns = f"{token}-net"
        self.host_if = f"{token}-h"      # the veth end in the host ns (<= 15 chars)
        self.net_if = f"{token}-n"       # its peer in the internet ns
        self.work_dir = self.work_root / token
        self.trust_anchor_file = self.work_dir / "anchors" / "trust-anchors.ds"
        self.root_hints_file = self.work_dir / "zones" / "root.hints"
        self.resolv_conf = ETC_NETNS / self.host_ns / "resolv.conf"

    def __repr__(self) -> str:
        return f"<Lab {self.token} {self._state} host={self.host_ns} net={self.net_ns}>"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except LabError as err:
            if exc is None:
                raise
            print(f"testbed.Lab: cleanup after {exc_type.__name__} also failed: {err}", file=sys.stderr)

    @property
    def running(self) -> bool:
        return self._state == "running"

    def start(self) -> Lab:
        """Build everything; LabError (after cleaning up) if any step fails."""
        if self._state != "new":
            raise LabError(f"lab {self.token} was already started; create a new Lab()")
        problems = missing_prerequisites()
        if problems:
            raise LabError("cannot start the lab:\n  - " + "\n  - ".join(problems))
        self._state = "starting"
        register(self)
        t0 = last = time.monotonic()

        def lap(name: str) -> None:
            nonlocal last
            now = time.monotonic()
            self.timings[name] = now - last
            last = now

        try:
            self._make_work_dir()
            lap("work_dir")
            self.zone_files = zonedata.build_zones(self.work_dir / "zones", self.work_dir / "keys",
                                                self.trust_anchor_file, self.extra_records,
                                                self.extra_zones)
            lap("zones")
            self._make_topology()
            lap("topology")
            self._start_services()
            lap("services")
        except BaseException:
            try:
                self.close()
            except LabError as err:
                print(f"testbed.Lab: cleanup after a failed start also failed: {err}", file=sys.stderr)
            raise
        self.timings["total"] = time.monotonic() - t0
        self._state = "running"
        return self

    def close(self) -> None:
        """Stop every process, delete both namespaces, /etc/netns dirs and the work dir.

        Idempotent; safe after a partial start.  Signals arriving meanwhile are handled after it.
        """
        if self._state in ("new", "closed") or os.getpid() != self._owner_pid:
            self._state = "closed" if self._state == "new" else self._state
            return
        errors: list[str] = []
        with signals_deferred():
            self._state = "closing"
            self._stop_processes(errors)
            for ns in reversed(self._ns_created):
                self._destroy_ns(ns, errors)
            for path in reversed(self._etc_created):
                with contextlib.suppress(FileNotFoundError):
                    if path == ETC_NETNS:
                        with contextlib.suppress(OSError):
                            path.rmdir()   # only if empty: other labs may use it
                    else:
                        shutil.rmtree(path)
            if self._work_dir_created:
                shutil.rmtree(self.work_dir, ignore_errors=True)
                if self.work_dir.exists():
                    errors.append(f"could not remove {self.work_dir}")
            self._state = "closed"
            unregister(self)
        if errors:
            raise LabError(f"lab {self.token} cleanup incomplete:\n  - " + "\n  - ".join(errors))

    def _stop_processes(self, errors: list[str]) -> None:
        for proc in self.processes:
            proc.kill(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for proc in self.processes:
            while proc.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.stop(timeout=0)            # SIGKILLs the group if still there; reaps it
        for proc in self.unbounds.values():
            if proc.alive():
                errors.append(f"Unbound pid {proc.pid} survived SIGKILL")

    def _destroy_ns(self, ns: str, errors: list[str]) -> None:
        fd = self._ns_fds.pop(ns, None)
        inode = os.fstat(fd).st_ino if fd is not None else None
        if inode is not None:
            # The open fd pins the namespace, so this inode cannot be reused meanwhile.
            kill_netns_pids(inode, errors, ns)
        proc = subprocess.run([require_tool("ip"), "netns", "delete", ns], capture_output=True,
                              text=True, env=command_env(None, None))
        if proc.returncode != 0 and netns.netns_path(ns).exists():
            errors.append(f"ip netns delete {ns}: {proc.stderr.strip()}")
        if fd is not None:
            os.close(fd)

    # ------------------------------------------------------------------ building

    def _make_work_dir(self) -> None:
        self.work_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        for parent in [self.work_root, *self.work_root.parents]:
            if not os.stat(parent).st_mode & 0o001:
                raise LabError(f"{parent} is not traversable by other users, so the 'unbound' user "
                               f"cannot reach the lab's files; use a work_root under /run or /tmp "
                               f"(every parent mode 0755)")
        for _ in range(50):
            if not any(netns.netns_path(ns).exists() for ns in (self.host_ns, self.net_ns)):
                try:
                    os.mkdir(self.work_dir, 0o755)
                    break
                except FileExistsError:
                    pass
            self._set_token(_new_token())
        else:
            raise LabError(f"no free lab name found under {self.work_root}; run cleanup_stale()")
        self._work_dir_created = True
        os.chmod(self.work_dir, 0o755)
        write_owner(self.work_dir)
        for sub, mode in (("zones", 0o755), ("keys", 0o700), ("anchors", 0o755), ("nsd", 0o755),
                          ("unbound", 0o755), ("logs", 0o755)):
            (self.work_dir / sub).mkdir(mode=mode)
            os.chmod(self.work_dir / sub, mode)

    def _ip(self, *args: str, input: str | None = None) -> None:  # noqa: A002
        argv = [require_tool("ip"), *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              env=command_env(None, None), timeout=30)
        if proc.returncode != 0:
            raise LabCommandError(f"{' '.join(argv)} failed: {proc.stderr.strip()}", argv=argv,
                                  returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)

    def _make_topology(self) -> None:
        for ns in (self.host_ns, self.net_ns):
            self._ip("netns", "add", ns)
            self._ns_created.append(ns)
            self._ns_fds[ns] = os.open(netns.netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
            # Namespace-local sysctl: addresses are usable at once (no DAD, link-local included).
            self.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                          "net.ipv6.conf.default.accept_dad=0"])
        # Both ends are created inside their namespaces: nothing appears in the root namespace.
        self._ip("link", "add", "name", self.host_if, "netns", self.host_ns, "type", "veth",
                 "peer", "name", self.net_if, "netns", self.net_ns)
        host = [
            "link set lo up",
            f"link set {self.host_if} up",
            f"addr add {self.host_v4}/24 dev {self.host_if}",
            f"addr add {self.host_v6}/64 dev {self.host_if} nodad",
            f"route add default via {self.net_v4}",
            f"route add default via {self.net_v6}",
        ]
        net = [
            "link set lo up",
            f"link set {self.net_if} up",
            f"addr add {self.net_v4}/24 dev {self.net_if}",
            f"addr add {self.net_v6}/64 dev {self.net_if} nodad",
            # Real addresses: IPv6 bind() refuses addresses that are only AnyIP-routed.
            f"addr add {self.nsd_v4}/32 dev lo",
            f"addr add {self.nsd_v6}/128 dev lo nodad",
            *(f"route add local {prefix} dev lo" for prefix in self.anyip_v4),
            *(f"route add local {prefix} dev lo" for prefix in self.anyip_v6),
        ]
        self._ip("-n", self.host_ns, "-batch", "-", input="\n".join(host) + "\n")
        self._ip("-n", self.net_ns, "-batch", "-", input="\n".join(net) + "\n")

    def _start_services(self) -> None:
        nsd_dir = self.work_dir / "nsd"
        conf = nsd_dir / "nsd.conf"
        conf.write_text(zonedata.nsd_conf(nsd_dir, self.zone_files))
        check = subprocess.run([require_tool("nsd-checkconf"), str(conf)], capture_output=True,
                               text=True, env=command_env(None, None))
        if check.returncode != 0:
            raise LabError(f"nsd-checkconf rejected {conf}: {(check.stderr or check.stdout).strip()}")
        self.nsd = self.spawn(self.net_ns, ["nsd", "-d", "-c", str(conf)], log_name="nsd")
        self.servers = self.spawn(self.net_ns, [SYSTEM_PYTHON, "-I", "-u", str(SERVERS_SCRIPT),
                                                "--http-port", str(self.http_port),
                                                "--echo-port", str(self.echo_port)],
                                  log_name="servers")
        deadline = time.monotonic() + _READY_TIMEOUT
        if not self.servers.wait_for_log("READY", timeout=_READY_TIMEOUT):
            raise LabError(f"the HTTP/echo servers did not start (exit {self.servers.returncode}); "
                           f"log {self.servers.log_path}:\n{self.servers.log_tail()}")
        for server in self.upstream_addresses:
            # Probed from the host ns: proves NSD, the veth and both default routes at once.
            while netns.dns_probe(self.host_ns, server, "fw.test.", 6) != 0:
                if not self.nsd.alive():
                    raise LabError(f"NSD exited with {self.nsd.returncode}; log "
                                   f"{self.nsd.log_path}:\n{self.nsd.log_tail()}")
                if time.monotonic() > deadline:
                    raise LabError(f"NSD did not answer fw.test SOA on {server} from {self.host_ns} "
                                   f"within {_READY_TIMEOUT:.0f} s; log:\n{self.nsd.log_tail()}")
                time.sleep(0.02)

    # ------------------------------------------------------------------ commands

    def _ns(self, ns: str) -> str:
        names = {"host": self.host_ns, "net": self.net_ns, self.host_ns: self.host_ns,
                 self.net_ns: self.net_ns}
        if ns not in names:
            raise LabError(f"unknown namespace {ns!r}; use 'host', 'net', {self.host_ns!r} or {self.net_ns!r}")
        return names[ns]

    def _require(self, *states: str) -> None:
        if self._state not in states:
            raise LabError(f"lab {self.token} is {self._state}; this needs a started lab")

    def command(self, ns: str, argv: list[str], *, user: str | int | None = None,
                caps: tuple[str, ...] = ()) -> list[str]:
        """The full argv that runs ``argv`` in ``ns`` as ``user`` holding only ``caps``."""
        if not argv:
            raise LabError("empty command")
        argv = [str(a) for a in argv]
        program = argv[0] if "/" in argv[0] else find_tool(argv[0])
        if program is None or not os.path.exists(program):
            raise LabError(missing_tool_message(argv[0]))
        return [require_tool("ip"), "netns", "exec", self._ns(ns), *privilege_argv(user, caps),
                program, *argv[1:]]

    def run(self, ns: str, argv: list[str], *, user: str | int | None = None, check: bool = True,
            timeout: float = 30, env: dict[str, str | None] | None = None,
            caps: tuple[str, ...] = (), input: str | None = None) -> subprocess.CompletedProcess:  # noqa: A002
        """Run a command in ``ns`` ('host', 'net' or the full name) and capture its output.

        ``check``: LabCommandError on a non-zero exit.  A timeout always raises LabCommandError
        (after killing the command's process group).
        """
        self._require("starting", "running")
        full = self.command(ns, argv, user=user, caps=caps)
        popen = subprocess.Popen(full, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 errors="replace", env=command_env(user, env), start_new_session=True)
        try:
            out, err = popen.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(popen.pid, signal.SIGKILL)
            out, err = popen.communicate()
            raise LabCommandError(f"timed out after {timeout} s in {ns}: {' '.join(argv)}\n{err.strip()}",
                                  argv=full, returncode=None, stdout=out, stderr=err) from None
        except BaseException:
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        result = subprocess.CompletedProcess(full, popen.returncode, out, err)
        if check and popen.returncode != 0:
            raise LabCommandError(f"exit {popen.returncode} in {ns}: {' '.join(argv)}\n"
                                  f"{(err or out).strip()[-2000:]}",
                                  argv=full, returncode=popen.returncode, stdout=out, stderr=err)
        return result

    def spawn(self, ns: str, argv: list[str], *, log_name: str, user: str | int | None = None,
              caps: tuple[str, ...] = (), env: dict[str, str | None] | None = None) -> LabProcess:
        """Start a tracked background process in ``ns``; stdout and stderr go to its log file."""
        self._require("starting", "running")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", log_name):
            raise LabError(f"log_name {log_name!r}: use letters, digits, '_', '.', '-'")
        full = self.command(ns, argv, user=user, caps=caps)
        logs = self.work_dir / "logs"
        log_path = logs / f"{log_name}.log"
        n = 1
        while log_path.exists():
            n += 1
            log_path = logs / f"{log_name}-{n}.log"
        with open(log_path, "ab") as log:
            os.chmod(log_path, 0o644)
            popen = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=command_env(user, env), start_new_session=True)
        proc = LabProcess(popen, name=log_name, ns=self._ns(ns), argv=full, log_path=log_path)
        self.processes.append(proc)
        return proc

    def socket(self, ns: str, family: int = socket.AF_INET,
               type: int = socket.SOCK_STREAM) -> socket.socket:  # noqa: A002
        """A socket of this process that lives in ``ns`` (no subprocess needed)."""
        self._require("starting", "running")
        return netns.socket_in_netns(self._ns(ns), family, type)

    def connect(self, ns: str, address: str, port: int, *, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from ``ns`` to ``address``:``port`` (e.g. the echo server)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = self.socket(ns, family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def set_resolver(self, nameservers: list[str], *, search: list[str] | tuple[str, ...] = (),
                     options: list[str] | tuple[str, ...] = ()) -> Path:
        """Write ``/etc/netns/<host ns>/resolv.conf``: later ``ip netns exec <host ns>`` clients
        (getaddrinfo, curl, ``lab.run('host', …)``) resolve through these servers."""
        self._require("starting", "running")
        lines = []
        for server in nameservers:
            try:
                lines.append(f"nameserver {ipaddress.ip_address(server)}")
            except ValueError:
                raise LabError(f"set_resolver: {server!r} is not an IP address") from None
        if search:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        directory = self.resolv_conf.parent
        for _ in range(3):  # another lab may rmdir an empty /etc/netns between our two mkdirs
            try:
                if not ETC_NETNS.exists():
                    ETC_NETNS.mkdir(mode=0o755)
                    self._etc_created.insert(0, ETC_NETNS)
                if not directory.exists():
                    directory.mkdir(mode=0o755)
                    self._etc_created.append(directory)
                break
            except FileExistsError:
                continue
            except FileNotFoundError:
                continue
        tmp = directory / ".resolv.conf.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.resolv_conf)
        return self.resolv_conf

    # ------------------------------------------------------------------ Unbound

    def unbound_zone_conf(self, mode: str = "stub") -> str:
        """The unbound.conf lines that make a resolver in the host ns use this lab's zones.

        ``mode="stub"``: recursion as in production: root hints for the lab's root zone plus a
        stub-zone per lab zone.  ``mode="forward"``: ``forward-zone: "."`` to NSD, which answers
        RD queries for every lab zone authoritatively (it serves the lab root too, so names outside
        the lab get NXDOMAIN).  Both validate ``sec.test``/``bad.test`` against the lab's fresh
        trust anchors and treat ``fw.test`` as insecure; nothing else (no ``harden-*`` change,
        no ``do-not-query-localhost``: NSD is not on a loopback address) is needed.
        """
        if mode not in ("stub", "forward"):
            raise LabError(f"unbound_zone_conf: mode must be 'stub' or 'forward', not {mode!r}")
        lines = [
            "server:",
            # Unbound's built-in local zones would answer NXDOMAIN for these.
            '    local-zone: "test." nodefault',
            '    local-zone: "100.51.198.in-addr.arpa." nodefault',
            # Unbound's built-in zone for the IPv6 documentation prefix would answer NXDOMAIN.
            '    local-zone: "8.b.d.0.1.0.0.2.ip6.arpa." nodefault',
            '    domain-insecure: "fw.test"',
        f'    trust-anchor-file: "{self.trust_anchor_file}"',
        ]
        if mode == "stub":
            # The lab root (on NSD): names outside the lab zones get NXDOMAIN at once instead
            # of waiting on unreachable root servers.
            lines.append(f'    root-hints: "{self.root_hints_file}"')
            for zone in ("test", "fw.test", "sec.test", "bad.test", *zonedata.REVERSE_ZONES,
                         *self.extra_zones):
                lines += ["stub-zone:", f'    name: "{zone}"',
                          *(f"    stub-addr: {a}" for a in self.upstream_addresses)]
        else:
            lines += ["forward-zone:", '    name: "."',
                      *(f"    forward-addr: {a}" for a in self.upstream_addresses)]
        return "\n".join(lines) + "\n"

    def start_unbound(self, conf_text: str, *, user: str | int | None = "unbound",
                      caps: tuple[str, ...] = ("net_admin", "net_bind_service"),
                      env: dict[str, str | None] | None = None,
                      timeout: float = _READY_TIMEOUT, name: str = "unbound") -> LabProcess:
        """Run ``unbound -d`` in the host ns with ``conf_text`` (plus the settings it needs to run
        in the foreground as ``user``); return once it answers on 127.0.0.1:53.

        Several may run at once under different ``name`` s (conf ``unbound/<name>.conf``, log
        ``<name>.log``), e.g. processes sharing the port with ``so-reuseport``; a later one is
        ready when it logs "start of service", since another may answer the probe.
        """
        self._require("running")
        running = self.unbounds.get(name)
        if running is not None and running.alive():
            raise LabError(f"Unbound {name!r} is already running (pid {running.pid}); call stop_unbound() first")
        others = any(p.alive() for p in self.unbounds.values())
        require_tool("unbound")
        conf = self.work_dir / "unbound" / f"{name}.conf"
        conf.write_text(conf_text.rstrip("\n") + "\n" + _UNBOUND_FORCED)
        os.chmod(conf, 0o644)
        proc = self.spawn(self.host_ns, ["unbound", "-d", "-c", str(conf)], log_name=name,
                          user=user, caps=caps, env=env)
        self.unbound = self.unbounds[name] = proc
        deadline = time.monotonic() + timeout
        while True:
            if not proc.alive():
                raise LabError(f"Unbound exited with {proc.returncode} (conf {conf}); log:\n{proc.log_tail()}")
            if others:
                if "start of service" in proc.log_text():
                    return proc
            elif netns.dns_probe(self.host_ns, "127.0.0.1", "localhost.", 1, rd=True, timeout=0.2) is not None:
                return proc
            if time.monotonic() > deadline:
                proc.stop()
                raise LabError(f"Unbound did not answer on 127.0.0.1:53 within {timeout:.0f} s "
                               f"(does the conf set 'interface: 127.0.0.1'?); log:\n{proc.log_tail()}")
            time.sleep(0.02)

    def stop_unbound(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (then SIGKILL) every running Unbound; the exit status of the one last
        started, or None if none ran."""
        if self.unbound is None:
            return None
        for proc in self.unbounds.values():
            proc.kill(signal.SIGTERM)       # all at once: they stop in parallel
        for proc in self.unbounds.values():
            if proc is not self.unbound:
                proc.stop(timeout)
        return self.unbound.stop(timeout)

    def kill_unbound(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every Unbound (e.g. SIGKILL to test fail-closed behaviour)."""
        if self.unbound is None:
            raise LabError("no Unbound was started in this lab")
        for proc in self.unbounds.values():
            proc.kill(sig)


def _new_token() -> str:
    return "nt" + secrets.token_hex(2)

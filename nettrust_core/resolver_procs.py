"""Which Unbound processes run the NetTrust module here, and stopping them (for ``nettrust remove``).

A resolver running the module re-creates a missing ruleset on its next answer (self-repair), so
removing the ruleset under it is undone within seconds.  The module holds netfilter netlink
sockets for as long as it runs; plain Unbound holds none.  So: a process named ``unbound``, in
this network namespace, with a NETLINK_NETFILTER socket open.  Read from /proc; nothing here
writes unless :func:`stop_resolvers` is called.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from .errors import NetTrustError

NETLINK_NETFILTER = 12


@dataclass(frozen=True)
class Resolver:
    pid: int
    unit: str | None        # the systemd unit it runs under, when systemd runs

    def __str__(self) -> str:
        return f"Unbound (pid {self.pid}{', ' + self.unit if self.unit else ''})"

    def stop_command(self) -> str:
        return f"systemctl stop {self.unit}" if self.unit else f"kill {self.pid}"


def _netfilter_socket_inodes(proc: str) -> set[str]:
    """Inodes of the netfilter netlink sockets of this network namespace."""
    out: set[str] = set()
    try:
        with open(f"{proc}/self/net/netlink") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) >= 10 and fields[1] == str(NETLINK_NETFILTER):
                    out.add(fields[9])
    except OSError:
        pass
    return out


def _unit_of(proc: str, pid: int, systemd: bool) -> str | None:
    if not systemd:
        return None
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            for line in f:
                last = line.strip().rsplit("/", 1)[-1]
                if last.endswith(".service"):
                    return last
    except OSError:
        pass
    return None


def module_resolvers(proc: str = "/proc", systemd: bool | None = None) -> list[Resolver]:
    """Unbound processes in this network namespace that hold a netfilter netlink socket.

    ``proc`` and ``systemd`` (default: whether /run/systemd/system exists) let tests pass a
    fake /proc tree.
    """
    if systemd is None:
        systemd = os.path.isdir("/run/systemd/system")
    inodes = _netfilter_socket_inodes(proc)
    if not inodes:
        return []
    try:
        own_ns = os.readlink(f"{proc}/self/ns/net")
    except OSError:
        return []
    found: list[Resolver] = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"{proc}/{pid}/comm") as f:
                if f.read().strip() != "unbound":
                    continue
            if os.readlink(f"{proc}/{pid}/ns/net") != own_ns:
                continue
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                found.append(Resolver(pid, _unit_of(proc, pid, systemd)))
                break
    return found


def stop_resolvers(resolvers: list[Resolver], timeout: float = 15.0) -> list[str]:
    """Stop each resolver (its systemd unit, else SIGTERM) and wait for it to exit; lines to print.

    Raises NetTrustError naming the pid when one is still running after ``timeout`` seconds.
    """
    lines = []
    for r in resolvers:
        if r.unit:
            done = subprocess.run(["systemctl", "stop", r.unit], check=False)
            if done.returncode:
                raise NetTrustError(f"systemctl stop {r.unit} failed (exit {done.returncode})")
        else:
            try:
                os.kill(r.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while os.path.exists(f"/proc/{r.pid}") and _alive(r.pid):
            if time.monotonic() > deadline:
                raise NetTrustError(f"{r} did not stop within {timeout:.0f} s")
            time.sleep(0.05)
        lines.append(f"stopped {r} ({r.stop_command()})")
    return lines


def _alive(pid: int) -> bool:
    """False for a zombie (exited, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

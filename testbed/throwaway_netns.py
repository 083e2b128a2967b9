"""Throwaway network namespaces for firewall tests and benchmarks (root only).

(Was tests/integration/netns_util.py, which re-exports it; bench/ imports it from here.)

``NetNS()`` creates ``/run/netns/<prefix>-<random>`` and deletes it on exit (use it as a context
manager, so it goes even when a test fails).  Inside it, without ever touching the root
namespace's firewall:

* ``ns.run(func, *args)`` forks a child that enters the namespace (``setns``), calls ``func`` and
  sends back its (picklable) result, or its exception as :class:`ChildError`;
* ``ns.sh("nft", "-j", "list", "ruleset")`` runs a command via ``ip netns exec``;
* ``ns.python(code)`` runs Python code in a fresh interpreter there (optionally through a prefix
  such as ``setpriv …``), with this repository importable;
* ``ns.socket(...)`` makes a socket that lives in the namespace (created on a helper thread that
  entered it), for clients and servers driven from the test process itself.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
import traceback

from .netns import setns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"          # the interpreter Unbound embeds


class ChildError(Exception):
    """The function run inside the namespace raised; carries the child's traceback text."""


def _setns(path: str) -> None:
    setns(path)
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
        raise OSError(f"setns({path}) did not take effect")


class NetNS:
    """A uniquely named network namespace; ``lo`` is brought up."""

    def __init__(self, prefix: str = "ntfw") -> None:
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        self.path = f"/run/netns/{self.name}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.sh("ip", "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def __enter__(self) -> "NetNS":
        return self

    def __exit__(self, *exc) -> None:
        self.delete()

    def delete(self) -> None:
        """Remove the namespace (its interfaces, sockets' routes and nftables go with it)."""
        if os.path.exists(self.path):
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    # -- running things inside -------------------------------------------------------------
    def sh(self, *argv: str, check: bool = True, input: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command in the namespace; stdout/stderr captured as text."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check, text=True,
                              capture_output=True, input=input, timeout=timeout)

    def python(self, code: str, *, prefix: tuple[str, ...] = (), check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``code`` with /usr/bin/python3 in the namespace (after ``prefix``, e.g. setpriv).

        ``-B``: no bytecode written; the repository is put on ``PYTHONPATH``.
        """
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO, "LANG": "C.UTF-8"}
        return subprocess.run(["ip", "netns", "exec", self.name, *prefix, PYTHON, "-B", "-c", code],
                              check=check, text=True, capture_output=True, env=env, cwd="/",
                              timeout=timeout)

    def run(self, func, *args, timeout: float = 120, **kwargs):
        """``func(*args, **kwargs)`` in a forked child inside the namespace; its result."""
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:                                    # child: never returns
            status = 0
            try:
                os.close(rfd)
                _setns(self.path)
                try:
                    result = (True, func(*args, **kwargs))
                except BaseException as exc:            # noqa: BLE001 - shipped to the parent
                    result = (False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                try:
                    data = pickle.dumps(result)
                except Exception as exc:                # noqa: BLE001
                    data = pickle.dumps((False, f"unpicklable result: {exc!r}"))
                with os.fdopen(wfd, "wb") as out:
                    out.write(data)
            except BaseException:                       # noqa: BLE001
                traceback.print_exc()
                status = 1
            finally:
                os._exit(status)
        os.close(wfd)
        chunks, deadline = [], time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([rfd], [], [], left)[0]:
                    os.kill(pid, signal.SIGKILL)
                    raise ChildError(f"{getattr(func, '__name__', func)} timed out after {timeout}s")
                chunk = os.read(rfd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(rfd)
            os.waitpid(pid, 0)
        if not chunks:
            raise ChildError(f"{getattr(func, '__name__', func)}: the child died without an answer")
        ok, value = pickle.loads(b"".join(chunks))
        if not ok:
            raise ChildError(value)
        return value

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket created inside the namespace (it stays there; the caller's thread does not)."""
        box: list = []

        def make() -> None:
            try:
                _setns(self.path)                       # this helper thread only
                box.append(socket.socket(family, type))
            except BaseException as exc:                # noqa: BLE001
                box.append(exc)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


def veth_pair(a: NetNS, b: NetNS, a_addrs: list[str], b_addrs: list[str]) -> None:
    """Link two namespaces with a veth pair (``v0`` in ``a``, ``v1`` in ``b``) and address it.

    Duplicate address detection is off in both namespaces (no tentative addresses, link-local
    ones included), so IPv6 works at once.
    """
    for ns in (a, b):
        for scope in ("all", "default"):
            ns.sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")
    a.sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b.name)
    for ns, dev, addrs in ((a, "v0", a_addrs), (b, "v1", b_addrs)):
        for addr in addrs:
            ns.sh("ip", "addr", "add", addr, "dev", dev)
        ns.sh("ip", "link", "set", dev, "up")
    # the carrier comes up a moment later (link watch), and IPv6 waits for it
    deadline = time.monotonic() + 10
    for ns, dev in ((a, "v0"), (b, "v1")):
        while json.loads(ns.sh("ip", "-j", "link", "show", "dev", dev).stdout)[0].get("operstate") != "UP":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dev} in {ns.name} has no carrier")
            time.sleep(0.02)


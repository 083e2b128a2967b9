"""One other network namespace: entering it (setns in a short-lived thread), finding namespaces
by name, path or glob, and an nftables backend whose netlink sockets live there (a socket keeps
the namespace it was created in, so the answer path writes without entering it again).
Used by :mod:`.namespaces`.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import glob
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..netlink import nftables as nl
from .base import GrantedElement, OnBatch, RulesetSpec
from .nftables import NftablesBackend


CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
T = TypeVar("T")

_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        hint = (" (entering another network namespace needs CAP_SYS_ADMIN: give Unbound that "
                "capability for firewall.namespaces)" if err == errno.EPERM else "")
        raise OSError(err, f"setns: {os.strerror(err)}{hint}")


def run_in_namespace(fd: int, fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread that entered the network namespace ``fd`` (then ended).

    The calling thread's namespace never changes; what ``fn`` creates there (sockets, a
    libnftables context, a child process) belongs to the namespace entered.
    """
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            _setns(fd)
            box["result"] = fn()
        except BaseException as exc:          # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body, name="nettrust-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def namespace_paths(entries: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, path)`` of every namespace the configured entries match now, in order.

    A bare name or glob is looked up under :data:`NETNS_DIR` (its name: the basename); an
    absolute path or glob is used as given (its name: the path).
    """
    out: dict[str, str] = {}
    for entry in entries:
        if entry.startswith("/"):
            hits = sorted(glob.glob(entry)) if glob.has_magic(entry) else [entry]
            for path in hits:
                name = os.path.basename(path) if os.path.dirname(path) == NETNS_DIR else path
                out.setdefault(path, name)
        else:
            try:
                names = sorted(os.listdir(NETNS_DIR))
            except OSError:
                names = []
            for name in names:
                if fnmatch.fnmatchcase(name, entry):
                    out.setdefault(os.path.join(NETNS_DIR, name), name)
    return [(name, path) for path, name in out.items()]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class NamespaceNftables(NftablesBackend):
    """The nftables backend of one other namespace: its sockets and nft runs are made there."""

    def __init__(self, spec: RulesetSpec, fd: int, *, instance: int = 0) -> None:
        super().__init__(spec, instance=instance)
        self.fd = fd

    def _socket(self, which: str) -> nl.NftablesSocket:
        sock = getattr(self, which)
        if sock is not None:
            return sock
        return run_in_namespace(self.fd, lambda: NftablesBackend._socket(self, which))

    def open(self) -> None:
        self._socket("_hot")
        self._socket("_ctl")

    def ensure(self) -> None:
        def inside() -> None:
            self._nft = None        # a libnftables context made (and used) in the namespace
            try:
                NftablesBackend.ensure(self)
            finally:
                self._nft = None
        run_in_namespace(self.fd, inside)

    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        return run_in_namespace(self.fd, lambda: NftablesBackend.list_grants(
            self, on_batch, own_only=own_only))

    def close(self) -> None:
        super().close()
        try:
            os.close(self.fd)
        except OSError:
            pass

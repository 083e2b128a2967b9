"""Loading NetTrust's eBPF object with libbpf (``libbpf.so.1`` through ctypes).

libbpf does what is tedious to redo: ELF and BTF parsing, map creation and relocation, pinning
and *reusing* pinned maps (a restart adopts the grants in them), the conntrack kfunc's address.
Attaching is plain ``BPF_LINK_CREATE`` (:mod:`.ebpf_sys`): pinned links keep enforcing when the
resolver dies (fail closed) and ``remove`` detaches them.

Control plane only (ensure/remove): never on the answer path.  The compiled objects ship as
package data (``nettrust_core/firewall/bpf/*.bpf.o``, built by ``bpf/build.sh``).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import FirewallError

BPF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf")
#: The object with the conntrack kfunc, and the one for kernels without it (before 5.18).
OBJECTS = ("nettrust.bpf.o", "nettrust-noct.bpf.o")
#: Maps whose size ``ebpf.map_size`` sets (the grant maps); the others have fixed sizes.
GRANT_MAPS = ("allow4", "allow6", "pair4", "pair6")
MAPS = (*GRANT_MAPS, "static4", "static6", "local4", "local6", "conf", "stats")
PROGRAMS = ("nt_connect4", "nt_connect6", "nt_sendmsg4", "nt_sendmsg6", "nt_xdp")

_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    """``libbpf.so.1`` with the prototypes used here (raises OSError when it is missing)."""
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, res, args in (
            ("bpf_object__open_file", vp, [cp, vp]), ("bpf_object__load", ci, [vp]),
            ("bpf_object__close", None, [vp]), ("bpf_object__find_map_by_name", vp, [vp, cp]),
            ("bpf_object__find_program_by_name", vp, [vp, cp]), ("bpf_program__fd", ci, [vp]),
            ("bpf_map__fd", ci, [vp]), ("bpf_map__set_pin_path", ci, [vp, cp]),
            ("bpf_map__set_max_entries", ci, [vp, ctypes.c_uint]),
            ("libbpf_set_print", vp, [vp])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    lib.libbpf_set_print(None)      # libbpf's own stderr chatter: our errors say what failed
    _lib = lib
    return lib


class LoadError(FirewallError):
    """The object could not be opened or the kernel refused it."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message, errno=err)


@dataclass
class Loaded:
    """Program fds of one load (maps are pinned; the caller closes with :meth:`close`)."""

    obj: int
    programs: Mapping[str, int]
    conntrack: bool

    def close(self) -> None:
        if self.obj:
            libbpf().bpf_object__close(self.obj)
            self.obj = 0


def load(pin_dir: str, map_size: int, objects: Iterable[str] = OBJECTS) -> Loaded:
    """Open and load the first object this kernel accepts, its maps pinned in ``pin_dir``
    (existing pins are reused: their content survives).  Raises :class:`LoadError`."""
    lib = libbpf()
    last: LoadError | None = None
    for name in objects:
        path = os.path.join(BPF_DIR, name)
        obj = lib.bpf_object__open_file(os.fsencode(path), None)
        if not obj:
            err = ctypes.get_errno() or errno.ENOENT
            raise LoadError(f"cannot open {path}: {os.strerror(err)} (was it built? "
                            "nettrust_core/firewall/bpf/build.sh)", err)
        try:
            for m in MAPS:
                mp = lib.bpf_object__find_map_by_name(obj, m.encode())
                if not mp:
                    raise LoadError(f"{path} has no map {m!r}", errno.EINVAL)
                if m in GRANT_MAPS:
                    lib.bpf_map__set_max_entries(mp, map_size)
                if lib.bpf_map__set_pin_path(mp, os.fsencode(os.path.join(pin_dir, m))) < 0:
                    raise LoadError(f"cannot pin map {m} under {pin_dir}", ctypes.get_errno())
            rc = lib.bpf_object__load(obj)
            if rc < 0:
                raise LoadError(f"the kernel refused {name}: {os.strerror(-rc)} (a map pinned "
                                f"under {pin_dir} with another size or layout is not reused: "
                                "`nettrust remove` drops them)", -rc)
            progs = {}
            for p in PROGRAMS:
                prog = lib.bpf_object__find_program_by_name(obj, p.encode())
                progs[p] = lib.bpf_program__fd(prog) if prog else -1
            return Loaded(obj, progs, conntrack=name == OBJECTS[0])
        except LoadError as exc:
            lib.bpf_object__close(obj)
            last = exc
    assert last is not None
    raise last


def on_bpffs(path: str) -> bool:
    """Whether ``path`` lies on a mounted bpffs (the longest mount point above it)."""
    best, fstype = "", ""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mnt = fields[4]
            typ = fields[fields.index("-") + 1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, typ
    return fstype == "bpf"


def local_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """This machine's addresses in the current network namespace (``ip -j address``)."""
    out = subprocess.run(["ip", "-j", "address", "show"], capture_output=True, text=True,
                         check=False)
    addrs: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    if out.returncode == 0:
        for link in json.loads(out.stdout or "[]"):
            for a in link.get("addr_info", []):
                addrs.add(ipaddress.ip_address(a["local"].split("%")[0]))
    return addrs

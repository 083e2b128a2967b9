"""The ``bpf(2)`` system call through ctypes: map elements, pins, links, test runs.

Only what the eBPF backend (:mod:`.ebpf`) needs after its programs are loaded (loading is
libbpf's job, :mod:`.ebpf_loader`).  The answer path's write is :meth:`Map.update`: one syscall
on buffers allocated once, about 3 us, no subprocess and no libbpf call.

Errors are :class:`OSError` with the kernel's errno; the backend turns them into
:class:`~nettrust_core.errors.FirewallError`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Iterator

NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361,
          "s390x": 351}.get(platform.machine(), 321)

MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_PIN, OBJ_GET, PROG_TEST_RUN, OBJ_GET_INFO_BY_FD = 6, 7, 10, 15
LINK_CREATE, LINK_UPDATE, LINK_DETACH = 28, 29, 34
BPF_ANY = 0

#: enum bpf_attach_type values used here.
ATTACH_INET4_CONNECT, ATTACH_INET6_CONNECT = 10, 11
ATTACH_UDP4_SENDMSG, ATTACH_UDP6_SENDMSG = 14, 15
ATTACH_XDP = 37
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 2, 4

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """One ``bpf(cmd, attr)``; raises OSError."""
    ret = _syscall(NR_BPF, cmd, _addr(attr), len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return int(ret)


def _attr(data: bytes, size: int = 128) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(size)
    ctypes.memmove(buf, data, len(data))
    return buf


def obj_get(path: str) -> int:
    """The fd of the object pinned at ``path``."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(OBJ_GET, _attr(struct.pack("=QII", _addr(name), 0, 0)))


def obj_pin(fd: int, path: str) -> None:
    name = ctypes.create_string_buffer(os.fsencode(path))
    bpf(OBJ_PIN, _attr(struct.pack("=QII", _addr(name), fd, 0)))


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """A bpf_link of ``prog_fd`` on ``target`` (a cgroup fd or an ifindex)."""
    return bpf(LINK_CREATE, _attr(struct.pack("=IIII", prog_fd, target, attach_type, flags)))


def link_update(link_fd: int, prog_fd: int) -> None:
    """Replace the program of a link in place (a restart upgrades without a gap)."""
    bpf(LINK_UPDATE, _attr(struct.pack("=III", link_fd, prog_fd, 0)))


def link_detach(link_fd: int) -> None:
    bpf(LINK_DETACH, _attr(struct.pack("=I", link_fd)))


def info(fd: int, size: int = 88) -> bytes:
    """``bpf_{prog,map,link}_info`` of ``fd`` (the first ``size`` bytes)."""
    out = ctypes.create_string_buffer(size)
    bpf(OBJ_GET_INFO_BY_FD, _attr(struct.pack("=IIQ", fd, size, _addr(out))))
    return out.raw


def map_info(fd: int) -> tuple[int, int, int, int, str]:
    """(type, key_size, value_size, max_entries, name) of a map fd."""
    raw = info(fd, 64)
    mtype, _id, ksize, vsize, max_entries, _flags = struct.unpack_from("=6I", raw)
    return mtype, ksize, vsize, max_entries, raw[24:40].split(b"\0")[0].decode()


def link_info(fd: int) -> tuple[int, int, int]:
    """(link type, link id, program id) of a link fd."""
    ltype, lid, prog_id = struct.unpack_from("=III", info(fd, 64))
    return ltype, lid, prog_id


def possible_cpus() -> int:
    """How many values a per-CPU map holds per key."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class Map:
    """A map fd with buffers allocated once: each element operation is one syscall."""

    def __init__(self, fd: int, key_size: int, value_size: int, name: str = "") -> None:
        self.fd, self.key_size, self.value_size, self.name = fd, key_size, value_size, name
        self._key = ctypes.create_string_buffer(key_size)
        self._next = ctypes.create_string_buffer(key_size)
        self._value = ctypes.create_string_buffer(value_size)
        # union bpf_attr for element commands: map_fd, pad, key, value|next_key, flags
        self._elem = _attr(struct.pack("=IxxxxQQQ", fd, _addr(self._key), _addr(self._value),
                                       BPF_ANY), 32)
        self._delete = _attr(struct.pack("=IxxxxQQQ", fd, _addr(self._key), 0, 0), 32)
        self._walk = _attr(struct.pack("=IxxxxQQQ", fd, _addr(self._key), _addr(self._next), 0),
                           32)
        self._walk_first = _attr(struct.pack("=IxxxxQQQ", fd, 0, _addr(self._next), 0), 32)

    @classmethod
    def pinned(cls, path: str) -> Map:
        fd = obj_get(path)
        _type, ksize, vsize, _max, name = map_info(fd)
        return cls(fd, ksize, vsize, name)

    @property
    def max_entries(self) -> int:
        return map_info(self.fd)[3]

    def update(self, key: bytes, value: bytes) -> None:
        ctypes.memmove(self._key, key, self.key_size)
        ctypes.memmove(self._value, value, self.value_size)
        _syscall_or_raise(MAP_UPDATE_ELEM, self._elem)

    def lookup(self, key: bytes) -> bytes | None:
        ctypes.memmove(self._key, key, self.key_size)
        ret = _syscall(NR_BPF, MAP_LOOKUP_ELEM, _addr(self._elem), 32)
        if ret < 0:
            err = ctypes.get_errno()
            if err == 2:      # ENOENT
                return None
            raise OSError(err, f"bpf map lookup: {os.strerror(err)}")
        return self._value.raw[:self.value_size]

    def delete(self, key: bytes) -> bool:
        """False when the key was absent."""
        ctypes.memmove(self._key, key, self.key_size)
        ret = _syscall(NR_BPF, MAP_DELETE_ELEM, _addr(self._delete), 32)
        if ret < 0:
            err = ctypes.get_errno()
            if err == 2:
                return False
            raise OSError(err, f"bpf map delete: {os.strerror(err)}")
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key (a snapshot walk: keys deleted meanwhile may restart it at the start)."""
        attr = self._walk_first
        while True:
            ret = _syscall(NR_BPF, MAP_GET_NEXT_KEY, _addr(attr), 32)
            if ret < 0:
                err = ctypes.get_errno()
                if err == 2:
                    return
                raise OSError(err, f"bpf map walk: {os.strerror(err)}")
            key = self._next.raw[:self.key_size]
            yield key
            ctypes.memmove(self._key, key, self.key_size)
            attr = self._walk

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def clear(self) -> int:
        n = 0
        for key in list(self.keys()):
            n += self.delete(key)
        return n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _syscall_or_raise(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> None:
    if _syscall(NR_BPF, cmd, _addr(attr), len(attr)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run a program on ``data`` (BPF_PROG_TEST_RUN): (return value, ns per run)."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + 256)
    attr = _attr(struct.pack("=IIIIQQII", prog_fd, 0, len(data), len(data_out),
                             _addr(data_in), _addr(data_out), repeat, 0), 80)
    bpf(PROG_TEST_RUN, attr)
    _fd, retval, _si, _so, _di, _do, _rep, duration = struct.unpack_from("=IIIIQQII", attr.raw)
    return retval, duration

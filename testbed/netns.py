"""Network-namespace helpers that need no subprocess: sockets inside a namespace, the processes
in one, and a minimal DNS probe.

``socket_in_netns`` enters the namespace in a short-lived helper thread (``setns`` changes only
the calling thread) and hands back a socket that stays in that namespace for its whole life, so
the calling process itself can talk from inside a lab namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def setns(path: str | os.PathLike) -> None:
    """Move the calling thread into the network namespace at ``path`` (a /run/netns file)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def socket_in_netns(name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,  # noqa: A002
                    proto: int = 0) -> socket.socket:
    """A new socket created inside network namespace ``name``."""
    result: dict[str, object] = {}

    def enter_and_create() -> None:
        try:
            setns(netns_path(name))
            result["sock"] = socket.socket(family, type, proto)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=enter_and_create, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


def pids_in_netns(inode: int) -> list[int]:
    """PIDs of every live process whose network namespace has this nsfs inode."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == inode:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def dns_probe(ns: str, server: str, qname: str, qtype: int = 1, *, port: int = 53,
              rd: bool = False, timeout: float = 0.3) -> int | None:
    """Send one UDP query from inside ``ns``; the response's rcode, or None without a response."""
    # Imported here: the namespace helpers above also serve benchmarks (bench/fw_write.py) that
    # send no DNS.  dnspython is Debian's python3-dnspython under /usr/bin/python3.
    import dns.exception
    import dns.flags
    import dns.message

    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    query = dns.message.make_query(qname, qtype, flags=dns.flags.RD if rd else 0)
    with socket_in_netns(ns, family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((server, port))
            sock.send(query.to_wire())
            while True:
                data = sock.recv(4096)
                try:
                    response = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    continue                        # not a DNS message: wait for the real one
                if query.is_response(response):
                    return response.rcode()
        except (TimeoutError, ConnectionRefusedError, OSError):
            return None

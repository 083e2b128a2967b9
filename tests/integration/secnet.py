"""Small routed topologies for the ruleset's security tests (issue 10), built from throwaway
network namespaces, plus the servers and probes an attacker or a client would use.

``host_and_internet()``: the host running the ruleset on its output hook, and an "internet"::

    host (h)  10.99.0.1  fd99::1   v0 ──veth── v1   10.99.0.2  fd99::2  internet (i)
              default routes via the internet ns       AnyIP: 198.51.100.0/24, 2001:db8:ff::/48

``gateway()``: a LAN client, a gateway running the ruleset with the forward hook, the internet::

    client (c)  10.98.0.2  fd98::2  2001:db8:1::2 (a LAN host's public IPv6)
       v0 ──veth── v1 (gateway's LAN side)
    gateway (g) 10.98.0.1  fd98::1  2001:db8:1::1 | 10.99.0.1  fd99::1 (v0, WAN side)
       v0 ──veth── v1
    internet (i) 10.99.0.2  fd99::2, AnyIP as above, routes to the LAN via the gateway

Forwarding sysctls are set only inside the gateway namespace.  Servers are sockets created in a
namespace and served by threads of the test process; probes run in a forked child that entered
the namespace (``NetNS.run``), optionally as another uid and inside a cgroup.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import socket
import struct
import threading
import time

from netns_util import NetNS, _setns, veth_pair

INTERNET4, INTERNET6 = "198.51.100.0/24", "2001:db8:ff::/48"
MARK = b"NTSEC-PROBE"


def ns_socket(ns: NetNS, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that lives in ``ns`` (made by a helper thread that entered it)."""
    box: list = []

    def make() -> None:
        try:
            _setns(ns.path)
            box.append(socket.socket(family, type_, proto))
        except BaseException as exc:        # noqa: BLE001 - handed to the caller
            box.append(exc)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


class Servers:
    """UDP echo servers, TCP listeners and raw ICMPv6 receivers in one namespace; what each
    received is recorded in ``seen`` as (kind, port or ICMPv6 type, source, data)."""

    def __init__(self, ns: NetNS) -> None:
        self.ns = ns
        self.seen: list[tuple] = []
        self._socks: list[socket.socket] = []
        self._served: dict[socket.socket, tuple] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def udp(self, port: int, reply: bool = True) -> "Servers":
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = ns_socket(self.ns, family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            s.bind((addr, port))
            self._served[s] = ("udp", port, reply)
            self._socks.append(s)
        return self

    def tcp(self, port: int) -> "Servers":
        """A listener; the kernel completes handshakes into its backlog, nothing is accepted."""
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = ns_socket(self.ns, family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(64)
            self._socks.append(s)                       # kept open, not served
        return self

    def icmpv6(self, ifname: str | None = None, groups: tuple[str, ...] = ()) -> "Servers":
        """Every ICMPv6 message reaching this namespace (ND types included, whatever their hop
        limit: raw sockets see them before neighbour discovery judges them)."""
        s = ns_socket(self.ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        for group in groups:
            index = self._ifindex(ifname)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                         socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index))
        self._served[s] = ("icmpv6", None, False)
        self._socks.append(s)
        return self

    def join_udp6(self, port: int, group: str, ifname: str) -> None:
        """Make the IPv6 UDP server on ``port`` a member of ``group`` on ``ifname``."""
        for s in self._socks:
            if self._served.get(s, (None, None))[:2] == ("udp", port) and s.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                             socket.inet_pton(socket.AF_INET6, group)
                             + struct.pack("@I", self._ifindex(ifname)))

    def _ifindex(self, ifname: str | None) -> int:
        return int(self.ns.sh("cat", f"/sys/class/net/{ifname}/ifindex").stdout) if ifname else 0

    def start(self) -> "Servers":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        readable = list(self._served)
        while not self._stop.is_set():
            for s in select.select(readable, [], [], 0.1)[0]:
                kind, port, reply = self._served[s]
                try:
                    data, src = s.recvfrom(4096)
                except OSError:
                    continue
                if kind == "icmpv6":
                    with self._lock:
                        self.seen.append(("icmpv6", data[0], src[0], data))
                    continue
                with self._lock:
                    self.seen.append((kind, port, src[0], data))
                if reply:
                    try:
                        s.sendto(b"echo:" + data, src)
                    except OSError:
                        pass

    def received(self, kind: str, key, marker: bytes) -> list[tuple]:
        with self._lock:
            return [e for e in self.seen if e[0] == kind and e[1] == key and marker in e[3]]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks:
            s.close()


def address_of(ns: NetNS, ifname: str, scope: str = "link") -> str:
    out = ns.sh("ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", scope).stdout
    return out.split()[3].split("/")[0]


def _route(ns: NetNS, *argv: str) -> None:
    ns.sh("ip", *argv)


@contextlib.contextmanager
def host_and_internet():
    with NetNS("ntsec-h") as h, NetNS("ntsec-i") as i:
        veth_pair(h, i, ["10.99.0.1/24", "fd99::1/64"], ["10.99.0.2/24", "fd99::2/64"])
        _route(h, "route", "add", "default", "via", "10.99.0.2")
        _route(h, "-6", "route", "add", "default", "via", "fd99::2")
        _route(i, "route", "add", "local", INTERNET4, "dev", "lo")
        _route(i, "-6", "route", "add", "local", INTERNET6, "dev", "lo")
        yield h, i


@contextlib.contextmanager
def gateway():
    with NetNS("ntsec-c") as c, NetNS("ntsec-g") as g, NetNS("ntsec-i") as i:
        for ns in (g,):
            ns.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
            ns.sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        veth_pair(c, g, ["10.98.0.2/24", "fd98::2/64", "2001:db8:1::2/64"],
                  ["10.98.0.1/24", "fd98::1/64", "2001:db8:1::1/64"])
        veth_pair(g, i, ["10.99.0.1/24", "fd99::1/64"], ["10.99.0.2/24", "fd99::2/64"])
        _route(c, "route", "add", "default", "via", "10.98.0.1")
        _route(c, "-6", "route", "add", "default", "via", "fd98::1")
        _route(g, "route", "add", "default", "via", "10.99.0.2")
        _route(g, "-6", "route", "add", "default", "via", "fd99::2")
        _route(i, "route", "add", "local", INTERNET4, "dev", "lo")
        _route(i, "-6", "route", "add", "local", INTERNET6, "dev", "lo")
        _route(i, "route", "add", "10.98.0.0/24", "via", "10.99.0.1")
        _route(i, "-6", "route", "add", "fd98::/64", "via", "fd99::1")
        _route(i, "-6", "route", "add", "2001:db8:1::/64", "via", "fd99::1")
        yield c, g, i


# -- probes, run inside a namespace by NetNS.run ------------------------------------------------
def become(uid: int | None = None, cgroup: str | None = None, groups: tuple[int, ...] = ()) -> None:
    """Join ``cgroup`` (a directory of the cgroup v2 hierarchy), then drop to ``uid`` with its
    primary group and ``groups`` as supplementary groups."""
    if cgroup is not None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if uid is not None:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp_probe(addr: str, port: int, *, sport: int | None = None, uid: int | None = None,
              cgroup: str | None = None, ifname: str | None = None,
              timeout: float = 1.0) -> str:
    """Send one datagram (carrying MARK) and wait for an answer: "reply", "no reply", or the
    errno's name of a refusal (the sender is told at once when the firewall rejects)."""
    become(uid, cgroup)
    fam = _family(addr)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if sport is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
    dest = (addr, port) if fam == socket.AF_INET else (addr, port, 0,
                                                       socket.if_nametoindex(ifname) if ifname else 0)
    if fam == socket.AF_INET6 and ifname:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(ifname))
    try:
        s.sendto(MARK, dest)
        data, _src = s.recvfrom(4096)
        return "reply" if data == b"echo:" + MARK else f"other {data!r}"
    except TimeoutError:
        return "no reply"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    finally:
        s.close()


def tcp_probe(addr: str, port: int, *, uid: int | None = None, cgroup: str | None = None,
              timeout: float = 1.5) -> str:
    """"connected", "timeout" (dropped) or the errno's text (refused, unreachable)."""
    become(uid, cgroup)
    s = socket.socket(_family(addr), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    finally:
        s.close()


def icmpv6_send(addr: str, icmp_type: int, hops: int, *, ifname: str | None = None,
                uid: int | None = None) -> str:
    """One ICMPv6 message of ``icmp_type`` (code 0) carrying MARK, from a process's raw socket,
    at hop limit ``hops``: "sent" or the errno's text."""
    become(uid)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
        index = socket.if_nametoindex(ifname) if ifname else 0
        if index:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        # type, code, checksum (the kernel fills it in), 4 reserved bytes, a 16-byte target
        body = struct.pack("!BBHI", icmp_type, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, addr) + MARK
        s.sendto(body, (addr, 0, 0, index))
        return "sent"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    finally:
        s.close()


def wait_for(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def ping6(addr: str, timeout: float = 2.0) -> bool:
    """One ICMPv6 echo request (a raw socket: no ping binary needed); True when answered."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.settimeout(0.2)
    ident = os.getpid() & 0xFFFF
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, 1) + MARK, (addr, 0))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data, src = s.recvfrom(4096)
            except TimeoutError:
                continue
            if data[0] == 129 and src[0] == addr and struct.unpack("!H", data[4:6])[0] == ident:
                return True
        return False
    finally:
        s.close()


class Existing(NetNS):
    """A namespace someone else made (a lab's), for ``run``; never deleted from here."""

    def __init__(self, name: str) -> None:            # noqa: D107 - no namespace is created
        self.name = name
        self.path = f"/run/netns/{name}"

    def delete(self) -> None:
        pass


def dns_query(server: str, qname: str, *, uid: int | None = None, cgroup: str | None = None,
              timeout: float = 1.5) -> str:
    """One real DNS query over UDP (recursion not desired), as ``uid`` inside ``cgroup``:
    the rcode's name, "no reply", or the errno's text."""
    import dns.message
    import dns.rcode
    become(uid, cgroup)
    s = socket.socket(_family(server), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    query = dns.message.make_query(qname, "A")
    query.flags = 0
    try:
        s.sendto(query.to_wire(), (server, 53))
        data, _src = s.recvfrom(65535)
        return dns.rcode.to_text(dns.message.from_wire(data).rcode())
    except TimeoutError:
        return "no reply"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    finally:
        s.close()


def unix_connect(path: str, kind: int, *, uid: int, groups: tuple[int, ...] = ()) -> str:
    """Connect to a Unix socket as ``uid`` (with ``groups``): "connected" or the errno's text."""
    become(uid, None, groups)
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.connect(path)
        return "connected"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    finally:
        s.close()

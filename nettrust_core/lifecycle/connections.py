"""The conntrack reaction: live connections that no grant allows, reported and optionally cut.

Connections opened before NetTrust's ruleset existed, or to an address whose grant a policy
change revoked, keep flowing through ``ct state established``.  :class:`ConnectionAudit` lists
every tracked connection (one ctnetlink dump, off the answer path) and keeps those that

* this host started (original source is one of its addresses), or with the forward hook a
  client forwarded through it (original source on the LAN side: ``firewall.lan_networks``),
* to a destination that is not one of this host's addresses, not statically reachable
  (``reachable.*``, loopback) and not granted now (the kernel's grant sets, every instance),
* that are not DNS (port 53/853: the resolver's own, and nobody else's gets past the ruleset),
* and still live (TCP not closing; UDP and others while tracked).

Each one found is logged, counted (``unauthorized_connections``) and sent to the agent as
``{"t": "event", "kind": "unauthorized_connection", ...}``; ``nettrust status`` lists them (it
runs the same audit in its own process, reading only).  With
``lifecycle.terminate_unauthorized = true`` each is deleted from conntrack
(``IPCTNL_MSG_CT_DELETE``); its next packet is then not ``established`` and meets the
ruleset's refusal (for TCP a reset, so the program sees the connection cut).

Conntrack only tracks what a namespace's rules ask it to: on a host where nothing used conntrack
before NetTrust's ruleset (which does), an older connection is not tracked, and its next packet
is ``new`` to the ruleset and refused unless granted -- it is cut without this audit.

When: once at start (which a configuration reload also is) in a thread of its own, and on
:meth:`ConnectionAudit.request` (a policy change: blocklist update, revocations), coalesced.
The start's audit first waits (at most :data:`HOLD_LIMIT` seconds) while ``hold()`` says so --
the resolver's start-up adoption of its live grants: the audit reads every grant set back
(``list_grants``), and with a million grants that dump's parsing took the interpreter lock from
the adoption half the time (measured: a 4-s read-back from Redis took 9 s while it ran).
This host's addresses are read with ``ip -j addr`` at each run (a process, never on the answer
path); if they cannot be read, nothing is cut (reported only).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ..errors import NetTrustError
from ..networks import LOOPBACK, IPAddress
from ..netlink import conntrack as ctnl
from ..netlink.conntrack import ConntrackError
from ..netlink.core import NetlinkSocket
from ..netlink.wire import Message
from ..worker import Worker

#: DNS and DoT: the resolver's own traffic, never audited.
DNS_PORTS = (53, 853)

log = logging.getLogger("nettrust.connections")
#: Connections logged one by one per audit; the rest only in the summary line (and events).
LOG_EACH = 50
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp"}
#: Longest the start's audit waits for ``hold()`` to clear (the start-up adoption), seconds.
HOLD_LIMIT = 10.0


def _address(raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)


@dataclass(frozen=True)
class Unauthorized:
    """One connection no grant allows."""

    src: IPAddress
    dst: IPAddress
    proto: int
    sport: int | None
    dport: int | None
    terminated: bool = False

    def to_dict(self) -> dict:
        return {"src": str(self.src), "dst": str(self.dst),
                "proto": PROTO_NAMES.get(self.proto, str(self.proto)),
                "sport": self.sport, "dport": self.dport, "terminated": self.terminated}

    def __str__(self) -> str:
        p = PROTO_NAMES.get(self.proto, str(self.proto))
        return f"{p} {self.src}:{self.sport} -> {self.dst}:{self.dport}"


def local_addresses() -> set[IPAddress] | None:
    """This namespace's addresses (``ip -j addr``), or None when they cannot be read."""
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ip is None:
        return None
    try:
        out = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        found = {ipaddress.ip_address(a["local"].split("%")[0])
                 for link in json.loads(out) for a in link.get("addr_info", []) if "local" in a}
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return found


class ConnectionAudit(Worker):
    """Finds (and with ``terminate``, deletes) the connections no grant allows."""

    name = "nettrust-connections"

    def __init__(self, config, backend, *, reporter=None, counters: Counter | None = None,
                 terminate: bool | None = None, static=None,
                 hold: Callable[[], bool] | None = None) -> None:
        super().__init__(counters)
        #: True while the start's audit should wait (see the module's docstring).
        self.hold = hold
        self.config = config
        self.backend = backend
        self.reporter = reporter
        self.counters = counters if counters is not None else Counter()
        lc = config.lifecycle
        self.terminate = lc.terminate_unauthorized if terminate is None else terminate
        if static is None:
            from ..ruleset import ruleset_spec
            spec = ruleset_spec(config)
            static = [*spec.static_networks,
                      *(ipaddress.ip_network(h) for h in spec.static_hosts)]
            static += [ipaddress.ip_network(a) for a, _p in spec.upstreams]
        self.static = [*LOOPBACK, *static]
        fw = config.firewall
        self.forward = "forward" in fw.hooks
        self.lan_networks = list(fw.lan_networks)
        self.last: list[Unauthorized] = []
        self.tracked = 0
        self._wake = threading.Event()

    # -- one run -----------------------------------------------------------------------------
    def _connections(self) -> list[ctnl.Connection]:
        found: list[ctnl.Connection] = []

        def on_entry(msg: Message) -> None:
            conn = ctnl.parse_connection(msg)
            if conn is not None:
                found.append(conn)
        sock = NetlinkSocket(timeout=5.0)
        try:
            sock.dump(ctnl.IPCTNL_MSG_CT_GET, 0, b"", on_entry,
                      subsystem=ctnl.NFNL_SUBSYS_CTNETLINK)
        except (NetTrustError, OSError, ValueError, IndexError) as exc:
            raise ConntrackError(f"conntrack dump failed: {exc}") from None
        finally:
            sock.close()
        return found

    def _static(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.static)

    def _ours(self, src: IPAddress, local: set[IPAddress] | None) -> bool:
        """Started here (output) or forwarded for a LAN client (forward hook)."""
        if local is None or src in local:
            return True
        return self.forward and (not self.lan_networks or any(
            src.version == n.version and src in n for n in self.lan_networks))

    def find(self) -> tuple[list[tuple[ctnl.Connection, Unauthorized]], bool]:
        """The unauthorized connections, and whether this host's addresses were known."""
        local = local_addresses()
        granted = {g.address for g in self.backend.list_grants()}
        out = []
        tracked = self._connections()
        self.tracked = len(tracked)
        for conn in tracked:
            if not conn.live or conn.dport in DNS_PORTS:
                continue
            src, dst = _address(conn.src), _address(conn.dst)
            if (local is not None and dst in local) or not self._ours(src, local):
                continue
            if dst in granted or self._static(dst) or dst.is_multicast or dst.is_unspecified:
                continue
            out.append((conn, Unauthorized(src, dst, conn.proto, conn.sport, conn.dport)))
        return out, local is not None

    def audit(self) -> list[Unauthorized]:
        """One audit: report every connection found; with ``terminate``, delete it."""
        try:
            found, known = self.find()
        except NetTrustError as exc:
            self.counters["connection_audit_errors"] += 1
            log.error("cannot audit tracked connections: %s", exc)
            return []
        results = []
        sock = NetlinkSocket(timeout=5.0) if self.terminate and found and known else None
        try:
            for conn, item in found:
                cut = False
                if sock is not None:
                    family, body = ctnl.delete_request(conn)
                    fails = _delete(sock, family, body)
                    cut = not fails
                    if fails:
                        self.counters["connection_terminate_errors"] += 1
                        log.error("cannot delete tracked connection %s: %s", item, fails)
                item = Unauthorized(item.src, item.dst, item.proto, item.sport, item.dport, cut)
                results.append(item)
                self.counters["unauthorized_connections"] += 1
                if cut:
                    self.counters["connections_terminated"] += 1
                if len(results) <= LOG_EACH:      # then the summary line only
                    log.warning("connection not granted by any answer: %s%s", item,
                                " (terminated)" if cut else "")
                if self.reporter is not None:
                    self.reporter.event("unauthorized_connection", **item.to_dict())
        finally:
            if sock is not None:
                sock.close()
        log.info("connection audit: %d tracked, %d not granted%s", self.tracked, len(found),
                 f", {sum(r.terminated for r in results)} terminated" if self.terminate else "")
        if found and self.terminate and not known:
            log.warning("this host's addresses could not be read: %d connection(s) reported, "
                        "none terminated", len(found))
        self.last = results
        return results

    # -- in the background -------------------------------------------------------------------
    def start(self) -> None:
        """Run once now (in a thread) and again on each :meth:`request`."""
        self._wake.set()
        super().start()

    def request(self) -> None:
        """A policy change happened: audit again soon (requests coalesce)."""
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:              # the thread (Worker); one audit is audit()
        until = time.monotonic() + HOLD_LIMIT
        while self.hold is not None and self.hold() and time.monotonic() < until:
            if self.stopping.wait(0.05):
                return
        while not self.stopping.is_set():
            self._wake.wait()
            if self.stopping.is_set():
                return
            self._wake.clear()
            try:
                self.audit()
            except Exception:               # the thread must outlive any bug
                self.counters["connection_audit_errors"] += 1
                log.exception("connection audit failed")



def _delete(sock: NetlinkSocket, family: int, body: bytes) -> str | None:
    """One acked IPCTNL_MSG_CT_DELETE; None when done (or already gone), else the error."""
    import errno as errno_mod
    from ..netlink.wire import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, nlmsg, parse_error
    with sock._lock:
        seq = sock._next_seq(1)
        sock._send(nlmsg(ctnl.NFNL_SUBSYS_CTNETLINK << 8 | ctnl.IPCTNL_MSG_CT_DELETE,
                         NLM_F_REQUEST | NLM_F_ACK, seq, family, body))
        while True:
            for m in sock._recv("conntrack delete"):
                if m.seq == seq and m.type == NLMSG_ERROR:
                    err, _off, text = parse_error(m)
                    if err in (0, errno_mod.ENOENT):
                        return None
                    return text or f"errno {err}"

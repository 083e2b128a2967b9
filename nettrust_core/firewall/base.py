"""The firewall backend contract, and a recording fake that ships beside it.

A backend owns one ruleset: a default-drop egress chain plus the sets that let answered
addresses through.  The authorizer only ever calls these verbs; everything kernel-specific
stays behind them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The kernel keeps at most this many bytes of comment per element (nft's own limit is 128).
COMMENT_MAX = 127
#: Most resolver processes one ruleset serves (firewall.instances): each instance's sets add two
#: lookups to the first packet of every new connection.
MAX_INSTANCES = 64


@dataclass(frozen=True)
class Grant:
    """One address to let through for ``timeout`` seconds, opened by ``comment`` (a name)."""

    address: IPAddress
    timeout: float
    comment: str = ""


@dataclass(frozen=True)
class GrantedElement:
    """One live element of a grant set, as the kernel reports it."""

    address: IPAddress
    timeout: float          # the timeout it was added with, seconds
    expires_in: float       # seconds left
    comment: str = ""
    instance: int = 0       # whose grant set it is in (firewall.instances)


@dataclass(frozen=True)
class RulesetSpec:
    """Everything a backend needs to build its ruleset; made from the config."""

    table: str = "nettrust"
    priority: int = 0
    action: str = "reject"                     # "reject" or "drop"
    hooks: tuple[str, ...] = ("output",)       # "output", optionally "forward"
    static_hosts: tuple[IPAddress, ...] = ()
    static_networks: tuple[IPNetwork, ...] = ()
    resolver_uid: int | None = None            # the resolver may reach port 53/853 anywhere
    #: With it, the resolver exemption also needs a socket made inside this cgroup v2 (a path
    #: below the hierarchy's root, e.g. "system.slice/unbound.service"): another process with
    #: the resolver's uid is not exempt.  The cgroup must exist when the ruleset is loaded.
    resolver_cgroup: str | None = None
    #: Forward mode: the only (address, port) pairs the resolver may reach for DNS; empty:
    #: port 53/853 anywhere (recursion).  Nobody else reaches them through this exemption.
    upstreams: tuple[tuple[IPAddress, int], ...] = ()
    allow_icmpv6_nd: bool = True               # output only: ND at hop limit 255, MLD at 1
    allow_dhcp: bool = True                    # output only: a DHCP/DHCPv6 client's requests
    #: Unicast DHCP servers the client may renew with (besides broadcast, ff02::1:2, fe80::/10).
    dhcp_servers: tuple[IPAddress, ...] = ()
    #: The forward hook's client-facing side: only packets entering on these interfaces and
    #: from these networks (each test applied when non-empty) may use static sets and grants.
    lan_interfaces: tuple[str, ...] = ()
    lan_networks: tuple[IPNetwork, ...] = ()
    #: Bits OR-ed into the conntrack mark of every connection a grant lets through, so that
    #: liveness checks dump only those (None: no marking).
    ct_mark: int | None = None
    #: NFLOG group the refusing rule logs to, at most ``log_rate`` packets per second (None: off).
    log_group: int | None = None
    log_rate: int = 20
    #: The grant sets' ``size`` (elements each; None: the kernel's default, unbounded).
    set_size: int | None = None
    #: Resolver processes sharing the port (firewall.instances): each writes only its own pair
    #: of grant sets and the chains accept an address found in any of them.
    instances: int = 1
    #: firewall.enforcement = "audit": every refusing rule logs, counts and accepts instead.
    audit: bool = False


class FirewallBackend(Protocol):
    """The verbs every backend provides."""

    def ensure(self) -> None:
        """Create or repair the ruleset atomically; live grants survive."""

    def grant(self, grants: Sequence[Grant]) -> None:
        """Add or extend the given grants in one kernel transaction (the answer path)."""

    def list_grants(self) -> list[GrantedElement]:
        """The live grants of every instance, from the kernel."""

    def scan_own_grants(self, on_batch: Callable[[list[GrantedElement]], None]) -> None:
        """This process's live grants, handed over in batches (a restart adopts them)."""

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        """Remove these grants now (absent ones are ignored); one kernel transaction."""

    def lookup(self, address: IPAddress) -> float | None:
        """Seconds left on this process's grant of ``address`` (None: none), asked of the kernel
        for this one element: how a restart stays exact before the full dump is read."""

    def flush_grants(self, own_only: bool = False) -> None:
        """Drop every grant (``own_only``: this instance's); the ruleset and drop policy stay."""

    def remove(self) -> None:
        """Delete the whole ruleset (a clean removal: egress is open again)."""

    def status(self) -> dict:
        """Ruleset present, priority, set sizes, counters."""

    def close(self) -> None:
        """Release sockets; the kernel state stays."""


@dataclass
class RecordingBackend:
    """An in-memory backend for tests of policy and authorizer (no kernel involved).

    It records each ``grant`` batch so a test can assert exactly what the answer path wrote.
    Set ``fail_with`` to make ``grant`` raise, to exercise fail-closed paths.
    """

    spec: RulesetSpec = field(default_factory=RulesetSpec)
    batches: list[list[Grant]] = field(default_factory=list)
    present: bool = False
    fail_with: Exception | None = None
    ensure_calls: int = 0
    revoked: list = field(default_factory=list)

    def ensure(self) -> None:
        self.ensure_calls += 1
        self.present = True

    def grant(self, grants: Sequence[Grant]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(grants))

    def list_grants(self) -> list[GrantedElement]:
        latest: dict[IPAddress, Grant] = {}
        for batch in self.batches:
            for g in batch:
                latest[g.address] = g
        return [GrantedElement(g.address, g.timeout, g.timeout, g.comment) for g in latest.values()]

    def scan_own_grants(self, on_batch: Callable[[list[GrantedElement]], None]) -> None:
        on_batch(self.list_grants())

    def lookup(self, address: IPAddress) -> float | None:
        found = [g for g in self.list_grants() if g.address == address]
        return found[0].expires_in if found else None

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        gone = set(addresses)
        self.revoked.extend(addresses)
        self.batches = [[g for g in batch if g.address not in gone] for batch in self.batches]

    def flush_grants(self, own_only: bool = False) -> None:
        self.batches.clear()

    def remove(self) -> None:
        self.present = False
        self.batches.clear()

    def status(self) -> dict:
        return {"present": self.present, "priority": self.spec.priority,
                "sets": {"grants": len(self.list_grants())}, "counters": {}}

    def close(self) -> None:
        pass

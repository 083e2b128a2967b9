"""The firewall backend contract: the verbs every backend has, and what they return.

A backend owns one ruleset: a default-drop egress chain plus the sets that let answered
addresses through.  The authorizer only ever calls these verbs; everything kernel-specific
stays behind them.  What a backend may report besides (the base chains on netfilter's hooks,
for the priority report) is a separate, optional protocol: :mod:`.diagnostics`.  The recording
fake ships beside the contract (:mod:`.recording`), the configured list of backends is driven
through one :class:`~.fanout.FanOut`, and backends are found by name in :mod:`.registry`.

Errors: every verb raises :class:`~nettrust_core.errors.FirewallError` (never OSError or a
netlink error) when the kernel refuses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The kernel keeps at most this many bytes of comment per element (nft's own limit is 128).
COMMENT_MAX = 127
#: Most resolver processes one ruleset serves (firewall.instances): each instance's sets add
#: lookups to the first packet of every new connection (at least one per IP version).
MAX_INSTANCES = 64


@dataclass(frozen=True)
class MacAddress:
    """A client's link-layer address (``gateway.client_key = "mac"``): 6 bytes.  Shaped like an
    address where the gateway code asks (``version`` 0: any destination family)."""

    packed: bytes
    version: ClassVar[int] = 0
    is_loopback: ClassVar[bool] = False

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.packed)


class Grant(NamedTuple):
    """One address to let through for ``timeout`` seconds, opened by ``comment`` (a name).

    A NamedTuple, not a frozen dataclass: every answer makes one per address, and its
    construction is ~3,600 instructions cheaper per answer (bench/answer_path.py --callgrind,
    127,376 -> 123,730); immutable all the same."""

    address: IPAddress
    timeout: float
    comment: str = ""
    #: Gateway mode (``gateway.per_client``): the client this grant is for, same IP version as
    #: ``address`` (or its MAC, any version); it goes to the ``client . destination`` sets.
    #: None: a grant for everyone.
    client: IPAddress | MacAddress | None = None


@dataclass(frozen=True)
class ClientPair:
    """One live ``client . destination`` grant (gateway mode), as the kernel reports it."""

    client: IPAddress | MacAddress      # an IPv6 client keyed by its /N: the network address
    address: IPAddress
    expires_in: float                   # seconds left
    timeout: float                      # the timeout it was added with, seconds
    comment: str = ""
    instance: int = 0


@dataclass(frozen=True)
class StruckClient:
    """A client address (or a local uid) whose DNS and DoT are dropped for ``expires_in`` s."""

    who: IPAddress | int
    expires_in: float


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
    #: DNS servers anyone may reach on their DNS ports (TCP/UDP 53 and 853), in output and
    #: forward: a fleet follower's masters (``fleet.masters``), where the hosts behind it resolve.
    dns_servers: tuple[IPAddress, ...] = ()
    #: Output only: TCP (address, port) this host's own processes may reach -- a fleet node's
    #: Redis (``fleet.redis_url`` when it names an address), and nobody forwarded through it.
    own_services: tuple[tuple[IPAddress, int], ...] = ()
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
    #: Gateway mode: the forward chain accepts ``ip saddr . ip daddr @clients4`` (and the v6
    #: twin) instead of the destination-only grant sets: a grant is for the client that asked.
    per_client: bool = False
    #: Forward only: sources whose forwarded connections go anywhere (no grant needed).
    open_networks: tuple[IPNetwork, ...] = ()
    #: Per-client IPv6 keys are the client's address cut to this prefix (64: a host's privacy
    #: addresses share its grants); the forward rule masks ``ip6 saddr`` the same way.
    client_prefix6: int = 128
    #: ``gateway.client_key = "mac"``: the per-client sets are ``ether_addr . ipvN_addr`` and
    #: the forward chain matches ``ether saddr . ip daddr`` (directly attached clients).
    client_mac: bool = False
    #: Group mode (``[[gateway.groups]]``): the source networks of each instance's group; the
    #: forward chain accepts instance k's grants only from group k's networks.
    groups: tuple[tuple[IPNetwork, ...], ...] = ()
    #: An input chain, policy drop: established, loopback, DHCP, ICMPv6 ND, DNS/DoT to this
    #: resolver from the LAN side, ``management_ports`` (TCP) from ``management_networks``
    #: (empty: from the LAN side); nothing else reaches the gateway.
    drop_input: bool = False
    management_ports: tuple[int, ...] = ()
    management_networks: tuple[IPNetwork, ...] = ()
    #: Strikes (gateway mode): a ``strikes`` chain on prerouting drops DNS and DoT from the
    #: sources in the timed ``strike4``/``strike6`` sets (the module writes them, see
    #: nettrust_core.strikes); with ``strike_rate`` a kernel meter strikes sources sending more
    #: than that many DNS packets per second for ``strike_penalty`` seconds.  Reverse-path check
    #: on ``lan_interfaces`` (spoofed sources dropped); ``management_networks`` never struck.
    strikes: bool = False
    strike_rate: int = 0
    strike_penalty: float = 300.0
    #: A host's strikes by local user (lifecycle.strike_drop_dns): a ``strikes_out`` chain on
    #: output drops DNS and DoT of the uids in the timed ``strike_uids`` set (never uid 0 or
    #: ``resolver_uid``).
    uid_strikes: bool = False


#: Hands over one part of a listing as the kernel delivers it (may raise to abandon the listing).
OnBatch = Callable[[list[GrantedElement]], None]


@dataclass(frozen=True)
class Status:
    """What a backend holds, for ``nettrust status`` and the periodic ruleset check.

    ``present``: the ruleset exists (False: egress is not filtered by this backend).
    ``hooks``: the base chains hooked as configured; ``policy`` their policy (``"drop"``);
    ``sets``: elements per set (empty when not counted); ``counters``: the ruleset's named
    counters (``{"rejected": {"packets": n, "bytes": n}}``).  ``repairs`` and ``errors``: this
    process's grants that found the ruleset missing and rebuilt it, and that failed.
    ``members``: with several backends (:class:`~.fanout.FanOut`), each one's own status; the
    fields above are then what holds for every one of them.
    """

    backend: str
    present: bool
    table: str = ""
    family: str = ""
    dormant: bool = False
    hooks: tuple[str, ...] = ()
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    priority: int | None = None
    policy: str | None = None
    action: str | None = None
    sets: dict[str, int | None] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    repairs: int = 0
    errors: int = 0
    members: tuple[Status, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``nettrust status --json``)."""
        out = {k: v for k, v in self.__dict__.items() if k != "members"}
        out["hooks"] = list(self.hooks)
        if self.members:
            out["members"] = [m.to_dict() for m in self.members]
        return out


class FirewallBackend(Protocol):
    """The verbs every backend provides.

    ``instance`` is this resolver process's index among ``firewall.instances``: ``grant``,
    ``revoke``, ``lookup`` and ``list_grants(own_only=True)`` touch only its own grants.
    """

    @property
    def repairs(self) -> int:
        """Grants that found the ruleset missing and rebuilt it (the answer path then starts its
        tracker afresh: what it believed granted is gone).  A plain attribute satisfies it."""

    def ensure(self) -> None:
        """Create or repair the ruleset atomically; live grants survive."""

    def grant(self, grants: Sequence[Grant]) -> None:
        """Add or extend the given grants in one kernel transaction (the answer path)."""

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        """Remove these grants now (absent ones are ignored); one kernel transaction."""

    def lookup(self, address: IPAddress) -> float | None:
        """Seconds left on this process's grant of ``address`` (None: none), asked of the kernel
        for this one element: how a restart stays exact before the full listing is read."""

    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        """The live grants, from the kernel: every instance's, or with ``own_only`` this one's.

        With ``on_batch`` each part is handed over as the kernel delivers it and nothing is
        kept (returns ``[]``): how a restart adopts a million grants without holding them all
        (``on_batch`` may raise to abandon the listing).
        """

    def flush_grants(self, own_only: bool = False) -> None:
        """Drop every grant (``own_only``: this instance's); the ruleset and drop policy stay."""

    def remove(self) -> None:
        """Delete the whole ruleset (a clean removal: egress is open again)."""

    def status(self, *, count_elements: bool = True) -> Status:
        """What the kernel holds (``count_elements=False``: no set sizes, for frequent checks:
        counting may dump a million elements)."""

    def close(self) -> None:
        """Release sockets; the kernel state stays."""


@runtime_checkable
class ClientPairs(Protocol):
    """Optional verbs of a backend that keeps per-client grants and strikes (gateway mode)."""

    def lookup_pair(self, client: IPAddress | MacAddress, address: IPAddress) -> float | None:
        """Seconds left on the grant of ``client . address`` (None: none)."""

    def strike(self, address: IPAddress | int, seconds: float) -> None:
        """Drop the DNS of a client address (or a local uid) for ``seconds``."""

    def revoke_pairs(self, pairs: Sequence[tuple[IPAddress | MacAddress, IPAddress]]) -> None:
        """Remove ``client . destination`` grants now (this instance's; gone ones ignored)."""

    def list_pairs(self) -> list[ClientPair]:
        """Every live ``client . destination`` grant (every instance's)."""

    def list_strikes(self) -> list[StruckClient]:
        """Every struck client address and local uid, with the time left."""

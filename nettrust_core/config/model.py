"""The configuration as the code sees it: frozen dataclasses, one per section of the file.

Each key is declared exactly once, as a field written with :func:`~.declare.key` (kind, default
as written in the file, one-line doc, checks; see :mod:`.declare`).  Loading, the schema,
``to_dict``/``nettrust check --effective`` and the README reference are all derived from these
fields.

Adding a key:

1. One field in its section below, where it should appear in the reference::

       name: type = key(Kind(...), default_as_written_in_toml, "one-line doc",
                        check=<Check or tuple of them>, unit="per second")

   Kinds (:mod:`.kinds`): ``Boolean()``, ``Integer(low, high)`` (``high`` None: no ceiling),
   ``Text(empty_is_none=...)``, ``Choice(values)``, ``Duration()``, ``Each(convert, "what the
   elements are")`` for arrays (``convert`` from :mod:`.values` or :mod:`..patterns`, raising
   ``ValueError``), ``Priority()``, ``Listen()``.  Key checks (:mod:`.checks`): ``at_least``,
   ``at_most``, ``between``, ``absolute_path``, ``matches``, ``http_url``, ``not_empty``,
   ``no_repeats``, or ``Check(rule, test)``.  A check that needs several keys is a function of
   the section in :mod:`.checks`, raising ``Invalid(message, key=...)``, listed in ``CHECKS``.
2. ``python -m nettrust_core.config.reference --write README.md`` (the reference table).
3. The key at its default, with prose, in its section of ``conf/nettrust.toml``;
   ``python -m nettrust_core.config.reference --check README.md conf/nettrust.toml`` (and
   ``tests/unit/test_config.py``) list whatever still disagrees.

A new section: a dataclass of such fields, and ``name: XConfig = section(XConfig)`` on
:class:`Config` (the field's name is the section's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InvalidValue
from ..firewall.base import MAX_INSTANCES, IPAddress, IPNetwork
from ..firewall.registry import names as backend_names
from ..networks import PRIVATE, SINKHOLES
from ..patterns import PatternSet, ZoneSet, normalize_pattern, normalize_zone
from . import checks as c
from .declare import Checks, effective, key, section, sections_of
from ..lists.formats import FORMATS as LIST_FORMATS
from ..lists.loader import ListSpec
from .kinds import (Boolean, Choice, Duration, Each, Field, Integer, Priority,
                    Tables, Text)
from .locate import SourceMap, parse_path
from .model_ebpf import EbpfConfig
from .model_gateway import GatewayConfig
from .model_resolver import LocalConfig, PtrConfig
from .model_agent import (AlertsConfig, MetricsConfig, RecordingConfig, StatsConfig,
                          WebConfig)
from .model_resolver import DotConfig, ResolvConfConfig
from .model_fleet import FleetConfig
from .values import (NamespaceRule, Upstream, address, cgroup_path, interface, namespace_rule,
                     nat64_prefix, network, one_of, server)

MODES = ("denylist", "allowlist")
UPSTREAM_MODES = ("recurse", "forward")
BLOCKED_ANSWERS = ("nxdomain", "sinkhole", "refused")
FIREWALL_BACKENDS = backend_names()
ACTIONS = ("reject", "drop")
#: firewall.enforcement: "audit" drops nothing; what would be refused is logged and counted.
ENFORCEMENTS = ("enforce", "audit")
HOOKS = ("output", "forward")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: firewall.on_exit: what stopping Unbound leaves in the kernel.
EXIT_MODES = ("keep", "drop-grants", "remove")
#: Keys that were replaced: reading one is an error that says what to write instead.
REPLACED_KEYS = {
    ("firewall", "keep_ruleset_on_exit"): 'on_exit = "remove" (was keep_ruleset_on_exit = false) '
                                          'or on_exit = "keep" (the default)',
    ("firewall", "keep_grants_on_exit"): 'on_exit = "drop-grants" (was keep_grants_on_exit = '
                                         'false) or on_exit = "keep" (the default)',
    ("firewall", "backend"): 'backends = ["nftables"] (a list: every backend named gets every '
                             'grant)',
}
#: Longest grant a configuration may ask for (grants.max_ttl).
MAX_TTL_LIMIT = 7 * 86400.0
#: Addresses that always mean "blocked" in an answer; ``upstream.sinkhole_addresses`` adds more.
ALWAYS_SINKHOLE: tuple[IPAddress, ...] = tuple(sorted(SINKHOLES, key=lambda a: a.version))
#: What ``reachable.private = true`` opens: RFC 1918, CGNAT, link-local and unique-local.
PRIVATE_NETWORKS: tuple[IPNetwork, ...] = PRIVATE

LIST_ACTIONS = ("deny", "allow")


def _list_spec(name: str | None, path: str, format: str, action: str,  # noqa: A002
               category: str | None) -> ListSpec:
    """One ``[[policy.lists]]`` table; its name defaults to the file's name without suffix."""
    if not os.path.isabs(path):
        raise InvalidValue(f"path {path!r} is not an absolute path")
    if name is None:
        name = os.path.splitext(os.path.basename(path.rstrip("/")))[0] or path
    return ListSpec(name, path, format, action, category)


def _list_table(spec: ListSpec) -> dict[str, Any]:
    out = {"name": spec.name, "path": spec.path, "format": spec.format, "action": spec.action}
    if spec.category:
        out["category"] = spec.category
    return out


_LIST_TABLE = Tables(
    (Field("path", Text(), required=True), Field("format", Choice(LIST_FORMATS), required=True),
     Field("action", Choice(LIST_ACTIONS), default="deny"),
     Field("name", Text(empty_is_none=True)), Field("category", Text(empty_is_none=True))),
    _list_spec, "path, format, action, name, category", _list_table)


@dataclass(frozen=True)
class UpstreamConfig:
    """Where Unbound gets its answers."""

    mode: str = key(Choice(UPSTREAM_MODES), "recurse",
                    "`recurse` from the root, or `forward` to `servers`")
    servers: tuple[Upstream, ...] = key(
        Each(server, "ADDRESS[@PORT][#TLS-NAME]", unique=False, uses=("tls",)), [],
        "forwarding servers (port 53, or 853 with `tls`); always reachable")
    tls: bool = key(Boolean(), False, "DNS-over-TLS to the servers (each needs `#TLS-NAME`)")
    down_for: float = key(Duration(), "1m", "forward mode: how long Unbound avoids a server that "
                          "stopped answering before trying it again (its `infra-host-ttl`)",
                          check=c.between(5, 3600, "must be between 5s and 1h"))
    #: Always starts with 0.0.0.0 and ::, then the configured extras.
    sinkhole_addresses: tuple[IPAddress, ...] = key(
        Each(address, "addresses", always=ALWAYS_SINKHOLE), ["0.0.0.0", "::"],
        "answers containing these count as blocked (0.0.0.0 and :: always do)")

    CHECKS: ClassVar[Checks] = (c.forward_needs_servers, c.servers_only_when_forwarding,
                                c.tls_only_when_forwarding, c.tls_servers_are_named)


@dataclass(frozen=True)
class PolicyConfig:
    """Name policy.  Pattern and zone tuples hold canonical strings; the ``*_set`` fields are
    the same lists compiled (built on construction, excluded from equality and repr)."""

    allow: tuple[str, ...] = key(
        Each(normalize_pattern, "patterns"), [],
        "allowlist: the names answered; denylist: exceptions to `deny`. Patterns: `name`, "
        "`*.name` (one label below), `**.name` (any depth below), `*`")
    deny: tuple[str, ...] = key(
        Each(normalize_pattern, "patterns"), [],
        "denylist: the names blocked; allowlist: exceptions carved out of `allow`")
    deny_networks: tuple[IPNetwork, ...] = key(
        Each(network, "networks (CIDR or address)"), [],
        "answered addresses in these are never granted")
    blocked_answer: str = key(Choice(BLOCKED_ANSWERS), "nxdomain",
                              "what a blocked name gets: NXDOMAIN (with SOA), 0.0.0.0/::, REFUSED")
    require_dnssec: tuple[str, ...] = key(
        Each(normalize_zone, "zones"), [], "zones whose answers grant only when DNSSEC-secure")
    local_zones: tuple[str, ...] = key(
        Each(normalize_zone, "zones"), [], "zones allowed to answer private/loopback addresses")
    rebinding_guard: bool = key(Boolean(), True,
                                "refuse private/loopback/link-local answers for other names")
    rebinding_allow: tuple[str, ...] = key(
        Each(normalize_pattern, "patterns"), [], "patterns exempt from the rebinding guard")
    nat64_prefixes: tuple[IPNetwork, ...] = key(
        Each(nat64_prefix, "IPv6 prefixes /32, /40, /48, /56, /64 or /96"), [],
        "local NAT64 prefixes: their addresses are judged as the IPv4 they embed")
    lists: tuple[ListSpec, ...] = key(
        _LIST_TABLE, [],
        "`[[policy.lists]]` tables: `path` (a file or a directory of files), `format` "
        "(`hosts`, `domains`, `adblock`, `rpz`), `action` (`deny`, or `allow`: extends "
        "`allow`), optional `name` and `category` (see *Blocklists*)")
    lists_check_interval: float = key(
        Duration(), "5s", "how often the resolver stats the list files and reloads changed ones",
        check=c.zero_or_between(1, 3600, "must be 0 (no reload without a restart) or between "
                                "1s and 1h"))
    lists_max_entries: int = key(Integer(1, 1 << 26), 2_000_000,
                                 "entries of all lists together; more are refused and counted "
                                 "(bounds memory: ~32 bytes each)", unit="entries")
    lists_state: str = key(Text(), "/var/lib/nettrust/lists",
                           "where `nettrust lists update` keeps what it last saw, to report "
                           "added and removed entries", check=c.absolute_path())
    canary_names: bool = key(Boolean(), True,
                             "answer use-application-dns.net, mask.icloud.com and "
                             "mask-h2.icloud.com NXDOMAIN: browsers and OSes keep their own "
                             "encrypted DNS off")
    allow_set: PatternSet = field(init=False, repr=False, compare=False)
    deny_set: PatternSet = field(init=False, repr=False, compare=False)
    rebinding_allow_set: PatternSet = field(init=False, repr=False, compare=False)
    require_dnssec_set: ZoneSet = field(init=False, repr=False, compare=False)
    local_zones_set: ZoneSet = field(init=False, repr=False, compare=False)

    CHECKS: ClassVar[Checks] = (c.list_names_unique,)

    def __post_init__(self) -> None:
        for name in ("allow", "deny", "rebinding_allow"):
            object.__setattr__(self, f"{name}_set", PatternSet(getattr(self, name)))
        for name in ("require_dnssec", "local_zones"):
            object.__setattr__(self, f"{name}_set", ZoneSet(getattr(self, name)))


@dataclass(frozen=True)
class ReachableConfig:
    """Destinations always reachable, whatever DNS said."""

    hosts: tuple[IPAddress, ...] = key(Each(address, "addresses"), [], "always reachable")
    networks: tuple[IPNetwork, ...] = key(Each(network, "networks (CIDR or address)"), [],
                                          "always reachable")
    private: bool = key(Boolean(), False, "RFC 1918, CGNAT, link-local, ULA always reachable")

    @property
    def effective_networks(self) -> tuple[IPNetwork, ...]:
        """``networks``, plus :data:`PRIVATE_NETWORKS` when ``private`` is set."""
        return self.networks + (PRIVATE_NETWORKS if self.private else ())


_MIN_TTL_WHY = ("must be at least 1s: a grant must outlive the connection it lets through (and "
                "a zero timeout would make a firewall element permanent)")


@dataclass(frozen=True)
class GrantsConfig:
    """How long an answered address stays open, in seconds: the answer's TTL clamped to
    ``[min_ttl, max_ttl]``, plus ``grace``."""

    min_ttl: float = key(Duration(), "30s", "floor for short TTLs; grant = clamp(TTL) + grace",
                         check=c.at_least(1, _MIN_TTL_WHY))
    max_ttl: float = key(Duration(), "1h", "ceiling for long TTLs",
                         check=c.at_most(MAX_TTL_LIMIT))
    grace: float = key(Duration(), "10s", "added to every grant",
                       check=c.at_most(MAX_TTL_LIMIT))
    #: Further addresses of a name's answers are refused until some of its grants lapse.
    max_per_name: int = key(Integer(1, 65536), 64,
                            "addresses one name may hold granted at once (CDN rotation)")
    #: When the set fills, the grants nearest to expiry are revoked (nettrust_core.grants.caps).
    max_per_set: int = key(Integer(16, 1 << 26), 262144,
                           "grants one resolver process holds per IP version (the kernel `size` of "
                           "each of its grant sets); above 95 % the largest domains' nearest "
                           "expiries are revoked", unit="elements")
    max_per_domain: int = key(
        Integer(1, 1 << 26), 4096,
        "addresses the names of one registrable domain may hold granted at once")
    max_per_client: int = key(Integer(0, 1 << 26), 0,
                              "addresses one client's answers may hold granted at once (0: no cap)")
    verify_interval: float = key(
        Duration(), "2s", "ruleset and grant check: a flushed or deleted ruleset is rebuilt and "
        "re-granted within this",
        check=c.zero_or_between(0.1, 3600, "must be 0 (off) or between 100ms and 1h"))

    CHECKS: ClassVar[Checks] = (c.min_ttl_within_max_ttl,)


@dataclass(frozen=True)
class FirewallConfig:
    backends: tuple[str, ...] = key(
        Each(one_of(FIREWALL_BACKENDS),
             "backend names (" + ", ".join(f'"{n}"' for n in FIREWALL_BACKENDS) + ")",
             unique=False), ["nftables"],
        "the firewall backends; each gets every grant, and one failing fails the answer closed",
        check=(c.not_empty(FIREWALL_BACKENDS), c.no_repeats()))
    table: str = key(Text(), "nettrust", "the `inet` table NetTrust owns and rebuilds",
                     check=c.matches(r"[A-Za-z][A-Za-z0-9_]{0,62}", "nftables table name",
                                     "{value!r} is not a usable nftables table name: 1 to 64 "
                                     "letters, digits and '_', not starting with a digit"))
    priority: int = key(Priority(), 0, "priority of NetTrust's chains; lower runs earlier")
    action: str = key(Choice(ACTIONS), "reject",
                      "for traffic nobody was granted: `reject` (fails fast) or `drop`")
    enforcement: str = key(Choice(ENFORCEMENTS), "enforce",
                           "`enforce`, or `audit`: nothing is refused; what would be is logged "
                           "(NFLOG), counted and reported as \"would refuse\"")
    hooks: tuple[str, ...] = key(Each(one_of(HOOKS), 'hooks ("output", "forward")', unique=False),
                                 ["output"], "traffic filtered; add `\"forward\"` on a gateway",
                                 check=(c.not_empty(HOOKS), c.no_repeats()))
    resolver_user: str | None = key(
        Text(empty_is_none=True), "unbound",
        "this user may reach port 53/853 anywhere (recursion); `\"\"` for none",
        check=c.matches(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?", "user name",
                        "{value!r} is not a user name (\"\" for no resolver exemption)"))
    allow_dhcp: bool = key(Boolean(), True, "let DHCP and DHCPv6 through")
    allow_icmpv6_nd: bool = key(Boolean(), True,
                                "let ICMPv6 neighbour discovery and router advertisements through")
    on_exit: str = key(Choice(EXIT_MODES), "keep",
                       "on stop: `keep` (fail closed), `drop-grants`, or `remove` (egress open)")
    #: Each learns its index from $NETTRUST_INSTANCE (see nettrust_core.ruleset.instance_from_env).
    instances: int = key(Integer(1, MAX_INSTANCES), 1,
                         "Unbound processes sharing port 53, each with `NETTRUST_INSTANCE` and "
                         "its own grant sets (see *Using every core*)")
    resolver_cgroup: str | None = key(
        Text(empty_is_none=True, convert=cgroup_path), "",
        "the resolver's cgroup v2: its exemption then also needs a socket made inside it")
    lan_interfaces: tuple[str, ...] = key(Each(interface, "interface names"), [],
                                          "forward hook: grants apply to packets entering here")
    lan_networks: tuple[IPNetwork, ...] = key(Each(network, "networks (CIDR or address)"), [],
                                              "forward hook: grants apply to packets from here")
    dhcp_servers: tuple[IPAddress, ...] = key(Each(address, "addresses"), [],
                                              "DHCP servers the client may renew with by unicast")
    namespaces: tuple[str, ...] = key(
        Each(str, "namespace names, paths or globs"), [],
        'other network namespaces to protect (the `"namespaces"` backend; names under '
        "/run/netns, /proc/PID/ns/net paths, globs)")
    namespace_allow: tuple[NamespaceRule, ...] = key(
        Each(namespace_rule, '"NAMESPACE PATTERN" entries'), [],
        "per-namespace policy: a namespace listed here is granted only names matching its patterns")

    CHECKS: ClassVar[Checks] = (c.forward_needs_lan_side, c.resolver_cgroup_needs_user,
                                c.namespaces_need_backend)


@dataclass(frozen=True)
class LifecycleConfig:
    """Grant liveness (conntrack), unauthorized-attempt detection and periodic counters."""

    liveness: bool = key(Boolean(), True, "renew grants that carry a live connection (conntrack)")
    check_interval: float = key(
        Duration(), "10s", "how often conntrack is asked",
        check=c.at_least(1, "must be at least 1s (each check dumps NetTrust's conntrack entries)"))
    max_lifetime: float = key(Duration(), "24h",
                              "renewals stop this long after the last answer",
                              check=c.at_most(30 * 86400))
    unauthorized: bool = key(Boolean(), True, "report refused attempts (NFLOG) as events")
    log_group: int = key(Integer(1, 65535), 20052, "the NFLOG group the refusing rule logs to")
    log_rate: int = key(Integer(1, 100000), 20, "refused attempts logged, at most",
                        unit="per second")
    strikes: int = key(Integer(0, 1000000), 0,
                       "refused attempts that make a `strike` event (0: off)", unit="per minute")
    strike_drop_dns: bool = key(Boolean(), False,
                                "a local user struck by `strikes` loses its DNS and DoT for "
                                "`gateway.strike_penalty` (never root or the resolver's user)")
    report_interval: float = key(Duration(), "10s", "how often counters go to the agent",
                                 check=c.at_least(1, "must be at least 1s"))
    terminate_unauthorized: bool = key(
        Boolean(), False, "delete tracked connections no grant allows (found at start and on "
        "policy changes; always reported) from conntrack")


@dataclass(frozen=True)
class LogConfig:
    level: str = key(Choice(LOG_LEVELS), "info", "`debug` logs one line per decision")
    file: str | None = key(Text(empty_is_none=True), "", "log file; `\"\"`: Unbound's own log",
                           check=c.absolute_path(" (\"\" logs to Unbound's log)"))


@dataclass(frozen=True)
class Config:
    """The whole configuration.  Its own keys are the file's [general] section."""

    path: str = "<defaults>"
    mode: str = key(Choice(MODES), "denylist",
                    "`denylist`: all but `policy.deny` (minus `allow` exceptions); "
                    "`allowlist`: only `policy.allow` (minus `deny` carve-outs)")
    upstream: UpstreamConfig = section(UpstreamConfig)
    policy: PolicyConfig = section(PolicyConfig)
    local: LocalConfig = section(LocalConfig)
    ptr: PtrConfig = section(PtrConfig)
    reachable: ReachableConfig = section(ReachableConfig)
    grants: GrantsConfig = section(GrantsConfig)
    firewall: FirewallConfig = section(FirewallConfig)
    gateway: GatewayConfig = section(GatewayConfig)
    ebpf: EbpfConfig = section(EbpfConfig)
    lifecycle: LifecycleConfig = section(LifecycleConfig)
    log: LogConfig = section(LogConfig)
    stats: StatsConfig = section(StatsConfig)
    metrics: MetricsConfig = section(MetricsConfig)
    alerts: AlertsConfig = section(AlertsConfig)
    recording: RecordingConfig = section(RecordingConfig)
    web: WebConfig = section(WebConfig)
    dot: DotConfig = section(DotConfig)
    resolv_conf: ResolvConfConfig = section(ResolvConfConfig)
    fleet: FleetConfig = section(FleetConfig)
    #: The text it was parsed from, for :meth:`line_of`; not part of the value.
    source: SourceMap | None = field(default=None, repr=False, compare=False)

    def line_of(self, key: str) -> int | None:
        """The line where ``key`` (``"firewall.resolver_user"``, ``"policy.allow[3]"``) is
        written, else where its table is, else None: for errors found after loading."""
        return None if self.source is None else self.source.line(parse_path(key))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The effective configuration, shaped like the file and made of TOML/JSON types only.

        Every key is present; written out as TOML it loads back to an equal Config.
        """
        return effective(self, SECTIONS)


#: Every section of the file, in order, with its declared keys.
SECTIONS = sections_of(Config, "general")
#: Every section and its keys; anything else in a file is refused.
SCHEMA: dict[str, tuple[str, ...]] = {s.name: tuple(k.name for k in s.keys) for s in SECTIONS}

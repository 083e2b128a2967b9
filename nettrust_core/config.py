"""NetTrust's configuration: one TOML file, validated completely when it is loaded.

:func:`load_config` / :func:`parse_config` return a frozen :class:`Config` or raise
:class:`~nettrust_core.errors.ConfigError` naming the file, the dotted key (``policy.allow[3]``,
``grants.min_ttl``) and the line where that key or array element is written.  Every key has a
default, so an empty file is a valid denylist configuration.  Unknown sections and keys are
refused (with the closest known key suggested): a typo must not silently fall back to a default
in a firewall.

Values are converted once, here: durations to float seconds, addresses and networks to
``ipaddress`` objects, names and patterns to their canonical form, and pattern lists also to
compiled :class:`~nettrust_core.patterns.PatternSet` / :class:`~nettrust_core.patterns.ZoneSet`
matchers (``policy.allow_set`` ...), so nothing downstream re-parses or recompiles.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Callable, Iterable, TypeVar

from .config_locate import Path, SourceMap, format_path, parse_path
from .durations import format_duration, parse_duration
from .errors import ConfigError
from .firewall.base import MAX_INSTANCES, IPAddress, IPNetwork
from .networks import PRIVATE, SINKHOLES
from .patterns import PatternSet, ZoneSet, normalize_name, normalize_pattern, normalize_zone

T = TypeVar("T")

MODES = ("denylist", "allowlist")
UPSTREAM_MODES = ("recurse", "forward")
BLOCKED_ANSWERS = ("nxdomain", "sinkhole", "refused")
FIREWALL_BACKENDS = ("nftables",)
ACTIONS = ("reject", "drop")
HOOKS = ("output", "forward")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: firewall.on_exit: what stopping Unbound leaves in the kernel.
EXIT_MODES = ("keep", "drop-grants", "remove")
#: Keys that were replaced: reading one is an error that says what to write instead.
REPLACED_KEYS = {
    ("firewall", "keep_ruleset_on_exit"): 'on_exit = "remove" (was keep_ruleset_on_exit = false) '
                                          'or on_exit = "keep" (the default)',
    ("firewall", "keep_grants_on_exit"): 'on_exit = "drop-grants" (was keep_grants_on_exit = false) '
                                         'or on_exit = "keep" (the default)',
}

#: nftables' standard priority names (inet family, filter-type chains).
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
PRIORITY_MIN, PRIORITY_MAX = -400, 400
#: Longest grant a configuration may ask for (grants.max_ttl).
MAX_TTL_LIMIT = 7 * 86400.0
DNS_PORT, DNS_OVER_TLS_PORT = 53, 853

#: Addresses that always mean "blocked" in an answer; ``upstream.sinkhole_addresses`` adds more.
ALWAYS_SINKHOLE: tuple[IPAddress, ...] = tuple(sorted(SINKHOLES, key=lambda a: a.version))
#: What ``reachable.private = true`` opens: RFC 1918, CGNAT, link-local and unique-local.
PRIVATE_NETWORKS: tuple[IPNetwork, ...] = PRIVATE

_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_PRIORITY = re.compile(r"(raw|mangle|filter|security)\s*(?:([+-])\s*([0-9]+))?")


# -- the configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class Upstream:
    """One forwarding server."""

    address: IPAddress
    port: int = DNS_PORT
    tls_name: str | None = None

    def __str__(self) -> str:
        """Unbound's ``forward-addr`` syntax, which is also ours: ``addr@port#tls-name``."""
        return f"{self.address}@{self.port}" + (f"#{self.tls_name}" if self.tls_name else "")


@dataclass(frozen=True)
class UpstreamConfig:
    mode: str = "recurse"
    servers: tuple[Upstream, ...] = ()
    tls: bool = False
    #: Always starts with 0.0.0.0 and ::, then the configured extras.
    sinkhole_addresses: tuple[IPAddress, ...] = ALWAYS_SINKHOLE


@dataclass(frozen=True)
class PolicyConfig:
    """Name policy.  Pattern and zone tuples hold canonical strings; the ``*_set`` fields are
    the same lists compiled (built on construction, excluded from equality and repr)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    deny_networks: tuple[IPNetwork, ...] = ()
    blocked_answer: str = "nxdomain"
    require_dnssec: tuple[str, ...] = ()
    local_zones: tuple[str, ...] = ()
    rebinding_guard: bool = True
    rebinding_allow: tuple[str, ...] = ()
    #: Local NAT64 prefixes (RFC 6052 lengths): an address under one is judged as the IPv4
    #: address it embeds, like the well-known 64:ff9b::/96 (see nettrust_core.networks).
    nat64_prefixes: tuple[IPNetwork, ...] = ()
    allow_set: PatternSet = field(init=False, repr=False, compare=False)
    deny_set: PatternSet = field(init=False, repr=False, compare=False)
    rebinding_allow_set: PatternSet = field(init=False, repr=False, compare=False)
    require_dnssec_set: ZoneSet = field(init=False, repr=False, compare=False)
    local_zones_set: ZoneSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("allow", "deny", "rebinding_allow"):
            object.__setattr__(self, f"{name}_set", PatternSet(getattr(self, name)))
        for name in ("require_dnssec", "local_zones"):
            object.__setattr__(self, f"{name}_set", ZoneSet(getattr(self, name)))


@dataclass(frozen=True)
class ReachableConfig:
    """Destinations always reachable, whatever DNS said."""

    hosts: tuple[IPAddress, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    private: bool = False

    @property
    def effective_networks(self) -> tuple[IPNetwork, ...]:
        """``networks``, plus :data:`PRIVATE_NETWORKS` when ``private`` is set."""
        return self.networks + (PRIVATE_NETWORKS if self.private else ())


@dataclass(frozen=True)
class GrantsConfig:
    """How long an answered address stays open, in seconds: the answer's TTL clamped to
    ``[min_ttl, max_ttl]``, plus ``grace``."""

    min_ttl: float = 30.0
    max_ttl: float = 3600.0
    grace: float = 10.0
    #: At most this many addresses granted for one name at once (CDNs rotating addresses);
    #: further addresses of its answers are refused until some of its grants lapse.
    max_per_name: int = 64
    #: Elements per grant set (the kernel set's ``size``); when it fills, the grants nearest to
    #: expiry are revoked to make room (see nettrust_core.lifecycle.caps).
    max_per_set: int = 262144
    #: At most this many addresses granted at once for the names of one registrable domain
    #: (public-suffix list), and for one client: a flooding zone or client cannot fill the set.
    max_per_domain: int = 4096
    max_per_client: int = 0                 # 0: no cap per client (eviction is still fair)
    #: How often the resolver checks that its table, chains and grant sets are still in the
    #: kernel (rebuilt and re-granted within this time after a flush or a deletion); 0: never.
    verify_interval: float = 2.0


@dataclass(frozen=True)
class FirewallConfig:
    backend: str = "nftables"
    table: str = "nettrust"
    priority: int = 0                       # names such as "filter-10" are resolved to numbers
    action: str = "reject"
    hooks: tuple[str, ...] = ("output",)
    resolver_user: str | None = "unbound"   # None: no exemption for the resolver
    allow_dhcp: bool = True
    allow_icmpv6_nd: bool = True
    on_exit: str = "keep"                   # one of EXIT_MODES
    #: Unbound processes sharing the port (so-reuseport), each with its own grant sets; each
    #: learns its index from $NETTRUST_INSTANCE (see nettrust_core.ruleset.instance_from_env).
    instances: int = 1


@dataclass(frozen=True)
class LifecycleConfig:
    """Grant liveness (conntrack), unauthorized-attempt detection and periodic counters."""

    liveness: bool = True                   # renew grants while conntrack shows a connection
    check_interval: float = 10.0            # how often conntrack is asked
    max_lifetime: float = 86400.0           # renewals stop this long after the last answer
    unauthorized: bool = True               # log refused attempts (NFLOG) and report them
    log_group: int = 20052                  # the NFLOG group the refusing rule logs to
    log_rate: int = 20                      # logged attempts per second, at most
    strikes: int = 0                        # attempts per minute that make a "strike" event
    report_interval: float = 10.0           # how often counters go to the agent


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    file: str | None = None                 # None: Unbound's own log


@dataclass(frozen=True)
class StatsConfig:
    """Statistics: Unbound streams answers (dnstap) and decisions to the agent, which stores them."""

    enabled: bool = False
    database: str = "/var/lib/nettrust/stats.db"
    report_socket: str = "/run/nettrust/agent.sock"
    dnstap_socket: str = "/run/nettrust/dnstap.sock"
    retention: float = 30 * 86400.0         # seconds; older rows are deleted
    retention_rows: int = 1_000_000         # newest queries kept at most
    flush_interval: float = 1.0             # the writer stores a batch this often
    queue_size: int = 100_000               # records waiting for the writer; more are dropped
    cache_hits: bool = True                 # dnstap: every client response, cache hits included


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True                    # served by the agent while stats are enabled
    address: str = "127.0.0.1"
    port: int = 9531


@dataclass(frozen=True)
class AlertsConfig:
    """Rules the agent checks on the statistics, and where notifications go."""

    webhook: str | None = None              # http(s) URL: POST of the alert as JSON
    syslog: bool = False
    command: str | None = None              # run with the alert as JSON on stdin
    window: float = 600.0                   # at most one notification per rule and key per window
    blocked_per_minute: int = 0             # 0: off
    first_seen_domain: bool = False
    unauthorized: bool = True
    backend_errors: bool = True


@dataclass(frozen=True)
class Config:
    path: str = "<defaults>"
    mode: str = "denylist"                  # general.mode
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reachable: ReachableConfig = field(default_factory=ReachableConfig)
    grants: GrantsConfig = field(default_factory=GrantsConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    log: LogConfig = field(default_factory=LogConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
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
        up, pol, reach, fw = self.upstream, self.policy, self.reachable, self.firewall
        lc = self.lifecycle
        return {
            "general": {"mode": self.mode},
            "upstream": {"mode": up.mode, "servers": [str(s) for s in up.servers],
                         "tls": up.tls,
                         "sinkhole_addresses": [str(a) for a in up.sinkhole_addresses]},
            "policy": {"allow": list(pol.allow), "deny": list(pol.deny),
                       "deny_networks": [str(n) for n in pol.deny_networks],
                       "blocked_answer": pol.blocked_answer,
                       "require_dnssec": list(pol.require_dnssec),
                       "local_zones": list(pol.local_zones),
                       "rebinding_guard": pol.rebinding_guard,
                       "rebinding_allow": list(pol.rebinding_allow),
                       "nat64_prefixes": [str(n) for n in pol.nat64_prefixes]},
            "reachable": {"hosts": [str(h) for h in reach.hosts],
                          "networks": [str(n) for n in reach.networks],
                          "private": reach.private},
            "grants": {"min_ttl": format_duration(self.grants.min_ttl),
                       "max_ttl": format_duration(self.grants.max_ttl),
                       "grace": format_duration(self.grants.grace),
                       "max_per_name": self.grants.max_per_name,
                       "max_per_set": self.grants.max_per_set,
                       "max_per_domain": self.grants.max_per_domain,
                       "max_per_client": self.grants.max_per_client,
                       "verify_interval": format_duration(self.grants.verify_interval)},
            "firewall": {"backend": fw.backend, "table": fw.table, "priority": fw.priority,
                         "action": fw.action, "hooks": list(fw.hooks),
                         "resolver_user": fw.resolver_user or "",
                         "allow_dhcp": fw.allow_dhcp, "allow_icmpv6_nd": fw.allow_icmpv6_nd,
                         "on_exit": fw.on_exit, "instances": fw.instances},
            "lifecycle": {"liveness": lc.liveness,
                          "check_interval": format_duration(lc.check_interval),
                          "max_lifetime": format_duration(lc.max_lifetime),
                          "unauthorized": lc.unauthorized, "log_group": lc.log_group,
                          "log_rate": lc.log_rate, "strikes": lc.strikes,
                          "report_interval": format_duration(lc.report_interval)},
            "log": {"level": self.log.level, "file": self.log.file or ""},
            "stats": {"enabled": self.stats.enabled, "database": self.stats.database,
                      "report_socket": self.stats.report_socket,
                      "dnstap_socket": self.stats.dnstap_socket,
                      "retention": format_duration(self.stats.retention),
                      "retention_rows": self.stats.retention_rows,
                      "flush_interval": format_duration(self.stats.flush_interval),
                      "queue_size": self.stats.queue_size,
                      "cache_hits": self.stats.cache_hits},
            "metrics": {"enabled": self.metrics.enabled,
                        "listen": _host_port(self.metrics.address, self.metrics.port)},
            "alerts": {"webhook": self.alerts.webhook or "", "syslog": self.alerts.syslog,
                       "command": self.alerts.command or "",
                       "window": format_duration(self.alerts.window),
                       "blocked_per_minute": self.alerts.blocked_per_minute,
                       "first_seen_domain": self.alerts.first_seen_domain,
                       "unauthorized": self.alerts.unauthorized,
                       "backend_errors": self.alerts.backend_errors},
        }


# -- loading ----------------------------------------------------------------------------------

#: Every section and its keys; anything else in a file is refused.
SCHEMA: dict[str, tuple[str, ...]] = {
    "general": ("mode",),
    "upstream": ("mode", "servers", "tls", "sinkhole_addresses"),
    "policy": ("allow", "deny", "deny_networks", "blocked_answer", "require_dnssec",
               "local_zones", "rebinding_guard", "rebinding_allow", "nat64_prefixes"),
    "reachable": ("hosts", "networks", "private"),
    "grants": ("min_ttl", "max_ttl", "grace", "max_per_name", "max_per_set", "max_per_domain",
               "max_per_client", "verify_interval"),
    "firewall": ("backend", "table", "priority", "action", "hooks", "resolver_user",
                 "allow_dhcp", "allow_icmpv6_nd", "on_exit", "instances"),
    "lifecycle": ("liveness", "check_interval", "max_lifetime", "unauthorized", "log_group",
                  "log_rate", "strikes", "report_interval"),
    "log": ("level", "file"),
    "stats": ("enabled", "database", "report_socket", "dnstap_socket", "retention",
              "retention_rows", "flush_interval", "queue_size", "cache_hits"),
    "metrics": ("enabled", "listen"),
    "alerts": ("webhook", "syslog", "command", "window", "blocked_per_minute",
               "first_seen_domain", "unauthorized", "backend_errors"),
}


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at ``path``."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror or exc}",
                          file=name) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=name,
                          line=data.count(b"\n", 0, exc.start) + 1) from None
    return parse_config(text, path=name)


def parse_config(text: str, path: str = "<string>") -> Config:
    """Validate the configuration in ``text``; ``path`` is only used to name it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, path) from None
    source = SourceMap(text)
    doc = _Document(path, raw, source)
    for section, value in raw.items():
        if section not in SCHEMA:
            raise doc.error(_unknown_section(section, value), (section,))
    return Config(
        path=path,
        mode=_Section(doc, "general").choice("mode", MODES, "denylist"),
        upstream=_upstream(_Section(doc, "upstream")),
        policy=_policy(_Section(doc, "policy")),
        reachable=_reachable(_Section(doc, "reachable")),
        grants=_grants(_Section(doc, "grants")),
        firewall=_firewall(_Section(doc, "firewall")),
        lifecycle=_lifecycle(_Section(doc, "lifecycle")),
        log=_log(_Section(doc, "log")),
        stats=_stats(_Section(doc, "stats")),
        metrics=_metrics(_Section(doc, "metrics")),
        alerts=_alerts(_Section(doc, "alerts")),
        source=source,
    )


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: str) -> ConfigError:
    message = str(exc)
    line = None
    match = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if match:
        line = int(match.group(1))
        message = f"{message[:match.start()]} (column {match.group(2)})"
    elif message.endswith(" (at end of document)"):
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        message = message[:-len(" (at end of document)")] + " (at the end of the file)"
    return ConfigError(f"TOML syntax error: {message}", file=path, line=line)


# -- sections ---------------------------------------------------------------------------------

def _upstream(s: _Section) -> UpstreamConfig:
    mode = s.choice("mode", UPSTREAM_MODES, "recurse")
    tls = s.boolean("tls", False)
    servers = s.each("servers", lambda text: _server(text, tls))
    if mode == "forward" and not servers:
        raise s.error('mode = "forward" needs at least one server in upstream.servers',
                      "servers", fallback="mode")
    if mode == "recurse" and servers:
        raise s.error('servers are only used with mode = "forward"; set it, or remove the '
                      "servers to resolve from the root", "servers")
    if mode == "recurse" and tls:
        raise s.error('tls = true needs mode = "forward": a recursive resolver cannot use TLS '
                      "towards authoritative servers", "tls")
    for index, server in enumerate(servers if tls else ()):
        if server.tls_name is None:
            raise s.error(f"tls = true needs the server's TLS name to authenticate it, like "
                          f'"{server.address}@{DNS_OVER_TLS_PORT}#dns.example.net"',
                          "servers", index)
    extra = s.each("sinkhole_addresses", _address)
    return UpstreamConfig(mode=mode, servers=servers, tls=tls,
                          sinkhole_addresses=_unique(ALWAYS_SINKHOLE + extra))


def _policy(s: _Section) -> PolicyConfig:
    return PolicyConfig(
        allow=_unique(s.each("allow", normalize_pattern)),
        deny=_unique(s.each("deny", normalize_pattern)),
        deny_networks=_unique(s.each("deny_networks", _network)),
        blocked_answer=s.choice("blocked_answer", BLOCKED_ANSWERS, "nxdomain"),
        require_dnssec=_unique(s.each("require_dnssec", normalize_zone)),
        local_zones=_unique(s.each("local_zones", normalize_zone)),
        rebinding_guard=s.boolean("rebinding_guard", True),
        rebinding_allow=_unique(s.each("rebinding_allow", normalize_pattern)),
        nat64_prefixes=_unique(s.each("nat64_prefixes", _nat64_prefix)),
    )


def _nat64_prefix(text: str) -> IPNetwork:
    from .networks import parse_nat64_prefix
    network = _network(text)
    parse_nat64_prefix(network)         # ValueError: blamed on this element
    return network


def _reachable(s: _Section) -> ReachableConfig:
    return ReachableConfig(hosts=_unique(s.each("hosts", _address)),
                           networks=_unique(s.each("networks", _network)),
                           private=s.boolean("private", False))


def _grants(s: _Section) -> GrantsConfig:
    min_ttl, max_ttl = s.duration("min_ttl", "30s"), s.duration("max_ttl", "1h")
    grace = s.duration("grace", "10s")
    limit = format_duration(MAX_TTL_LIMIT)
    if max_ttl > MAX_TTL_LIMIT:
        raise s.error(f"{format_duration(max_ttl)} is too long; at most {limit}", "max_ttl")
    if grace > MAX_TTL_LIMIT:
        raise s.error(f"{format_duration(grace)} is too long; at most {limit}", "grace")
    if min_ttl < 1:
        raise s.error("must be at least 1s: a grant must outlive the connection it lets "
                      "through (and a zero timeout would make a firewall element permanent)",
                      "min_ttl")
    if min_ttl > max_ttl:
        raise s.error(f"min_ttl ({format_duration(min_ttl)}) is longer than max_ttl "
                      f"({format_duration(max_ttl)})", "min_ttl")
    return GrantsConfig(min_ttl=min_ttl, max_ttl=max_ttl, grace=grace,
                        max_per_name=s.integer("max_per_name", 64, 1, 65536),
                        max_per_set=s.integer("max_per_set", 262144, 16, 1 << 26),
                        max_per_domain=s.integer("max_per_domain", 4096, 1, 1 << 26),
                        max_per_client=s.integer("max_per_client", 0, 0, 1 << 26),
                        verify_interval=_verify_interval(s))


def _verify_interval(s: _Section) -> float:
    value = s.duration("verify_interval", "2s")
    if value and not 0.1 <= value <= 3600:
        raise s.error("must be 0 (off) or between 100ms and 1h", "verify_interval")
    return value


def _firewall(s: _Section) -> FirewallConfig:
    table = s.string("table", "nettrust")
    if not _TABLE_NAME.fullmatch(table):
        raise s.error(f"{table!r} is not a usable nftables table name: 1 to 64 letters, "
                      "digits and '_', not starting with a digit", "table")
    hooks = s.each("hooks", str, default=("output",))
    if not hooks:
        raise s.error(f"needs at least one of {_choices(HOOKS)}", "hooks")
    for index, hook in enumerate(hooks):
        if hook not in HOOKS:
            raise s.error(f"expected one of {_choices(HOOKS)}, found {_show(hook)}", "hooks",
                          index)
        if hook in hooks[:index]:
            raise s.error(f"{_show(hook)} is listed twice", "hooks", index)
    user = s.string("resolver_user", "unbound")
    if user and not _USER_NAME.fullmatch(user):
        raise s.error(f"{user!r} is not a user name (\"\" for no resolver exemption)",
                      "resolver_user")
    return FirewallConfig(
        backend=s.choice("backend", FIREWALL_BACKENDS, "nftables"),
        table=table,
        priority=_priority(s),
        action=s.choice("action", ACTIONS, "reject"),
        hooks=hooks,
        resolver_user=user or None,
        allow_dhcp=s.boolean("allow_dhcp", True),
        allow_icmpv6_nd=s.boolean("allow_icmpv6_nd", True),
        on_exit=s.choice("on_exit", EXIT_MODES, "keep"),
        instances=s.integer("instances", 1, 1, MAX_INSTANCES),
    )


def _lifecycle(s: _Section) -> LifecycleConfig:
    interval = s.duration("check_interval", "10s")
    if interval < 1:
        raise s.error("must be at least 1s (each check dumps NetTrust's conntrack entries)",
                      "check_interval")
    report = s.duration("report_interval", "10s")
    if report < 1:
        raise s.error("must be at least 1s", "report_interval")
    lifetime = s.duration("max_lifetime", "24h")
    if lifetime > 30 * 86400:
        raise s.error(f"{format_duration(lifetime)} is too long; at most 30d", "max_lifetime")
    return LifecycleConfig(
        liveness=s.boolean("liveness", True), check_interval=interval, max_lifetime=lifetime,
        unauthorized=s.boolean("unauthorized", True),
        log_group=s.integer("log_group", 20052, 1, 65535),
        log_rate=s.integer("log_rate", 20, 1, 100000),
        strikes=s.integer("strikes", 0, 0, 1000000), report_interval=report)


def _priority(s: _Section) -> int:
    value = s.get("priority", 0)
    expected = (f"an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, or a name ("
                f"{_choices(PRIORITY_NAMES)}) optionally with an offset like \"filter-10\"")
    if isinstance(value, str):
        match = _PRIORITY.fullmatch(value.strip())
        if match is None:
            raise s.error(f"expected {expected}, found {_show(value)}", "priority")
        name, sign, offset = match.groups()
        number = PRIORITY_NAMES[name] + (int(offset) * (-1 if sign == "-" else 1) if sign else 0)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise s.error(_wrong_type(expected, value), "priority")
    if not PRIORITY_MIN <= number <= PRIORITY_MAX:
        raise s.error(f"{_show(value)} is {number}, outside {PRIORITY_MIN}..{PRIORITY_MAX}",
                      "priority")
    return number


def _stats(s: _Section) -> StatsConfig:
    paths = {key: s.string(key, getattr(StatsConfig, key))
             for key in ("database", "report_socket", "dnstap_socket")}
    for key, path in paths.items():
        if not os.path.isabs(path):
            raise s.error(f"{path!r} is not an absolute path", key)
    retention = s.duration("retention", "30d")
    flush = s.duration("flush_interval", "1s")
    if not 0.01 <= flush <= 60:
        raise s.error("must be between 10ms and 1m", "flush_interval")
    return StatsConfig(enabled=s.boolean("enabled", False), **paths, retention=retention,
                       retention_rows=_count(s, "retention_rows", 1_000_000, 1000),
                       flush_interval=flush, queue_size=_count(s, "queue_size", 100_000, 100),
                       cache_hits=s.boolean("cache_hits", True))


def _metrics(s: _Section) -> MetricsConfig:
    listen = s.string("listen", "127.0.0.1:9531")
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 1 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise s.error(f"expected ADDRESS:PORT like \"127.0.0.1:9531\" or \"[::1]:9531\", "
                      f"found {_show(listen)}", "listen") from None
    return MetricsConfig(enabled=s.boolean("enabled", True), address=host, port=number)


def _alerts(s: _Section) -> AlertsConfig:
    webhook = s.string("webhook", "")
    if webhook and not re.match(r"https?://[^/\s]+", webhook):
        raise s.error(f"{webhook!r} is not an http:// or https:// URL", "webhook")
    return AlertsConfig(webhook=webhook or None, syslog=s.boolean("syslog", False),
                        command=s.string("command", "") or None,
                        window=s.duration("window", "10m"),
                        blocked_per_minute=_count(s, "blocked_per_minute", 0, 0),
                        first_seen_domain=s.boolean("first_seen_domain", False),
                        unauthorized=s.boolean("unauthorized", True),
                        backend_errors=s.boolean("backend_errors", True))


def _count(s: _Section, key: str, default: int, minimum: int) -> int:
    value = s.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise s.error(_wrong_type("an integer", value), key)
    if value < minimum:
        raise s.error(f"must be at least {minimum}", key)
    return value


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _log(s: _Section) -> LogConfig:
    level = s.choice("level", LOG_LEVELS, "info")
    file = s.string("file", "")
    if file and not os.path.isabs(file):
        raise s.error(f"{file!r} is not an absolute path (\"\" logs to Unbound's log)", "file")
    return LogConfig(level=level, file=file or None)


# -- values -----------------------------------------------------------------------------------

def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _network(text: str) -> IPNetwork:
    """A CIDR network, or a single address as a /32 or /128."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an address or a network (CIDR like 192.0.2.0/24 or "
                         "2001:db8::/32)") from None
    raise ValueError(f"{text!r} has host bits set; did you mean {str(network)!r}?")


def _server(text: str, tls: bool) -> Upstream:
    """``addr[@port][#tls-name]``, as Unbound's forward-addr."""
    shape = 'expected ADDRESS[@PORT][#TLS-NAME], like "9.9.9.9" or "2620:fe::fe@853#dns.quad9.net"'
    rest, hash_sign, tls_name = text.partition("#")
    address, at_sign, port_text = rest.partition("@")
    try:
        parsed = _address(address)
    except ValueError as exc:
        raise ValueError(f"invalid server {text!r}: {exc}; {shape}") from None
    port = DNS_OVER_TLS_PORT if tls else DNS_PORT
    if at_sign:
        if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise ValueError(f"invalid server {text!r}: port {port_text!r} is not a number from "
                             f"1 to 65535; {shape}")
        port = int(port_text)
    if hash_sign:
        try:
            tls_name = normalize_name(tls_name)
        except ValueError as exc:
            raise ValueError(f"invalid server {text!r}: TLS name: {exc}") from None
    return Upstream(address=parsed, port=port, tls_name=tls_name or None)


def _unique(items: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(items))


# -- reading sections with errors that point at the right line ----------------------------------

class _Document:
    def __init__(self, file: str, raw: dict[str, Any], source: SourceMap) -> None:
        self.file, self.raw, self.source = file, raw, source

    def error(self, message: str, path: Path, fallback: Path | None = None) -> ConfigError:
        paths = (path,) if fallback is None else (path, fallback)
        return ConfigError(message, file=self.file, key=format_path(path),
                           line=self.source.line(*paths))


class _Section:
    """One table of the file, read through typed getters that blame the right key and line."""

    def __init__(self, doc: _Document, name: str) -> None:
        self.doc, self.name, self.keys = doc, name, SCHEMA[name]
        data = doc.raw.get(name, {})
        if not isinstance(data, dict):
            raise doc.error(_wrong_type("a table", data), (name,))
        self.data: dict[str, Any] = data
        for key in data:
            if key not in self.keys:
                raise doc.error(_unknown_key(name, key), (name, key))

    def error(self, message: str, key: str, index: int | None = None, *,
              fallback: str | None = None) -> ConfigError:
        path: Path = (self.name, key) if index is None else (self.name, key, index)
        return self.doc.error(message, path, None if fallback is None else (self.name, fallback))

    def get(self, key: str, default: Any) -> Any:
        return self.data.get(key, default)

    def _typed(self, key: str, default: T, kind: type, expected: str) -> T:
        value = self.data.get(key, default)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(_wrong_type(expected, value), key)
        return value

    def string(self, key: str, default: str) -> str:
        return self._typed(key, default, str, "a string")

    def boolean(self, key: str, default: bool) -> bool:
        return self._typed(key, default, bool, "a boolean (true or false)")

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._typed(key, default, int, f"an integer from {low} to {high}")
        if not low <= value <= high:
            raise self.error(f"{value} is outside {low}..{high}", key)
        return value

    def choice(self, key: str, choices: Iterable[str], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f" (did you mean {_show(close[0])}?)" if close else ""
            raise self.error(f"expected one of {_choices(choices)}, found {_show(value)}{hint}",
                             key)
        return value

    def duration(self, key: str, default: str) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.error(_wrong_type('a duration (seconds, or a string like "30s", "5m", '
                                         '"1h30m")', value), key)
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(str(exc), key) from None

    def each(self, key: str, convert: Callable[[str], T], default: Iterable[str] = ()
             ) -> tuple[T, ...]:
        """An array of strings, each converted; a bad element is blamed on its own line."""
        values = self.data.get(key, list(default))
        if not isinstance(values, list):
            raise self.error(_wrong_type("an array of strings", values), key)
        out = []
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise self.error(_wrong_type("a string", value), key, index)
            try:
                out.append(convert(value))
            except ValueError as exc:
                raise self.error(str(exc), key, index) from None
        return tuple(out)


def _unknown_section(name: str, value: Any) -> str:
    if not isinstance(value, dict):
        homes = [f"[{section}]" for section, keys in SCHEMA.items() if name in keys]
        if homes:
            return (f"{name!r} must be written under {' or '.join(homes)}, not before the "
                    "first section header")
        return f"unknown key {name!r}; the file holds only the sections {_sections()}"
    close = difflib.get_close_matches(name, SCHEMA, n=1)
    hint = f" (did you mean [{close[0]}]?)" if close else ""
    return f"unknown section [{name}]{hint}; known sections: {_sections()}"


def _unknown_key(section: str, key: str) -> str:
    if (section, key) in REPLACED_KEYS:
        return f"{key!r} was replaced: write {REPLACED_KEYS[section, key]}"
    known = SCHEMA[section]
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        hint = f" (did you mean {close[0]!r}?)"
    else:
        homes = [f"[{other}]" for other, keys in SCHEMA.items() if key in keys]
        hint = f" ({key!r} belongs in {' or '.join(homes)})" if homes else ""
    return f"unknown key {key!r} in [{section}]{hint}; known keys: {', '.join(known)}"


def _sections() -> str:
    return ", ".join(f"[{name}]" for name in SCHEMA)


def _choices(choices: Iterable[str]) -> str:
    return ", ".join(_show(c) for c in choices)


def _wrong_type(expected: str, value: Any) -> str:
    return f"expected {expected}, found {_type_name(value)} ({_show(value)})"


def _type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (list, "an array"), (dict, "a table"),
                       (datetime, "a date-time"), (date, "a date"), (time, "a time")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _show(value: Any, limit: int = 40) -> str:
    """A value as it would be written in TOML, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (datetime, date, time)):
        text = value.isoformat()
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."

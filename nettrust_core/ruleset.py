"""From the config to the firewall: the ruleset spec and the backend that programs it."""

from __future__ import annotations

import os
import pwd
from typing import TYPE_CHECKING

from .errors import ConfigError
from .firewall.base import RulesetSpec
from .firewall.fanout import FanOut
from .firewall.registry import UnknownBackend, backend_class

if TYPE_CHECKING:
    from .config import Config
    from .firewall.base import IPAddress
    from collections.abc import Mapping

#: The conntrack mark bit set on connections that grants let through (see lifecycle.liveness).
CT_MARK = 0x40000000
#: Which of the firewall.instances resolver processes this one is (0, 1, …).
INSTANCE_ENV = "NETTRUST_INSTANCE"


def ruleset_spec(config: Config) -> RulesetSpec:
    fw, lc = config.firewall, config.lifecycle
    hosts = list(config.reachable.hosts)
    # Forward mode: the upstreams are reachable for the resolver only, on their DNS port only
    # (not static hosts: those are open to every process and port).
    upstreams = (tuple(dict.fromkeys((u.address, u.port) for u in config.upstream.servers))
                 if config.upstream.mode == "forward" else ())
    networks = list(config.reachable.effective_networks)
    off_host = [u for u in upstreams if not u[0].is_loopback]
    if off_host and not fw.resolver_user:
        raise ConfigError(f'resolver_user = "" exempts nobody, so Unbound could not reach its '
                          f"upstream {off_host[0][0]} (only the resolver's user may reach DNS "
                          "servers); name the user Unbound runs as",
                          file=config.path, key="firewall.resolver_user",
                          line=config.line_of("firewall.resolver_user"))
    gw = config.gateway
    for name, value in (("per_client", gw.per_client), ("open_networks", gw.open_networks)):
        if value and "forward" not in fw.hooks:
            raise ConfigError(f'gateway.{name} acts on forwarded traffic: add "forward" to '
                              "firewall.hooks (and the LAN side: firewall.lan_interfaces or "
                              "lan_networks)", file=config.path, key=f"gateway.{name}",
                              line=config.line_of(f"gateway.{name}"))
    if gw.groups and (len(gw.groups) != fw.instances or gw.per_client
                      or "forward" not in fw.hooks):
        raise ConfigError(f"{len(gw.groups)} [[gateway.groups]]: group k is resolver instance k, "
                          f"so set firewall.instances = {len(gw.groups)} (it is {fw.instances}), "
                          'hooks with "forward", and per_client = false (groups replace it)',
                          file=config.path, key="gateway.groups", line=config.line_of("gateway.groups"))
    uid = None
    if fw.resolver_user:
        try:
            uid = pwd.getpwnam(fw.resolver_user).pw_uid
        except KeyError:
            raise ConfigError(f"no such user {fw.resolver_user!r} (the user Unbound runs as)",
                              file=config.path, key="firewall.resolver_user",
                              line=config.line_of("firewall.resolver_user")) from None
    return RulesetSpec(table=fw.table, priority=fw.priority, action=fw.action, hooks=tuple(fw.hooks),
                       static_hosts=tuple(dict.fromkeys(hosts)), static_networks=tuple(dict.fromkeys(networks)),
                       resolver_uid=uid, resolver_cgroup=fw.resolver_cgroup, upstreams=upstreams,
                       dns_servers=(tuple(dict.fromkeys(config.fleet.masters))
                                    if config.fleet.role == "follower" else ()),
                       own_services=_redis_service(config),
                       allow_icmpv6_nd=fw.allow_icmpv6_nd, allow_dhcp=fw.allow_dhcp,
                       dhcp_servers=fw.dhcp_servers, lan_interfaces=fw.lan_interfaces,
                       lan_networks=fw.lan_networks,
                       ct_mark=CT_MARK if lc.liveness else None,
                       log_group=lc.log_group if lc.unauthorized else None, log_rate=lc.log_rate,
                       set_size=config.grants.max_per_set, instances=config.firewall.instances,
                       audit=fw.enforcement == "audit",
                       per_client=gw.per_client, open_networks=gw.open_networks,
                       client_prefix6=gw.ipv6_client_prefix, client_mac=gw.per_client and gw.client_key == "mac",
                       groups=tuple(g.networks for g in gw.groups),
                       drop_input=gw.drop_input, management_ports=gw.management_ports,
                       management_networks=gw.management_networks,
                       strikes=bool(gw.strike_threshold or gw.strike_dns_rate),
                       strike_rate=gw.strike_dns_rate, strike_penalty=gw.strike_penalty,
                       uid_strikes=bool(lc.strike_drop_dns and lc.strikes and lc.unauthorized))


def _redis_service(config: Config) -> tuple[tuple[IPAddress, int], ...]:
    """A fleet node's Redis, when ``fleet.redis_url`` names an address: this host reaches it
    (output only; a name must be opened by [reachable] instead)."""
    import ipaddress
    from urllib.parse import urlsplit
    f = config.fleet
    if not f.redis_url or (f.role == "standalone" and f.tracker == "memory"):
        return ()
    parts = urlsplit(f.redis_url)
    try:
        return ((ipaddress.ip_address(parts.hostname or ""), parts.port or 6379),)
    except ValueError:
        return ()


def instance_from_env(config: Config, environ: Mapping[str, str] = os.environ) -> int:
    """This resolver process's index among ``firewall.instances``, from $NETTRUST_INSTANCE.

    With one instance the variable may be absent (0).  With several it is required: two
    processes writing the same sets would shorten each other's grants.
    """
    count = config.firewall.instances
    text = environ.get(INSTANCE_ENV, "").strip()
    if not text and count == 1:
        return 0
    if text.isascii() and text.isdigit() and int(text) < count:
        return int(text)
    found = f"it is {text!r}" if text else "it is not set"
    raise ConfigError(f"${INSTANCE_ENV} must be one of 0..{count - 1} for each of the "
                      f"firewall.instances = {count} Unbound processes ({found}); the systemd "
                      f"template unit unbound@.service sets it from its instance name",
                      file=config.path, key="firewall.instances",
                      line=config.line_of("firewall.instances"))


def make_backend(config: Config, instance: int = 0) -> FanOut:
    """The configured backends (``firewall.backends``), driven as one through a
    :class:`~nettrust_core.firewall.fanout.FanOut`; each imported only now, by name.

    An unknown name, or one that cannot be loaded on this host, fails loudly with the valid
    names (a requested backend never silently becomes another).  ``instance``: which resolver
    process writes through them (see :func:`instance_from_env`).
    """
    spec = ruleset_spec(config)
    backends = []
    names = list(config.firewall.backends)
    if config.firewall.namespaces and "namespaces" not in names:
        names.append("namespaces")          # listing namespaces is asking to protect them
    for index, name in enumerate(names):
        where = f"firewall.backends[{index}]"
        try:
            cls = backend_class(name)
        except UnknownBackend as exc:
            raise ConfigError(exc.message, file=config.path, key=where,
                              line=config.line_of(where)) from None
        backends.append((name, cls.from_config(spec, config, instance)))
    return FanOut(backends)

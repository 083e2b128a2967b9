"""From the config to the firewall: the ruleset spec and the backend that programs it."""

from __future__ import annotations

import pwd

from .config import FIREWALL_BACKENDS
from .errors import ConfigError
from .firewall.base import RulesetSpec


def ruleset_spec(config) -> RulesetSpec:
    fw = config.firewall
    hosts = list(config.reachable.hosts)
    if config.upstream.mode == "forward":
        # The resolver's own upstreams are always reachable (for everyone, like NetTrust).
        hosts += [u.address for u in config.upstream.servers]
    networks = list(config.reachable.effective_networks)
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
                       resolver_uid=uid, allow_icmpv6_nd=fw.allow_icmpv6_nd, allow_dhcp=fw.allow_dhcp)


def make_backend(config):
    """The configured backend, imported lazily; an unknown name fails loudly with the valid ones."""
    name = config.firewall.backend
    spec = ruleset_spec(config)
    if name == "nftables":
        from .firewall.nftables import NftablesBackend
        return NftablesBackend(spec)
    raise ConfigError(f"unknown firewall backend {name!r}; valid: {', '.join(FIREWALL_BACKENDS)}",
                      file=config.path, key="firewall.backend", line=config.line_of("firewall.backend"))

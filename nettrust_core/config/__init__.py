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

Each key is declared once, as a field of its section's dataclass in :mod:`.model`; the modules:

- :mod:`.model`     the sections and their keys (what the code reads; the one declaration)
- :mod:`.declare`   ``key()``/``section()`` and what is derived from them (schema, ``to_dict``)
- :mod:`.kinds`     how a value is read, written back and described; :mod:`.values` converters
- :mod:`.checks`    key checks and the sections' cross-key checks
- :mod:`.load`      reading a file; :mod:`.locate` finds lines; :mod:`.messages` words errors
- :mod:`.reference` the README reference and the annotated file's keys, from the declaration
"""

from ..errors import ConfigError
from .kinds import PRIORITY_MAX, PRIORITY_MIN, PRIORITY_NAMES, HostPort
from .load import load_config, parse_config
from .model import (ACTIONS, ALWAYS_SINKHOLE, BLOCKED_ANSWERS, EXIT_MODES, FIREWALL_BACKENDS,
                    HOOKS, LOG_LEVELS, MAX_TTL_LIMIT, MODES, PRIVATE_NETWORKS, REPLACED_KEYS,
                    SCHEMA, SECTIONS, UPSTREAM_MODES, Config, FirewallConfig, GrantsConfig,
                    LifecycleConfig, LogConfig, PolicyConfig, ReachableConfig, UpstreamConfig)
from .model_agent import AlertsConfig, MetricsConfig, StatsConfig, WebConfig
from .values import DNS_OVER_TLS_PORT, DNS_PORT, Upstream

__all__ = [
    "load_config", "parse_config", "ConfigError", "Config", "UpstreamConfig", "Upstream", "PolicyConfig",
    "ReachableConfig", "GrantsConfig", "WebConfig", "FirewallConfig", "LifecycleConfig", "LogConfig",
    "StatsConfig", "MetricsConfig", "AlertsConfig", "HostPort", "SCHEMA", "SECTIONS",
    "REPLACED_KEYS", "MODES", "UPSTREAM_MODES", "BLOCKED_ANSWERS", "FIREWALL_BACKENDS", "ACTIONS",
    "HOOKS", "LOG_LEVELS", "EXIT_MODES", "PRIORITY_NAMES", "PRIORITY_MIN", "PRIORITY_MAX",
    "MAX_TTL_LIMIT", "DNS_PORT", "DNS_OVER_TLS_PORT", "ALWAYS_SINKHOLE", "PRIVATE_NETWORKS",
]

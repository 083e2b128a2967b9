"""Can the agent's alerts get out?  ``nettrust check`` asks before the first alert is lost.

The agent runs behind the same firewall as everything else on the host: a webhook on another
host is reached only when its name is answered (and so granted) by the resolver under the
policy, or when its address is listed under ``[reachable]``; the same holds for a remote syslog
server that the local syslog daemon forwards the alerts to (``alerts.syslog``).  An address
literal is never granted by DNS.  This module only reads the configuration (and the syslog
daemon's files): it sends nothing and resolves nothing.
"""

from __future__ import annotations

import glob
import ipaddress
import re
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import Config

#: Where rsyslog (Debian's default) is configured.
RSYSLOG_FILES = ("/etc/rsyslog.conf", "/etc/rsyslog.d/*.conf")
_LEGACY_FORWARD = re.compile(r"^\s*[^#\s]+\s+@@?(?:\([^)]*\))?(\[[^\]]+\]|[^\s:;]+)")
_ACTION_TARGET = re.compile(r"""\btarget\s*=\s*["']([^"']+)["']""")


def syslog_targets(patterns: Iterable[str] = RSYSLOG_FILES) -> list[str]:
    """Hosts rsyslog forwards to (``*.* @@host:514``, ``action(... target="host")``)."""
    hosts = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                text = open(path, encoding="utf-8", errors="replace").read()
            except OSError:
                continue
            for line in text.splitlines():
                line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
                m = _LEGACY_FORWARD.match(line)
                hosts += [m[1].strip("[]")] if m else []
                hosts += _ACTION_TARGET.findall(line)
    return list(dict.fromkeys(hosts))


def problems(config: Config, allowed: Callable[[str], bool],
             syslog_files: Iterable[str] = RSYSLOG_FILES) -> list[str]:
    """One warning per alert target the firewall would not let the agent reach.

    ``allowed(name)``: whether the resolver's policy answers ``name`` (and so grants it).
    """
    if not config.stats.enabled:
        return []                       # no agent, no alerts
    targets: list[tuple[str, str]] = []
    if config.alerts.webhook:
        host = urlsplit(config.alerts.webhook).hostname
        if host:
            targets.append(("alerts.webhook", host))
    if config.alerts.syslog:
        targets += [("alerts.syslog (forwarded by rsyslog)", h)
                    for h in syslog_targets(syslog_files)]
    out = []
    for key, host in targets:
        why = _unreachable(config, host, allowed)
        if why:
            out.append(f"{key}: {host} {why}; alerts sent there would be refused by the "
                       "firewall")
    return out


def _unreachable(config: Config, host: str, allowed: Callable[[str], bool]) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower().rstrip(".") in ("localhost", "localhost.localdomain") or \
                host.lower().endswith(".localhost"):
            return None
        if allowed(host):
            return None
        return ("is a name the resolver's policy does not answer (blocked); allow it, or list "
                "its addresses under [reachable]")
    if address.is_loopback:
        return None
    reachable = config.reachable
    if address in reachable.hosts or any(address in net for net in reachable.effective_networks
                                         if net.version == address.version):
        return None
    return ("is an address literal: no DNS answer ever grants it; list it under [reachable] "
            "hosts (or use a name the resolver answers)")

"""Which local answers the administrator declared, as opposed to RPZ feeds and auth-zones.

Unbound hands every answer it makes without recursion to the ``reply_local`` callback: the
administrator's ``local-data``, but also RPZ rewrites and ``auth-zone`` answers.  Only the first
may skip the rebinding guard and ``require_dnssec`` (the administrator wrote the address); an
RPZ feed or a transferred zone is as untrusted as any upstream.  The callback cannot tell them
apart, so the module asks :class:`LocalNames`, built from Unbound's own ``local-data`` and
``local-zone`` settings, whether the query name is one the administrator declared.

The administrator declares such names in ``nettrust.toml`` (``[[local.names]]`` and
``local.hosts_file``); :func:`local_data_lines` renders them for ``nettrust unbound-conf``, so
the one list Unbound answers from is also the one this module reads back.  Their answers reach
the ``reply_local`` callback every time (local-data is never cached) and are judged like any
other: the name policy, ``deny_networks`` and the never-grantable ranges apply; only the
rebinding guard and ``require_dnssec`` are skipped (the administrator wrote the address).
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .answer import normalize
from .errors import ConfigError, InvalidValue
from .patterns import normalize_name

if TYPE_CHECKING:
    from .config import Config

_DIRECTIVE = re.compile(r'^\s*(local-data|local-zone|include|include-toplevel)\s*:\s*(.*?)\s*$')
MAX_INCLUDES = 256


class LocalNames:
    def __init__(self, names=(), redirect_zones=()) -> None:
        self.names = frozenset(names)
        self.redirect_zones = frozenset(redirect_zones)

    @classmethod
    def from_config(cls, local_data, local_zones=()) -> "LocalNames":
        """``local_data``: Unbound's ``local-data`` strings ("name [ttl] [class] type rdata");
        ``local_zones``: (name, type) pairs; a ``redirect`` zone answers every name below it
        with its apex's data, so those names count as declared too."""
        names = set()
        for line in local_data:
            owner = (line or "").strip().split(None, 1)
            if owner:
                names.add(normalize(owner[0].strip('"')))
        redirect = {normalize(z) for z, kind in local_zones if (kind or "").strip() == "redirect"}
        return cls(names, redirect & names)

    @classmethod
    def from_conf_file(cls, conf: str) -> "LocalNames":
        """Read ``local-data``/``local-zone`` from an unbound.conf and the files it includes.

        Unbound frees its parsed local-data before modules start and ``unbound-checkconf -o``
        cannot print it, so the module reads the files itself.  What it misses is not
        declared: those answers are judged in full (fail closed), never trusted.
        """
        data, zones = [], []
        pending, seen = [conf], set[str]()
        while pending and len(seen) < MAX_INCLUDES:
            path = pending.pop(0)
            if path in seen:
                continue
            seen.add(path)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = f.readlines()
            except OSError:
                continue
            for line in lines:
                m = _DIRECTIVE.match(_strip_comment(line))
                if not m:
                    continue
                key, value = m.groups()
                if key.startswith("include"):
                    pattern = _unquote(value)
                    if not os.path.isabs(pattern):
                        pattern = os.path.join(os.path.dirname(path), pattern)
                    pending.extend(sorted(glob.glob(pattern)))
                elif key == "local-data":
                    data.append(_unquote(value))
                else:
                    parts = value.split()
                    if len(parts) >= 2:
                        zones.append((_unquote(parts[0]), _unquote(parts[1])))
        return cls.from_config(data, zones)

    def declared(self, name: str) -> bool:
        if name in self.names:
            return True
        if self.redirect_zones:
            labels = name.split(".")
            return any(".".join(labels[i:]) in self.redirect_zones for i in range(len(labels)))
        return False


@dataclass(frozen=True)
class LocalName:
    """One ``[[local.names]]`` table: a name, its addresses and their TTL in seconds."""

    name: str
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    ttl: float = 300.0


def local_name(name: str, addresses, ttl: float = 300.0) -> LocalName:
    """Build (and check) a :class:`LocalName`; raises ``InvalidValue``."""
    try:
        canonical = normalize_name(name)
    except ValueError as exc:
        raise InvalidValue(f"name {name!r}: {exc}") from None
    if not addresses:
        raise InvalidValue(f"{canonical}: addresses must name at least one address")
    if not 1 <= ttl <= 86400:
        raise InvalidValue(f"{canonical}: ttl must be between 1s and 1d")
    return LocalName(canonical, tuple(dict.fromkeys(addresses)), float(ttl))


def read_hosts(path: str, ttl: float) -> list[LocalName]:
    """A hosts-format file (``ADDRESS NAME [ALIAS…]``, ``#`` comments) as local names, in order.

    A bad line raises :class:`ConfigError` naming the file and line: the include is never
    rendered from a file half understood.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the hosts file: {exc}", file=path,
                          key="local.hosts_file") from None
    found: dict[str, list] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ConfigError(f"{line.strip()!r}: expected ADDRESS NAME [ALIAS...]", file=path,
                              line=number)
        try:
            addr = ipaddress.ip_address(fields[0].split("%", 1)[0])
        except ValueError:
            raise ConfigError(f"{fields[0]!r} is not an IPv4 or IPv6 address", file=path,
                              line=number) from None
        for written in fields[1:]:
            try:
                name = normalize_name(written)
            except ValueError as exc:
                raise ConfigError(f"name {written!r}: {exc}", file=path, line=number) from None
            addrs = found.setdefault(name, [])
            if addr not in addrs:
                addrs.append(addr)
    return [LocalName(name, tuple(addrs), float(ttl)) for name, addrs in found.items()]


def configured_names(config: Config) -> list[LocalName]:
    """``[[local.names]]`` then the hosts file's names (read now)."""
    local = config.local
    names = list(local.names)
    if local.hosts_file:
        names += read_hosts(local.hosts_file, local.hosts_ttl)
    return names


def local_data_lines(config: Config) -> list[str]:
    """The ``local-data`` lines (server: clause) for the configured local names.

    Without a ``local-zone`` around it, Unbound answers such a name from these records and
    gives NODATA for its other types; names beside it are resolved as usual.
    """
    out = []
    for n in configured_names(config):
        ttl = max(1, int(n.ttl))
        for addr in n.addresses:
            rtype = "A" if addr.version == 4 else "AAAA"
            out.append(f'    local-data: "{n.name}. {ttl} IN {rtype} {addr}"')
    return out


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str:
    """Drop a '#' comment that is not inside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[:i]
    return line

"""The sections of resolver features beside the answer path: ``[local]`` names, ``[ptr]``
reverse-lookup confirmation, DNS-over-TLS for clients (``[dot]``, served by HAProxy in front of
Unbound) and the resolv.conf guard (``[resolv_conf]``).  Declared here to keep :mod:`.model`
short (see its docstring for how a key is declared); :class:`.model.Config` holds them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..durations import format_duration
from ..errors import InvalidValue
from ..local_names import LocalName, local_name
from . import checks as c
from .declare import key
from .kinds import Boolean, Duration, Each, Field, HostPort, Integer, Tables, Text
from .values import address


def _loopback(text: str) -> str:
    if not address(text).is_loopback:
        raise InvalidValue(f"{text!r} is not a loopback address (the confirmer asks the "
                           "resolver on this host)")
    return text


_LOCAL_TABLE = Tables(
    (Field("name", Text(), required=True), Field("addresses", Each(address, "addresses"),
                                                required=True),
     Field("ttl", Duration(), default=300.0)),
    local_name, "name, addresses, ttl",
    lambda n: {"name": n.name, "addresses": [str(a) for a in n.addresses],
               "ttl": format_duration(n.ttl)})


@dataclass(frozen=True)
class LocalConfig:
    """Names this resolver answers itself (Unbound ``local-data``), judged like any answer."""

    names: tuple[LocalName, ...] = key(
        _LOCAL_TABLE, [],
        "`[[local.names]]` tables: `name`, `addresses` (IPv4 and IPv6), optional `ttl` "
        "(default 5m); rendered by `nettrust unbound-conf` (see *Local names*)")
    hosts_file: str | None = key(
        Text(empty_is_none=True), "",
        "a hosts-format file (ADDRESS NAME [ALIAS…]) rendered as local-data too; `\"\"`: none",
        check=c.absolute_path(" (\"\" for none)"))
    hosts_ttl: float = key(Duration(), "5m", "TTL of the names from `hosts_file`",
                           check=c.between(1, 86400, "must be between 1s and 1d"))


@dataclass(frozen=True)
class PtrConfig:
    """Reverse lookups (see *Reverse lookups*): a PTR answer itself never opens anything."""

    confirm: bool = key(Boolean(), False,
                        "open the address of a PTR answer when a forward lookup of a name it "
                        "names (allowed by policy) returns that address")
    resolver: str = key(Text(convert=_loopback), "127.0.0.1",
                              "the running resolver the confirmer asks (loopback, port 53)")
    max_names: int = key(Integer(1, 8), 2, "PTR target names confirmed per answer, at most",
                         unit="names")


def listen_address(text: str) -> HostPort:
    """``ADDRESS:PORT`` (IPv6 in brackets) -> HostPort; ValueError names what was expected."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise InvalidValue(f'expected ADDRESS:PORT like "0.0.0.0:853" or "[::]:853", found '
                           f'{text!r}')
    return HostPort(host, number)


@dataclass(frozen=True)
class DotConfig:
    """DNS-over-TLS for clients with client certificates: HAProxy terminates TLS (``verify
    required`` against ``client_ca``) and hands each connection to Unbound's PROXY v2 port on
    127.0.0.1, so grants, strikes and statistics see the real client."""

    enabled: bool = key(Boolean(), False,
                        "`nettrust unbound-conf` adds Unbound's PROXY v2 listener on "
                        "127.0.0.1:`proxy_port`; `nettrust haproxy-conf` renders the front end")
    listen: tuple[HostPort, ...] = key(Each(listen_address, "ADDRESS:PORT"),
                                       ["0.0.0.0:853", "[::]:853"],
                                       "where HAProxy accepts DoT from clients")
    certificate: str = key(Text(), "/etc/nettrust/dot/server.pem",
                           "HAProxy's server certificate chain and its key, one PEM file",
                           check=c.absolute_path())
    client_ca: str = key(Text(), "/etc/nettrust/dot/client-ca.pem",
                         "the CA a client certificate must chain to (`verify required`)",
                         check=c.absolute_path())
    crl: str | None = key(Text(empty_is_none=True), "",
                          "revoked client certificates (PEM CRL of `client_ca`); `\"\"`: none",
                          check=c.absolute_path(" (\"\" for no CRL)"))
    proxy_port: int = key(Integer(1, 65535), 8853,
                          "Unbound's PROXY v2 port, bound on 127.0.0.1 only: whoever reaches it "
                          "may claim any client address")
    haproxy_config: str = key(Text(), "/etc/nettrust/haproxy-dot.cfg",
                              "where the unit from `nettrust haproxy-conf --unit` writes "
                              "HAProxy's configuration", check=c.absolute_path())


@dataclass(frozen=True)
class ResolvConfConfig:
    """The resolv.conf guard: a resolver thread watching the file (inotify on its directory and
    on every symlink target's, plus a periodic re-check) for the host to stop pointing at the
    local resolver."""

    watch: bool = key(Boolean(), False,
                      "watch `path`: an event, the `resolv_conf_diverted` counter and a log line "
                      "when it stops naming only loopback resolvers")
    path: str = key(Text(), "/etc/resolv.conf", "the file watched (symlinks followed)",
                    check=c.absolute_path())
    revert: bool = key(Boolean(), False,
                       "rewrite `path` (atomically) to its last good contents, or to "
                       "`nameserver 127.0.0.1`; needs write access to its directory")
    check_interval: float = key(Duration(), "30s",
                                "periodic re-check besides inotify (missed events, remounts)",
                                check=c.between(1, 86400, "must be between 1s and 1d"))

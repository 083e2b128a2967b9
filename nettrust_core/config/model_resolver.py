"""The sections of resolver features beside the answer path: ``[local]`` names and ``[ptr]``
reverse-lookup confirmation (declared here to keep :mod:`.model` short; see its docstring for
how a key is declared)."""

from __future__ import annotations

from dataclasses import dataclass

from ..durations import format_duration
from ..errors import InvalidValue
from ..local_names import LocalName, local_name
from . import checks as c
from .declare import key
from .kinds import Boolean, Duration, Each, Field, Integer, Tables, Text
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

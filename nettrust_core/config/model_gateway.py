"""The ``[gateway]`` section (issue 13): declared like every section (see :mod:`.model`'s "how
to add a key"), kept apart so each module reads in one sitting.  :class:`.model.Config` holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidValue
from ..firewall.base import IPAddress, IPNetwork
from . import checks as c
from .declare import key
from .kinds import Boolean, Choice, Duration, Each, Field, Integer, Tables
from .values import address, network, tcp_port

#: gateway.client_key: what a per-client grant is keyed by.
CLIENT_KEYS = ("address", "mac")


@dataclass(frozen=True)
class ClientGroup:
    """One ``[[gateway.groups]]`` table: a group of clients and its own resolver instance."""

    networks: tuple[IPNetwork, ...]
    listen: tuple[IPAddress, ...]


def _group(networks: tuple[IPNetwork, ...], listen: tuple[IPAddress, ...]) -> ClientGroup:
    if not networks:
        raise InvalidValue("a group needs at least one network (its clients)")
    if not listen:
        raise InvalidValue("a group needs at least one listen address (its resolver)")
    return ClientGroup(tuple(networks), tuple(listen))


def _group_table(g: ClientGroup) -> dict[str, Any]:
    return {"networks": [str(n) for n in g.networks], "listen": [str(a) for a in g.listen]}


_GROUP_TABLE = Tables(
    (Field("networks", Each(network, "networks (CIDR or address)"), required=True),
     Field("listen", Each(address, "addresses"), required=True)),
    _group, "networks, listen", _group_table)


@dataclass(frozen=True)
class GatewayConfig:
    """A gateway filtering the forward hook for the clients behind it (``firewall.hooks``
    includes ``"forward"``)."""

    per_client: bool = key(Boolean(), False,
                           "forward grants are per client: an answer opens its addresses only "
                           "for the clients that received it (cache hits included)")
    open_networks: tuple[IPNetwork, ...] = key(
        Each(network, "networks (CIDR or address)"), [],
        "forward hook: sources that may connect anywhere without a grant (still our DNS only)")
    client_key: str = key(Choice(CLIENT_KEYS), "address",
                          "with `per_client`: grants are keyed by the client's address, or by "
                          "its MAC (directly attached clients: one grant serves its IPv4, IPv6 "
                          "and privacy addresses)")
    ipv6_client_prefix: int = key(Integer(32, 128), 128,
                                  "with `per_client`: IPv6 clients are keyed by this prefix of "
                                  "their address (64: every privacy address of a host)")
    drop_input: bool = key(Boolean(), False,
                           "drop everything reaching this machine but established traffic, "
                           "loopback, DHCP, ICMPv6 ND, DNS/DoT from the LAN side and "
                           "`management_ports`")
    management_ports: tuple[int, ...] = key(Each(tcp_port, "TCP port numbers as strings"), [],
                                            "with `drop_input`: TCP ports of the gateway that "
                                            "stay reachable (e.g. `[\"22\"]`)")
    management_networks: tuple[IPNetwork, ...] = key(
        Each(network, "networks (CIDR or address)"), [],
        "who reaches `management_ports` (empty: the LAN side); never struck")
    strike_threshold: int = key(Integer(0, 1000000), 0,
                                "blocked or invalid queries within `strike_window` that make a "
                                "client lose its DNS for `strike_penalty` (0: off)")
    strike_window: float = key(Duration(), "1m", "the window `strike_threshold` counts in",
                               check=c.between(1, 86400, "must be between 1s and 1d"))
    strike_penalty: float = key(Duration(), "5m", "how long a struck client's DNS and DoT are "
                                "dropped", check=c.between(1, 7 * 86400, "must be between 1s and 7d"))
    strike_dns_rate: int = key(Integer(0, 1000000), 0,
                               "the kernel strikes a source sending more DNS packets than this "
                               "(0: off)", unit="per second")
    groups: tuple[ClientGroup, ...] = key(
        _GROUP_TABLE, [],
        "`[[gateway.groups]]` tables: `networks` (the group's clients) and `listen` (its "
        "resolver's addresses); group k is resolver instance k (`firewall.instances` = the "
        "number of groups) and its grants open only for its own networks (see *Groups*)")

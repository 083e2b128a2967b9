"""Address classes the policy needs: sinkholes, rebinding targets, always-reachable ranges."""

from __future__ import annotations

import ipaddress
from typing import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Answers made of these mean "blocked upstream" (Pi-hole, AdGuard, NextDNS… answer this way).
SINKHOLES: frozenset[IPAddress] = frozenset({ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")})

LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

#: ``reachable.private = true`` opens these (NetTrust's whitelistPrivate).
PRIVATE: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "100.64.0.0/10",                                    # carrier-grade NAT
    "169.254.0.0/16",                                   # IPv4 link-local
    "fc00::/7",                                         # unique local
    "fe80::/10",                                        # IPv6 link-local
))

#: A public name answering inside these is a DNS-rebinding attempt unless configured.
REBINDING_TARGETS: tuple[IPNetwork, ...] = PRIVATE + LOOPBACK + (ipaddress.ip_network("0.0.0.0/8"),)


class NetworkSet:
    """Membership of an address in a list of networks; an IPv4-mapped IPv6 address counts as IPv4.

    On the answer path (three lookups per granted address), so networks are kept as
    (prefix, mask, network) integer triples: one AND and compare each, no ``ipaddress`` calls.
    """

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        networks = tuple(networks)
        self._v4 = tuple((int(n.network_address), int(n.netmask), n) for n in networks if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask), n) for n in networks if n.version == 6)

    def match(self, address: IPAddress) -> IPNetwork | None:
        value = int(address)
        if address.version == 4:
            nets = self._v4
        elif value >> 32 == 0xFFFF:             # ::ffff:a.b.c.d, IPv4-mapped
            value &= 0xFFFFFFFF
            nets = self._v4
        else:
            nets = self._v6
        for prefix, mask, net in nets:
            if value & mask == prefix:
                return net
        return None

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

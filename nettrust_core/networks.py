"""Address classes the policy needs: sinkholes, rebinding targets, never-grantable ranges, and
the IPv4 address hidden inside IPv6 translation formats.

Three verdicts for an answered address (:meth:`AddressClasses.classify`):

* **never** — not a unicast destination of the internet: multicast, broadcast and 240/4,
  "this network" 0/8, site-local ``fec0::/10``, the discard prefix, ORCHID identifiers, SRv6
  SIDs, the rest of the reserved ``::/8``.  No configuration grants these.
* **local** — reaches this host or its networks (RFC 1918, CGN, link-local, loopback, ULA,
  IETF protocol assignments 192.0.0.0/24): refused by the rebinding guard unless the name is in
  a local zone or ``rebinding_allow``.
* **public** — anything else.

An IPv6 address in a translation format is judged as the IPv4 address it reaches: NAT64
(``64:ff9b::/96``, the configured ``policy.nat64_prefixes`` with their RFC 6052 layouts, and
the local-use ``64:ff9b:1::/48``: unconfigured, its layout and so its IPv4 are unknown, and it is
refused like a local address until its prefix is configured), 6to4 (``2002::/16``), IPv4-compatible ``::a.b.c.d``, SIIT
``::ffff:0:a.b.c.d``, IPv4-mapped ``::ffff:a.b.c.d`` and Teredo (``2001::/32``: the server and the
XOR-ed client address, both must pass).

Documentation (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20) and
benchmarking (198.18.0.0/15, 2001:2::/48) ranges stay grantable: nothing on the internet routes
them, so a grant opens nothing, and test networks (ours too) use them as their "internet".
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, Iterable

from .errors import InvalidValue

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*texts: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


#: Answers made of these mean "blocked upstream" (Pi-hole, AdGuard, NextDNS… answer this way).
SINKHOLES: frozenset[IPAddress] = frozenset({ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")})

LOOPBACK: tuple[IPNetwork, ...] = _nets("127.0.0.0/8", "::1/128")

#: ``reachable.private = true`` opens these (NetTrust's whitelistPrivate).
PRIVATE: tuple[IPNetwork, ...] = _nets(
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "100.64.0.0/10",                                    # carrier-grade NAT
    "169.254.0.0/16",                                   # IPv4 link-local
    "fc00::/7",                                         # unique local
    "fe80::/10",                                        # IPv6 link-local
)

#: A public name answering inside these is a DNS-rebinding attempt unless configured.
REBINDING_TARGETS: tuple[IPNetwork, ...] = PRIVATE + LOOPBACK + _nets(
    "192.0.0.0/24",                                     # IETF protocol assignments (RFC 6890)
)

#: Never granted, whatever the name: not a unicast destination on the internet.
NEVER_GRANTED: tuple[IPNetwork, ...] = _nets(
    "0.0.0.0/8",                                        # "this network": 0.x reaches the host itself
    "224.0.0.0/4",                                      # multicast
    "240.0.0.0/4",                                      # reserved, and 255.255.255.255 broadcast
    "192.88.99.0/24",                                   # deprecated 6to4 relay anycast (RFC 7526)
    "ff00::/8",                                         # multicast
    "fec0::/10",                                        # site-local (deprecated, RFC 3879)
    "100::/64",                                         # discard-only (RFC 6666)
    "2001:10::/28", "2001:20::/28",                     # ORCHID v1/v2 identifiers, not routable
    "5f00::/16",                                        # SRv6 SIDs (RFC 9602)
)

#: What is left of the reserved ``::/8`` once its IPv4 formats are taken out.
_RESERVED_V6 = ipaddress.ip_network("::/8")

#: NAT64 well-known prefix and the local-use block (RFC 6052, RFC 8215).
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")

NEVER, LOCAL, PUBLIC = "never", "local", "public"


class NetworkSet:
    """Membership of an address in a list of networks; an IPv4-mapped IPv6 address counts as IPv4.

    On the answer path (three lookups per granted address), so networks are kept as
    (prefix, mask, network) integer triples: one AND and compare each, no ``ipaddress`` calls.
    """

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        networks = tuple(networks)
        self._v4: tuple[tuple[int, int, IPNetwork], ...] = tuple((int(n.network_address), int(n.netmask), n) for n in networks if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask), n) for n in networks if n.version == 6)

    def match(self, address: IPAddress) -> IPNetwork | None:
        value = address_int(address)
        if isinstance(address, ipaddress.IPv4Address):
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

    def match_v4(self, value: int) -> IPNetwork | None:
        for prefix, mask, net in self._v4:
            if value & mask == prefix:
                return net
        return None

    def match_v6(self, value: int) -> IPNetwork | None:
        for prefix, mask, net in self._v6:
            if value & mask == prefix:
                return net
        return None

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)


# -- IPv4 embedded in IPv6 ----------------------------------------------------------------------
#: RFC 6052 §2.2: where the 32 IPv4 bits sit for each NAT64 prefix length, as (shift, bits)
#: pieces counted from the address's low end; bits 64..71 (the "u" octet) are skipped.
_RFC6052: dict[int, tuple[tuple[int, int], ...]] = {
    32: ((64, 32),),
    40: ((64, 24), (48, 8)),
    48: ((64, 16), (40, 16)),
    56: ((64, 8), (32, 24)),
    64: ((24, 32),),
    96: ((0, 32),),
}
NAT64_LENGTHS = tuple(_RFC6052)


def nat64_ipv4(value: int, length: int) -> int:
    """The IPv4 address (as int) embedded in ``value`` under a NAT64 prefix of ``length``."""
    out = 0
    for shift, bits in _RFC6052[length]:
        out = (out << bits) | ((value >> shift) & ((1 << bits) - 1))
    return out


def embedded_ipv4(value: int, nat64: tuple[tuple[int, int, int], ...] = ()) -> tuple[str, list[int]] | None:
    """(format, IPv4 addresses as ints) hidden in the IPv6 address ``value``, or None.

    ``nat64`` holds the configured local prefixes as (prefix, mask, length).  Teredo yields two
    addresses (server, client); the local-use NAT64 block, unless configured, yields none (its
    operator may use any RFC 6052 layout inside it, so the IPv4 cannot be known).
    """
    high96 = value >> 32
    low32 = value & 0xFFFFFFFF
    if high96 == 0xFFFF:
        return "IPv4-mapped", [low32]
    if high96 == 0xFFFF0000:
        return "SIIT", [low32]
    if high96 == 0:
        return "IPv4-compatible", [low32]
    for prefix, mask, length in nat64:
        if value & mask == prefix:
            return "NAT64", [nat64_ipv4(value, length)]
    if high96 == 0x0064FF9B0000000000000000:
        return "NAT64", [low32]
    if value >> 80 == 0x0064FF9B0001:
        return "NAT64 local-use", []        # layout unknown: see AddressClasses.classify
    if value >> 112 == 0x2002:
        return "6to4", [(value >> 80) & 0xFFFFFFFF]
    if value >> 96 == 0x20010000:
        return "Teredo", [(value >> 64) & 0xFFFFFFFF, low32 ^ 0xFFFFFFFF]
    return None


def parse_nat64_prefix(network: IPNetwork) -> tuple[int, int, int]:
    """A configured NAT64 prefix as (prefix, mask, length); ValueError if not an RFC 6052 one."""
    if network.version != 6 or network.prefixlen not in _RFC6052:
        raise InvalidValue(f"{network} is not an IPv6 prefix of length "
                           f"{', '.join(f'/{n}' for n in NAT64_LENGTHS)} (RFC 6052)")
    return int(network.network_address), int(network.netmask), network.prefixlen


class AddressClasses:
    """Classifies answered addresses: ``(NEVER | LOCAL | PUBLIC, the matching range or format)``.

    Pure integer work: for a plain public IPv4 address, two short loops of AND-and-compare.
    """

    def __init__(self, nat64_prefixes: Iterable[IPNetwork] = ()) -> None:
        self.never = NetworkSet(NEVER_GRANTED)
        self.local = NetworkSet(REBINDING_TARGETS)
        self.nat64 = tuple(parse_nat64_prefix(n) for n in nat64_prefixes)

    def _v4(self, value: int) -> tuple[str, IPNetwork | None]:
        net = self.never.match_v4(value)
        if net is not None:
            return NEVER, net
        net = self.local.match_v4(value)
        if net is not None:
            return LOCAL, net
        return PUBLIC, None

    def classify(self, address: IPAddress) -> tuple[str, str | None]:
        value = address_int(address)
        if isinstance(address, ipaddress.IPv4Address):
            kind, net = self._v4(value)
            return kind, (str(net) if net is not None else None)
        net = self.never.match_v6(value)
        if net is not None:
            return NEVER, str(net)
        net = self.local.match_v6(value)
        if net is not None:
            return LOCAL, str(net)
        inner = embedded_ipv4(value, self.nat64)
        if inner is None:
            if value >> 120 == 0:
                return NEVER, str(_RESERVED_V6)
            return PUBLIC, None
        fmt, v4s = inner
        if not v4s:
            return LOCAL, f"{NAT64_LOCAL_USE} (local-use NAT64, prefix not in policy.nat64_prefixes)"
        worst, why = PUBLIC, None
        for v4 in v4s:
            kind, net = self._v4(v4)
            if kind is NEVER or (kind is LOCAL and worst is PUBLIC):
                worst = kind
                why = f"{fmt} {ipaddress.IPv4Address(v4)} in {net}"
            if kind is NEVER:
                break
        return worst, why

    def embedded(self, address: IPAddress) -> list[ipaddress.IPv4Address]:
        """The IPv4 addresses ``address`` reaches through a translation format (may be empty)."""
        if isinstance(address, ipaddress.IPv4Address):
            return []
        inner = embedded_ipv4(address_int(address), self.nat64)
        return [] if inner is None else [ipaddress.IPv4Address(v) for v in inner[1]]


def _construct_free() -> bool:
    """Whether an address object made without its constructor (``object.__new__`` and its
    ``_ip``) equals, hashes and prints as the constructor's on this Python.  The constructor's
    checks were measured at about half the cost of reading a million addresses back at a
    restart (nettrust_core.fleet.tracker_redis) and at ~940 instructions of a one-address answer's
    ~123,700 (bench/answer_path.py --callgrind); where the check fails, the constructors are used."""
    try:
        a: Any = object.__new__(ipaddress.IPv4Address)
        a._ip = 0x14000001
        b: Any = object.__new__(ipaddress.IPv6Address)
        b._ip, b._scope_id = 0x20010DB8 << 96 | 1, None
        four, six = ipaddress.IPv4Address("20.0.0.1"), ipaddress.IPv6Address("2001:db8::1")
        return (a == four and hash(a) == hash(four) and str(a) == "20.0.0.1" and b == six
                and hash(b) == hash(six) and str(b) == "2001:db8::1")
    except (AttributeError, TypeError):
        return False


FAST_ADDRESSES: Final = _construct_free()


def address_int(address: IPAddress) -> int:
    """``int(address)`` without running Python code: ``ipaddress``'s ``__int__`` and ``version``
    are interpreted functions (each a Python frame, three of each per granted address on the
    answer path before this helper); compiled callers test the version with ``isinstance``."""
    a: Any = address
    return a._ip if FAST_ADDRESSES else int(a)


def address_bytes(address: IPAddress) -> bytes:
    """``address.packed`` without ``ipaddress``'s Python property (two Python frames)."""
    if isinstance(address, ipaddress.IPv4Address):
        return address_int(address).to_bytes(4, "big")
    return address_int(address).to_bytes(16, "big")


def packed_address(data: bytes, size: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address in ``data``, which must be ``size`` (4 or 16) bytes in network order, as the
    ipaddress constructor makes it from bytes (InvalidValue, a ValueError, for another length)."""
    if len(data) != size:
        raise InvalidValue(f"an address of {size} bytes expected, not {len(data)}")
    if not FAST_ADDRESSES:
        return ipaddress.IPv4Address(data) if size == 4 else ipaddress.IPv6Address(data)
    a: Any
    if size == 4:
        a = object.__new__(ipaddress.IPv4Address)
        a._ip = int.from_bytes(data, "big")
    else:
        a = object.__new__(ipaddress.IPv6Address)
        a._ip, a._scope_id = int.from_bytes(data, "big"), None
    return a


#: Added to an IPv6 address's integer to make its :func:`address_key`: keys of the two families
#: never meet (an IPv4 key is below 2**32, an IPv6 one at least 2**128).
V6_KEY: Final = 1 << 128


def address_key(address: IPAddress) -> Any:
    """The host tracker's key for ``address`` (an int): its integer, an IPv6 one plus
    :data:`V6_KEY`.

    An int hashes in C; an address object hashes through Python code (``hash(hex(int(self)))``),
    twice per address when a restart reads a million grants back into the tracker's two tables
    (~0.7 s of nettrust_core.fleet.tracker_redis's ~3.6 s), and several times per answered
    address on the answer path.  An IPv4 key is the address's own int object, which the tracker
    then keeps instead of the address.  Typed ``Any`` so that compiled callers keep that object:
    mypyc unboxes a value typed ``int`` and would box a new one for each table it is stored in
    (measured: 404 instead of 306 bytes per tracked address, tests/unit/test_caps.py)."""
    a: Any = address
    value: Any = a._ip if FAST_ADDRESSES else int(a)     # not address_int: see the type above
    return value if isinstance(address, ipaddress.IPv4Address) else value | V6_KEY


def key_address(key: int) -> IPAddress:
    """The address of an :func:`address_key`."""
    if key < V6_KEY:
        return packed_address(key.to_bytes(4, "big"), 4)
    return packed_address((key ^ V6_KEY).to_bytes(16, "big"), 16)

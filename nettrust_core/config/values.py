"""Converters for the elements of array keys: text in, the value the code uses out.

Each raises :class:`ValueError` with a message for the user; :class:`~.kinds.Each` blames it on
the element's own line.  (Names and patterns are converted by :mod:`nettrust_core.patterns`.)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import InvalidValue
from ..firewall.base import IPAddress, IPNetwork
from ..patterns import normalize_name
from .messages import choices, show

DNS_PORT, DNS_OVER_TLS_PORT = 53, 853


@dataclass(frozen=True)
class Upstream:
    """One forwarding server."""

    address: IPAddress
    port: int = DNS_PORT
    tls_name: str | None = None

    def __str__(self) -> str:
        """Unbound's ``forward-addr`` syntax, which is also ours: ``addr@port#tls-name``."""
        return f"{self.address}@{self.port}" + (f"#{self.tls_name}" if self.tls_name else "")


def address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidValue(f"{text!r} is not an IPv4 or IPv6 address") from None


def tcp_port(text: str) -> int:
    """A port number 1..65535, written as a string ("22")."""
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise InvalidValue(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def network(text: str) -> IPNetwork:
    """A CIDR network, or a single address as a /32 or /128."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        parsed = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidValue(f"{text!r} is not an address or a network (CIDR like 192.0.2.0/24 or "
                           "2001:db8::/32)") from None
    raise InvalidValue(f"{text!r} has host bits set; did you mean {str(parsed)!r}?")


def server(text: str, *, tls: bool) -> Upstream:
    """``addr[@port][#tls-name]``, as Unbound's forward-addr; the port defaults by ``tls``."""
    shape = 'expected ADDRESS[@PORT][#TLS-NAME], like "9.9.9.9" or "2620:fe::fe@853#dns.quad9.net"'
    rest, hash_sign, tls_name = text.partition("#")
    written, at_sign, port_text = rest.partition("@")
    try:
        parsed = address(written)
    except ValueError as exc:
        raise InvalidValue(f"invalid server {text!r}: {exc}; {shape}") from None
    port = DNS_OVER_TLS_PORT if tls else DNS_PORT
    if at_sign:
        if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise InvalidValue(f"invalid server {text!r}: port {port_text!r} is not a number from "
                               f"1 to 65535; {shape}")
        port = int(port_text)
    if hash_sign:
        try:
            tls_name = normalize_name(tls_name)
        except ValueError as exc:
            raise InvalidValue(f"invalid server {text!r}: TLS name: {exc}") from None
    return Upstream(address=parsed, port=port, tls_name=tls_name or None)


def one_of(values: Iterable[str]) -> Callable[[str], str]:
    """An element that must be one of ``values``."""
    allowed = tuple(values)

    def convert(text: str) -> str:
        if text not in allowed:
            raise InvalidValue(f"expected one of {choices(allowed)}, found {show(text)}")
        return text
    return convert


_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_CGROUP = re.compile(r"[A-Za-z0-9_.@:-]+(?:/[A-Za-z0-9_.@:-]+)*")


def interface(text: str) -> str:
    """A network interface name as the kernel allows it (IFNAMSIZ - 1 bytes, no '/', no blanks)."""
    if not _IFNAME.fullmatch(text):
        raise InvalidValue(f"{show(text)} is not an interface name (1 to 15 letters, digits and "
                           "_ . : @ -; no wildcards)")
    return text


def cgroup_path(text: str) -> str:
    """A cgroup v2 path below the hierarchy's root, like "system.slice/unbound.service"."""
    text = text.strip("/")
    if text and (not _CGROUP.fullmatch(text)
                 or any(part in (".", "..") for part in text.split("/"))):
        raise InvalidValue(f"{show(text)} is not a cgroup path below the cgroup v2 root, like "
                           '"system.slice/unbound.service" (letters, digits, _ . @ : -, separated '
                           "by /)")
    return text


def nat64_prefix(text: str) -> IPNetwork:
    from ..networks import parse_nat64_prefix
    parsed = network(text)
    parse_nat64_prefix(parsed)          # ValueError: blamed on this element
    return parsed


@dataclass(frozen=True)
class NamespaceRule:
    """``firewall.namespace_allow`` entry: namespace ``namespace`` may reach names matching
    ``pattern`` (see nettrust_core.firewall.namespaces)."""

    namespace: str
    pattern: str

    def __str__(self) -> str:
        return f"{self.namespace} {self.pattern}"


def namespace_rule(text: str) -> NamespaceRule:
    """``"NAMESPACE PATTERN"``, e.g. ``"web **.example.com"``."""
    from ..patterns import normalize_pattern
    parts = text.split()
    if len(parts) != 2:
        raise InvalidValue(f"{show(text)} is not \"NAMESPACE PATTERN\" (e.g. \"web **.example.com\")")
    normalize_pattern(parts[1])
    return NamespaceRule(parts[0], parts[1])


"""Checks on configuration values, beyond their kind.

Key checks (:class:`Check`) look at one key's converted value and carry a short ``rule`` for the
reference ("≥ 1s").  Cross-key checks are plain functions of a whole section, listed in the
section's ``CHECKS``; they run after every key of it is read.  Both raise
:class:`~.kinds.Invalid`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from ..durations import format_duration
from .kinds import Invalid
from .messages import choices, show
from .values import DNS_OVER_TLS_PORT

if TYPE_CHECKING:
    from .model import FirewallConfig, GrantsConfig, PolicyConfig, UpstreamConfig
    from .model_agent import WebConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Check(Generic[T]):
    """``test`` raises :class:`Invalid` for a bad value; ``rule`` says what is accepted."""

    rule: str
    test: Callable[[T], None]

    def __call__(self, value: T) -> None:
        self.test(value)


# -- key checks -------------------------------------------------------------------------------

def at_least(seconds: float, message: str) -> Check[float]:
    def test(value: float) -> None:
        if value < seconds:
            raise Invalid(message)
    return Check(f"≥ {format_duration(seconds)}", test)


def at_most(seconds: float) -> Check[float]:
    def test(value: float) -> None:
        if value > seconds:
            raise Invalid(f"{format_duration(value)} is too long; "
                          f"at most {format_duration(seconds)}")
    return Check(f"≤ {format_duration(seconds)}", test)


def between(low: float, high: float, message: str) -> Check[float]:
    def test(value: float) -> None:
        if not low <= value <= high:
            raise Invalid(message)
    return Check(f"{format_duration(low)}..{format_duration(high)}", test)


def zero_or_between(low: float, high: float, message: str) -> Check[float]:
    def test(value: float) -> None:
        if value and not low <= value <= high:
            raise Invalid(message)
    return Check(f"0 or {format_duration(low)}..{format_duration(high)}", test)


def absolute_path(hint: str = "") -> Check[str]:
    def test(value: str) -> None:
        if not os.path.isabs(value):
            raise Invalid(f"{value!r} is not an absolute path{hint}")
    return Check("absolute path", test)


def matches(pattern: str, rule: str, problem: str) -> Check[str]:
    """The whole value matches ``pattern``; else ``problem`` (``{value!r}`` is filled in)."""
    compiled = re.compile(pattern)

    def test(value: str) -> None:
        if not compiled.fullmatch(value):
            raise Invalid(problem.format(value=value))
    return Check(rule, test)


def http_url() -> Check[str]:
    def test(value: str) -> None:
        if not re.match(r"https?://[^/\s]+", value):
            raise Invalid(f"{value!r} is not an http:// or https:// URL")
    return Check("http:// or https:// URL", test)


def not_empty(choices_: tuple[str, ...]) -> Check[tuple[Any, ...]]:
    def test(value: tuple[Any, ...]) -> None:
        if not value:
            raise Invalid(f"needs at least one of {choices(choices_)}")
    return Check("at least one", test)


def no_repeats() -> Check[tuple[Any, ...]]:
    def test(value: tuple[Any, ...]) -> None:
        for index, item in enumerate(value):
            if item in value[:index]:
                raise Invalid(f"{show(item)} is listed twice", index=index)
    return Check("each at most once", test)


# -- cross-key checks, by section -------------------------------------------------------------

def forward_needs_servers(up: UpstreamConfig) -> None:
    if up.mode == "forward" and not up.servers:
        raise Invalid('mode = "forward" needs at least one server in upstream.servers',
                      key="servers", fallback="mode")


def servers_only_when_forwarding(up: UpstreamConfig) -> None:
    if up.mode == "recurse" and up.servers:
        raise Invalid('servers are only used with mode = "forward"; set it, or remove the '
                      "servers to resolve from the root", key="servers")


def tls_only_when_forwarding(up: UpstreamConfig) -> None:
    if up.mode == "recurse" and up.tls:
        raise Invalid('tls = true needs mode = "forward": a recursive resolver cannot use TLS '
                      "towards authoritative servers", key="tls")


def tls_servers_are_named(up: UpstreamConfig) -> None:
    for index, server in enumerate(up.servers if up.tls else ()):
        if server.tls_name is None:
            raise Invalid(f"tls = true needs the server's TLS name to authenticate it, like "
                          f'"{server.address}@{DNS_OVER_TLS_PORT}#dns.example.net"',
                          key="servers", index=index)


def min_ttl_within_max_ttl(grants: GrantsConfig) -> None:
    if grants.min_ttl > grants.max_ttl:
        raise Invalid(f"min_ttl ({format_duration(grants.min_ttl)}) is longer than max_ttl "
                      f"({format_duration(grants.max_ttl)})", key="min_ttl")


def forward_needs_lan_side(fw: FirewallConfig) -> None:
    if "forward" in fw.hooks and not (fw.lan_interfaces or fw.lan_networks):
        raise Invalid('the "forward" hook needs the client-facing side: list its interfaces in '
                      "firewall.lan_interfaces and/or its networks in firewall.lan_networks "
                      "(grants then apply only to connections coming from there; everything "
                      "else forwarded, the internet connecting in included, is dropped)",
                      key="hooks", index=fw.hooks.index("forward"))


def namespaces_need_backend(fw: FirewallConfig) -> None:
    if "namespaces" in fw.backends and not fw.namespaces:
        raise Invalid('the "namespaces" backend needs firewall.namespaces (names under '
                      "/run/netns, /proc/PID/ns/net paths or globs)", key="backends",
                      index=fw.backends.index("namespaces"))


def resolver_cgroup_needs_user(fw: FirewallConfig) -> None:
    if fw.resolver_cgroup and not fw.resolver_user:
        raise Invalid('needs resolver_user: the cgroup narrows the resolver exemption, and '
                      'resolver_user = "" exempts nobody', key="resolver_cgroup")


def list_names_unique(policy: PolicyConfig) -> None:
    seen: dict[str, int] = {}
    for index, spec in enumerate(policy.lists):
        if spec.name in seen:
            raise Invalid(f"two lists are named {spec.name!r} (tables {seen[spec.name]} and "
                          f"{index}); give one a different `name`", key="lists", index=index)
        seen[spec.name] = index


def web_needs_password_or_proxy(web: WebConfig) -> None:
    if web.enabled and web.auth == "password" and not web.password_hash:
        raise Invalid('auth = "password" needs password_hash: run `nettrust web --hash-password` '
                      'and paste its output (or put a reverse proxy in front: auth = "proxy")',
                      key="password_hash", fallback="enabled")
    if web.auth == "proxy" and web.listen.address not in ("127.0.0.1", "::1"):
        raise Invalid('auth = "proxy" serves without a password: listen must be 127.0.0.1 or '
                      "[::1], where only the proxy on this host can reach it", key="listen",
                      fallback="auth")

"""The [fleet] section: master, followers and the shared tracker over Redis (see
:mod:`nettrust_core.fleet`).  Declared like every section (see :mod:`.model`'s "how to add a key").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from ..errors import InvalidValue
from ..firewall.base import IPAddress, IPNetwork
from .declare import Checks, key
from .kinds import Boolean, Choice, Duration, Each, Integer, Invalid, Text
from .values import address, network

ROLES = ("standalone", "master", "follower")
TRACKERS = ("memory", "redis")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class FollowerNetwork:
    """``NAME=NETWORK``: clients in NETWORK connect through the follower NAME."""

    follower: str
    network: IPNetwork

    def __str__(self) -> str:
        return f"{self.follower}={self.network}"


def follower_network(text: str) -> FollowerNetwork:
    name, sep, net = text.partition("=")
    if not sep or not _NODE.fullmatch(name.strip()):
        raise InvalidValue(f"{text!r} is not NAME=NETWORK (a follower's node name, then the "
                           "client network behind it, like \"gw1=10.1.0.0/24\")")
    return FollowerNetwork(name.strip(), network(net.strip()))


def node_name(text: str) -> str:
    if text and not _NODE.fullmatch(text):
        raise InvalidValue(f"{text!r} is not a node name (letters, digits, '.', '_', '-')")
    return text


def redis_url_problem(url: str, allow_plaintext: bool) -> str | None:
    """Why ``url`` may not be used (None: it may): rediss:// anywhere, redis:// only on
    loopback and only with ``allow_plaintext``."""
    parts = urlsplit(url)
    if parts.scheme == "rediss":
        return None if parts.hostname else f"{url!r} names no host"
    if parts.scheme != "redis":
        return f"{url!r} is not a rediss:// (or redis://) URL"
    try:
        loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not allow_plaintext:
        return (f"{url!r} is plaintext: use rediss:// with a client certificate, or set "
                "allow_plaintext = true (loopback only)")
    if not loopback:
        return f"{url!r}: plaintext Redis is refused off loopback, even with allow_plaintext"
    return None


def _url_allowed(f: FleetConfig) -> None:
    if not f.redis_url:
        if f.role != "standalone" or f.tracker == "redis":
            raise Invalid(f'role = "{f.role}" / tracker = "{f.tracker}" needs a redis_url',
                          key="redis_url", fallback="role")
        return
    why = redis_url_problem(f.redis_url, f.allow_plaintext)
    if why:
        raise Invalid(why, key="redis_url")
    if f.redis_url.startswith("rediss:"):
        for name in ("ca_file", "cert_file", "key_file"):
            if not getattr(f, name):
                raise Invalid(f"rediss:// needs {name} (mutual TLS: the CA that signed the "
                              "server, this node's certificate and key)", key=name,
                              fallback="redis_url")


def _follower_has_name(f: FleetConfig) -> None:
    if f.role == "follower" and not f.node:
        raise Invalid('role = "follower" needs node (the name masters map client networks to)',
                      key="node", fallback="role")


@dataclass(frozen=True)
class FleetConfig:
    """Masters publish every grant into a Redis stream; followers apply them (mutual TLS)."""

    role: str = key(Choice(ROLES), "standalone",
                    "`standalone`; `master`: publish every grant; `follower`: `nettrust follow` "
                    "applies the masters' grants")
    node: str = key(Text(convert=node_name), "",
                    "this node's name in the fleet (a follower's is what `followers` maps to)")
    redis_url: str = key(Text(), "", "the Redis (or Valkey) server: `rediss://HOST:PORT/DB`")
    ca_file: str | None = key(Text(empty_is_none=True), "",
                              "CA certificate that verifies the Redis server")
    cert_file: str | None = key(Text(empty_is_none=True), "",
                                "this node's client certificate (Redis has tls-auth-clients yes)")
    key_file: str | None = key(Text(empty_is_none=True), "", "the client certificate's key")
    allow_plaintext: bool = key(Boolean(), False,
                                "accept a `redis://` URL (loopback only; for tests)")
    prefix: str = key(Text(), "nettrust", "prefix of the Redis keys (stream, snapshot, config)")
    hold: float = key(Duration(), "250ms",
                      "master: longest wait for the client's follower to confirm a grant "
                      "before the answer is released (0: no wait)")
    followers: tuple[FollowerNetwork, ...] = key(
        Each(follower_network, "NAME=NETWORK"), [],
        "master: client networks and the follower each connects through (the hold waits for it)")
    queue_size: int = key(Integer(16, 1 << 24), 65536,
                          "grants waiting to be published; more are dropped and counted",
                          unit="entries")
    tracker: str = key(Choice(TRACKERS), "memory",
                       "`redis`: keep the never-shorten tracker in Redis as well, so a restart "
                       "is exact at once")
    masters: tuple[IPAddress, ...] = key(
        Each(address, "addresses"), [],
        "follower: the masters' DNS addresses; this host and the clients behind it may reach "
        "their DNS ports (TCP/UDP 53 and 853) and nothing else of them unasked")
    status_file: str = key(Text(), "/run/nettrust/follower.json",
                           "follower: where it writes its state (cursor, config version, counts)")

    CHECKS: ClassVar[Checks] = (_url_allowed, _follower_has_name)

    def follower_of(self, client: str) -> str | None:
        """The follower whose network holds ``client`` (None: none)."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return None
        for entry in self.followers:
            if address in entry.network:
                return entry.follower
        return None

"""The Redis client of a fleet node: mutual TLS, or plaintext only on loopback when asked.

redis-py (Debian's python3-redis) is imported here, lazily: a standalone resolver never needs it.
Every Redis failure is translated into :class:`FleetUnavailable` at this boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.model_fleet import redis_url_problem
from ..errors import ConfigError, NetTrustError

if TYPE_CHECKING:
    from ..config.model_fleet import FleetConfig


class FleetUnavailable(NetTrustError):
    """Redis cannot be reached (down, refused our certificate, timed out)."""


def connect(fleet: FleetConfig, *, timeout: float = 2.0, name: str | None = None) -> Any:
    """A ``redis.Redis`` for ``fleet.redis_url`` (no connection is made until it is used).

    ``timeout`` bounds connecting and every command that does not block by itself; ``name``
    is the connection's CLIENT SETNAME (what ``CLIENT LIST`` shows an operator).
    """
    why = redis_url_problem(fleet.redis_url, fleet.allow_plaintext)
    if why:
        raise ConfigError(why, key="fleet.redis_url")
    try:
        import redis
    except ImportError:
        raise ConfigError("the fleet needs redis-py: apt-get install python3-redis",
                          key="fleet.role") from None
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout,
                              "socket_keepalive": True, "client_name": name}
    if fleet.redis_url.startswith("rediss:"):
        kwargs.update(ssl_ca_certs=fleet.ca_file, ssl_certfile=fleet.cert_file,
                      ssl_keyfile=fleet.key_file, ssl_cert_reqs="required",
                      ssl_check_hostname=True)
    return redis.Redis.from_url(fleet.redis_url, **kwargs)


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call may raise when the server is gone or refuses us."""
    import redis
    return (redis.RedisError, OSError)

"""The sections the statistics agent and the dashboard read ([stats], [metrics], [alerts], [web]),
and the recording fake's ([recording]): declared like every section (see :mod:`.model`'s "how to
add a key"), kept apart so each module reads in one sitting.  :class:`.model.Config` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import checks as c
from .declare import Checks, key
from .kinds import Boolean, Choice, Duration, HostPort, Integer, Listen, Text

@dataclass(frozen=True)
class StatsConfig:
    """Statistics: Unbound streams answers (dnstap) and decisions to the agent, which stores
    them."""

    enabled: bool = key(Boolean(), False, "stream statistics to `nettrust agent` (adds the "
                        "dnstap lines to the Unbound include)")
    database: str = key(Text(), "/var/lib/nettrust/stats.db",
                        "the SQLite database the agent writes and `nettrust stats` reads",
                        check=c.absolute_path())
    report_socket: str = key(Text(), "/run/nettrust/agent.sock",
                             "where the agent receives decision records (datagram socket)",
                             check=c.absolute_path())
    dnstap_socket: str = key(Text(), "/run/nettrust/dnstap.sock",
                             "where the agent receives Unbound's dnstap stream",
                             check=c.absolute_path())
    retention: float = key(Duration(), "30d", "rows older than this are deleted")
    retention_rows: int = key(Integer(1000), 1_000_000, "newest queries kept at most",
                              unit="rows")
    flush_interval: float = key(Duration(), "1s", "the writer stores a batch this often",
                                check=c.between(0.01, 60, "must be between 10ms and 1m"))
    queue_size: int = key(Integer(100), 100_000,
                          "records waiting for the writer; more are dropped and counted",
                          unit="records")
    cache_hits: bool = key(Boolean(), True, "record every client response via dnstap (cache "
                           "hits included); `false`: only answers the module judges")
    responses_per_second: int = key(
        Integer(0), 2000, "client responses (dnstap) the agent stores in detail per second; "
        "past it, to the end of that second, it stops reading (Unbound drops the rest; a "
        "`responses_sampled` event): every decision is still stored, exact totals come from "
        "Unbound's counters (metrics). 0: no limit", unit="responses")


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = key(Boolean(), True,
                        "the agent's Prometheus endpoint (while stats are enabled)")
    listen: HostPort = key(Listen(), "127.0.0.1:9531", "where the endpoint listens")

    @property
    def address(self) -> str:
        return self.listen.address

    @property
    def port(self) -> int:
        return self.listen.port


@dataclass(frozen=True)
class AlertsConfig:
    """Rules the agent checks on the statistics, and where notifications go."""

    webhook: str | None = key(Text(empty_is_none=True), "",
                              "URL that receives each alert as a JSON POST", check=c.http_url())
    syslog: bool = key(Boolean(), False, "also log alerts to the local syslog")
    command: str | None = key(Text(empty_is_none=True), "",
                              "run (without a shell) with the alert as JSON on stdin")
    window: float = key(Duration(), "10m", "at most one notification per rule and subject per "
                        "window")
    blocked_per_minute: int = key(Integer(0), 0, "alert when a client asks more blocked names "
                                  "per minute (0: off)")
    first_seen_domain: bool = key(Boolean(), False, "alert on a name never seen before")
    unauthorized: bool = key(Boolean(), True, "alert on refused connection attempts")
    backend_errors: bool = key(Boolean(), True, "alert when a grant could not be written")


WEB_AUTH = ("password", "proxy")


@dataclass(frozen=True)
class WebConfig:
    """The dashboard (``nettrust web``): read-only over the statistics database."""

    enabled: bool = key(Boolean(), False, "`nettrust web` serves the dashboard (read-only over "
                        "`stats.database`)")
    listen: HostPort = key(Listen(), "127.0.0.1:9532", "where the dashboard listens")
    auth: str = key(Choice(WEB_AUTH), "password",
                    "`password` (HTTP login), or `proxy`: a reverse proxy in front "
                    "authenticates (listen must then be loopback)")
    password_hash: str | None = key(
        Text(empty_is_none=True), "", "from `nettrust web --hash-password` (scrypt)",
        check=c.matches(r"scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32}\$[0-9a-f]{128}", "scrypt hash",
                        "{value!r} is not a password hash: run `nettrust web --hash-password`"))

    CHECKS: ClassVar[Checks] = (c.web_needs_password_or_proxy,)


@dataclass(frozen=True)
class RecordingConfig:
    """The `recording` firewall backend: a fake for tests, it programs nothing."""

    journal: str | None = key(Text(empty_is_none=True), "",
                              "file the fake appends each call to, as JSON lines",
                              check=c.absolute_path())
    fail_grants: bool = key(Boolean(), False, "the fake refuses every grant (a fake failure)")

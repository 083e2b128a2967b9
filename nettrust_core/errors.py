"""The one root of NetTrust's exceptions.

Everything the library raises on purpose derives from :class:`NetTrustError`, so the CLI and the
Unbound adapter can turn any of them into one clean message.  Errors from the operating system
(netlink, OSError) are translated at the backend boundary; nothing raw escapes.  Errors that
callers have always caught as ``ValueError`` (a bad name, duration, network, a hostile answer or
frame) are that too: they derive from both.

    NetTrustError
    ├── InvalidValue (ValueError)        bad input: names, durations, networks, answer kinds
    │   └── …                            WireNameError, ChainTooLong, dnstap DecodeError
    ├── ConfigError                      a configuration file (file, key, line)
    ├── FirewallError                    a backend could not do what it was asked
    │   └── NetlinkError                 a netlink exchange with netfilter failed or did not parse
    └── in their modules: ConntrackError (liveness unknown), NflogError, SettingsError,
        StatsError, and the agent's SchemaError and Frame Streams ProtocolError
"""

from __future__ import annotations


class NetTrustError(Exception):
    """Root of every NetTrust error."""


class InvalidValue(NetTrustError, ValueError):
    """A value handed to the library is not valid; also a ValueError, as callers catch it."""


class ConfigError(NetTrustError):
    """A configuration file is invalid.

    ``file``, ``key`` (dotted, e.g. ``policy.allow``) and ``line`` (1-based, or None when the
    problem has no single line) say where; ``message`` says what.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f": {self.key}"
        return f"{where}: {self.message}"


class FirewallError(NetTrustError):
    """A firewall backend could not do what it was asked.

    Structured fields say what was being touched; ``errno`` carries the kernel's answer when there
    was one.
    """

    def __init__(self, message: str, *, table: str | None = None, set: str | None = None,
                 family: str | None = None, address: str | None = None,
                 errno: int | None = None) -> None:
        self.message = message
        self.table = table
        self.set = set
        self.family = family
        self.address = address
        self.errno = errno
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.message]
        for name in ("table", "set", "family", "address", "errno"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return " ".join(parts)


class NetlinkError(FirewallError):
    """A netlink exchange failed, or what the kernel sent did not parse (``errno`` when the kernel
    said why).  Every netlink socket NetTrust opens speaks to netfilter (nf_tables, ctnetlink,
    nfnetlink_log), so it is a :class:`FirewallError`: the firewall backend passes it on as one,
    with the table and set it was touching, and callers that catch FirewallError still do."""

"""The one root of NetTrust's exceptions.

Everything the library raises on purpose derives from :class:`NetTrustError`, so the CLI and the
Unbound adapter can turn any of them into one clean message.  Errors from the operating system
(netlink, OSError) are translated at the backend boundary; nothing raw escapes.
"""

from __future__ import annotations


class NetTrustError(Exception):
    """Root of every NetTrust error."""


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

"""The firewall backend contract, and a recording fake that ships beside it.

A backend owns one ruleset: a default-drop egress chain plus the sets that let answered
addresses through.  The authorizer only ever calls these verbs; everything kernel-specific
stays behind them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The kernel keeps at most this many bytes of comment per element (nft's own limit is 128).
COMMENT_MAX = 127


@dataclass(frozen=True)
class Grant:
    """One address to let through for ``timeout`` seconds, opened by ``comment`` (a name)."""

    address: IPAddress
    timeout: float
    comment: str = ""


@dataclass(frozen=True)
class GrantedElement:
    """One live element of a grant set, as the kernel reports it."""

    address: IPAddress
    timeout: float          # the timeout it was added with, seconds
    expires_in: float       # seconds left
    comment: str = ""


@dataclass(frozen=True)
class RulesetSpec:
    """Everything a backend needs to build its ruleset; made from the config."""

    table: str = "nettrust"
    priority: int = 0
    action: str = "reject"                     # "reject" or "drop"
    hooks: tuple[str, ...] = ("output",)       # "output", optionally "forward"
    static_hosts: tuple[IPAddress, ...] = ()
    static_networks: tuple[IPNetwork, ...] = ()
    resolver_uid: int | None = None            # the resolver may reach port 53/853 anywhere
    allow_icmpv6_nd: bool = True
    allow_dhcp: bool = True


class FirewallBackend(Protocol):
    """The verbs every backend provides."""

    def ensure(self) -> None:
        """Create or repair the ruleset atomically; live grants survive."""

    def grant(self, grants: Sequence[Grant]) -> None:
        """Add or extend the given grants in one kernel transaction (the answer path)."""

    def list_grants(self) -> list[GrantedElement]:
        """The live grants, from the kernel."""

    def flush_grants(self) -> None:
        """Drop every grant; the ruleset (and so the drop policy) stays."""

    def remove(self) -> None:
        """Delete the whole ruleset (a clean removal: egress is open again)."""

    def status(self) -> dict:
        """Ruleset present, priority, set sizes, counters."""

    def close(self) -> None:
        """Release sockets; the kernel state stays."""


@dataclass
class RecordingBackend:
    """An in-memory backend for tests of policy and authorizer (no kernel involved).

    It records each ``grant`` batch so a test can assert exactly what the answer path wrote.
    Set ``fail_with`` to make ``grant`` raise, to exercise fail-closed paths.
    """

    spec: RulesetSpec = field(default_factory=RulesetSpec)
    batches: list[list[Grant]] = field(default_factory=list)
    present: bool = False
    fail_with: Exception | None = None
    ensure_calls: int = 0

    def ensure(self) -> None:
        self.ensure_calls += 1
        self.present = True

    def grant(self, grants: Sequence[Grant]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(grants))

    def list_grants(self) -> list[GrantedElement]:
        latest: dict[IPAddress, Grant] = {}
        for batch in self.batches:
            for g in batch:
                latest[g.address] = g
        return [GrantedElement(g.address, g.timeout, g.timeout, g.comment) for g in latest.values()]

    def flush_grants(self) -> None:
        self.batches.clear()

    def remove(self) -> None:
        self.present = False
        self.batches.clear()

    def status(self) -> dict:
        return {"present": self.present, "priority": self.spec.priority,
                "sets": {"grants": len(self.list_grants())}, "counters": {}}

    def close(self) -> None:
        pass

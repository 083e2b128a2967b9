"""What a backend may report for people, beside its verbs: the base chains on netfilter's hooks.

Optional: a backend that can list them declares :class:`Diagnostics` (it has ``base_chains``);
the priority report (:mod:`nettrust_core.lifecycle.chains`) and ``nettrust status`` ask
``isinstance(backend, Diagnostics)`` and say plainly when the backend offers none.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class BaseChain(NamedTuple):
    family: str
    table: str
    name: str
    hook: str
    priority: int
    type: str
    policy: str

    def __str__(self) -> str:
        return (f"{self.family} {self.table} {self.name}: {self.type} hook {self.hook} "
                f"priority {self.priority} policy {self.policy}")


@runtime_checkable
class Diagnostics(Protocol):
    """A backend that can list every base chain of the kernel (ours and other tables')."""

    def base_chains(self) -> list[BaseChain]:
        """Every base chain of every table and family; raises FirewallError when it cannot."""

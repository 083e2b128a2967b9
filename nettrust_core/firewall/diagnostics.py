"""What a backend reports for people, beside its verbs: the base chains on netfilter's hooks.

A backend that can list them offers ``base_chains() -> list[BaseChain]``; the priority report
(:mod:`nettrust_core.lifecycle.chains`) reads that list, whichever backend produced it.
"""

from __future__ import annotations

from typing import NamedTuple


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

"""The recording backend: an in-memory fake of the contract, shipped beside it.

It programs nothing.  Unit tests of policy and authorizer use it directly (no root, no
kernel); integration tests name it in the configuration (``firewall.backends = ["nftables",
"recording"]``) and read what the answer path wrote from its journal (``[recording]``
``journal``: one JSON line per verb, appended and flushed at once).  ``fail_grants`` (or
``fail_with``) makes every grant raise: a fake failure, to show that a failing backend fails the
answer closed.  The journal is a file write on the answer path: acceptable for a fake, never for
a real backend.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FirewallError
from .base import Grant, GrantedElement, IPAddress, OnBatch, RulesetSpec, Status

NAME = "recording"


@dataclass
class RecordingBackend:
    """Records each ``grant`` batch so a test can assert exactly what the answer path wrote.

    Set ``fail_with`` (an exception) or ``fail_grants`` to make ``grant`` raise.
    """

    spec: RulesetSpec = field(default_factory=RulesetSpec)
    batches: list[list[Grant]] = field(default_factory=list)
    present: bool = False
    fail_with: Exception | None = None
    fail_grants: bool = False
    journal: str | None = None
    instance: int = 0
    ensure_calls: int = 0
    repairs: int = 0
    errors: int = 0
    revoked: list[IPAddress] = field(default_factory=list)
    strikes: list[tuple[IPAddress, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_config(cls, spec: RulesetSpec, config: Any, instance: int = 0) -> RecordingBackend:
        rec = config.recording
        return cls(spec, journal=rec.journal, fail_grants=rec.fail_grants, instance=instance)

    def _record(self, verb: str, **data: Any) -> None:
        if self.journal is None:
            return
        line = json.dumps({"verb": verb, "pid": os.getpid(), "instance": self.instance, **data})
        with self._lock, open(self.journal, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def ensure(self) -> None:
        self.ensure_calls += 1
        self.present = True
        self._record("ensure")

    def grant(self, grants: Sequence[Grant]) -> None:
        if self.fail_with is not None or self.fail_grants:
            self.errors += 1
            self._record("grant_refused", grants=[str(g.address) for g in grants])
            if self.fail_with is not None:
                raise self.fail_with
            raise FirewallError("the recording backend refuses every grant (recording.fail_grants"
                                " = true: a fake failure, for tests)", table=self.spec.table)
        self.batches.append(list(grants))
        self._record("grant", grants=[[str(g.address), g.timeout, g.comment] for g in grants])

    def strike(self, address: IPAddress, seconds: float) -> None:
        self.strikes.append((address, seconds))
        self._record("strike", address=str(address), seconds=seconds)

    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        latest: dict[IPAddress, Grant] = {}
        for batch in self.batches:
            for g in batch:
                latest[g.address] = g
        found = [GrantedElement(g.address, g.timeout, g.timeout, g.comment, self.instance)
                 for g in latest.values()]
        if on_batch is None:
            return found
        on_batch(found)
        return []

    def lookup(self, address: IPAddress) -> float | None:
        found = [g for g in self.list_grants() if g.address == address]
        return found[0].expires_in if found else None

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        gone = set(addresses)
        self.revoked.extend(addresses)
        self.batches = [[g for g in batch if g.address not in gone] for batch in self.batches]
        self._record("revoke", addresses=[str(a) for a in addresses])

    def flush_grants(self, own_only: bool = False) -> None:
        self.batches.clear()
        self._record("flush", own_only=own_only)

    def remove(self) -> None:
        self.present = False
        self.batches.clear()
        self._record("remove")

    def status(self, *, count_elements: bool = True) -> Status:
        return Status(NAME, self.present, table=self.spec.table, family="memory",
                      hooks=tuple(self.spec.hooks) if self.present else (),
                      priority=self.spec.priority if self.present else None,
                      policy="drop" if self.present else None, action=self.spec.action,
                      sets={"grants": len(self.list_grants())} if count_elements else {},
                      repairs=self.repairs, errors=self.errors)

    def close(self) -> None:
        pass

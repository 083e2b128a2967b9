"""The background reader of the kernel's neighbour table (``gateway.client_key = "mac"``).

pyroute2 reads the table (a netlink dump, RTM_GETNEIGH) in this thread only, never on the
answer path: every ``interval`` seconds and right after the answer path missed a client
(:attr:`~nettrust_core.grants.neighbours.NeighbourTable.wanted`), at most every ``min_gap``.
Entries without a link-layer address (INCOMPLETE, FAILED) are left out.  A failed read is
logged once per kind and counted (``neighbour_read_errors``); the last good table stays.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from typing import TYPE_CHECKING

from ..grants.neighbours import NeighbourTable, parse_mac
from ..worker import Worker

if TYPE_CHECKING:
    from ..grants.neighbours import Macs

log = logging.getLogger("nettrust.lifecycle")

#: NUD_INCOMPLETE | NUD_FAILED: no usable link-layer address.
_UNUSABLE = 0x01 | 0x20


def read_neighbours(ipr) -> Macs:
    """Address -> MAC from one dump of ``ipr`` (a pyroute2 IPRoute)."""
    macs: Macs = {}
    for msg in ipr.get_neighbours():
        if msg.get("state", 0) & _UNUSABLE:
            continue
        dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
        if not dst or not lladdr:
            continue
        mac = parse_mac(lladdr)
        if mac is None:
            continue
        try:
            ip = ipaddress.ip_address(dst.split("%", 1)[0])
        except ValueError:
            continue
        macs[ip] = mac
    return macs


class NeighbourWatcher(Worker):
    name = "nettrust-neighbours"

    def __init__(self, table: NeighbourTable, counters: Counter[str], *, interval: float = 2.0,
                 min_gap: float = 0.05) -> None:
        super().__init__(counters)
        self.table = table
        self.counters = counters
        self.interval = interval
        self.min_gap = min_gap
        self._failed: str | None = None

    def wake(self) -> None:
        self.table.wanted.set()

    def run(self) -> None:
        from pyroute2 import IPRoute        # imported here: only this thread needs it
        with IPRoute() as ipr:
            while not self.stopping.is_set():
                self.refresh(ipr)
                self.table.wanted.wait(self.interval)
                self.table.wanted.clear()
                if self.stopping.wait(self.min_gap):
                    return

    def refresh(self, ipr) -> None:
        try:
            self.table.replace(read_neighbours(ipr))
            self.counters["neighbour_reads"] += 1
            self._failed = None
        except Exception as exc:            # noqa: BLE001 - the thread outlives any read error
            self.counters["neighbour_read_errors"] += 1
            kind = type(exc).__name__
            if self._failed != kind:
                self._failed = kind
                log.error("cannot read the neighbour table (MAC-keyed grants): %s", exc)

"""Gateway mode with ``gateway.client_key = "mac"``: which link-layer address a client has.

The answer path asks :meth:`NeighbourTable.lookup` (one dictionary read); the table is filled
off the answer path by :class:`nettrust_core.lifecycle.neighbours.NeighbourWatcher` from the
kernel's neighbour table (ARP and NDP entries of directly attached clients), re-read every
``interval`` seconds and at once after a miss.  A client whose MAC is not (yet) known gets no
grant (counted as ``clients_without_mac``): a query's client has just sent the gateway a
packet, so its entry is normally there before the answer, at the latest on the next query.
"""

from __future__ import annotations

import threading

from ..firewall.base import IPAddress, MacAddress

Macs = dict[IPAddress, MacAddress]


class NeighbourTable:
    """Address -> MAC of the directly attached neighbours, replaced whole on each read."""

    def __init__(self) -> None:
        self.macs: dict[IPAddress, MacAddress] = {}
        #: address -> (the MAC's text: the per-client key, the MAC), built with each table
        self.keys: dict[IPAddress, tuple[str, MacAddress]] = {}
        #: Set by a miss (and by stop): the watcher reads the kernel's table at once.
        self.wanted = threading.Event()

    def lookup(self, address: IPAddress) -> tuple[str, MacAddress] | None:
        """(the MAC's text, the MAC) of ``address``; a miss asks the reader for a fresh table."""
        found = self.keys.get(address)
        if found is None:
            self.wanted.set()
        return found

    def peek(self, address: IPAddress) -> MacAddress | None:
        """The MAC without asking for a refresh on a miss."""
        return self.macs.get(address)

    def replace(self, macs: dict[IPAddress, MacAddress]) -> None:
        self.keys = {a: (str(m), m) for a, m in macs.items()}
        self.macs = macs                    # reference swaps: readers never see a half table


def parse_mac(text: str) -> MacAddress | None:
    """``aa:bb:cc:dd:ee:ff`` -> MacAddress (None: not a 6-byte Ethernet address, or all zero)."""
    try:
        packed = bytes(int(p, 16) for p in text.split(":"))
    except (ValueError, AttributeError):
        return None
    if len(packed) != 6 or not any(packed):
        return None
    return MacAddress(packed)

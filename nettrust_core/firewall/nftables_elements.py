"""The answer path's nftables elements: an answer's grants grouped by the set that takes each.

Compiled with the rest of the answer path (:mod:`nettrust_core.compiled`).  Before, the backend
did this in interpreted code, and reaching an address's bytes and version went through
``ipaddress``'s Python properties: six Python frames per granted address (``packed``,
``version``, the shard choice, ...).  Here a one-address answer runs no Python frame at all;
a client's grant (gateway mode) still calls :func:`~.nftables_gateway.pair_key`.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Callable, Sequence

from ..netlink import nftables as nl
from ..networks import address_bytes
from .base import Grant
from .nftables_gateway import pair_key
from .nftables_sets import grant_shard

#: ``(set name, encoded elements, their addresses)`` per set, in the order first met.
Groups = list[tuple[str, list[bytes], list]]


def set_of(names: tuple[str, ...], key: bytes) -> str:
    """Which of one version's grant sets ``names`` (in shard order) holds the address packed
    as ``key``."""
    return names[grant_shard(key, len(names))]


def grant_elements(grants: Sequence[Grant], sets: dict[int, tuple[str, ...]],
                   client_sets: dict[int, str] | None, mac_version: int,
                   error: Callable[..., Exception]) -> Groups:
    """The elements of ``grants`` by set: an address's own grant set of ``sets`` (by version, in
    shard order, :func:`grant_shard`); a client's grant its ``client . destination`` set of
    ``client_sets`` (None: gateway.per_client is off, and a client's grant is refused).
    Timeouts in ms rounded up; a comment's userdata encoded once per run of equal comments.
    ``error(message, address=...)`` makes the exception for a grant that cannot be written."""
    groups: dict[str, tuple[list[bytes], list]] = {}
    last_comment: str | None = None
    udata = b""
    for g in grants:
        addr, client = g.address, g.client
        try:
            ms = math.ceil(g.timeout * 1000)
        except (TypeError, ValueError, OverflowError):
            ms = 0
        if ms <= 0:
            raise error(f"grant timeout must be a positive number of seconds, not {g.timeout!r}",
                        address=str(addr))
        if g.comment != last_comment:
            last_comment, udata = g.comment, nl.comment_udata(g.comment)
        version = 4 if isinstance(addr, ipaddress.IPv4Address) else 6
        if client is None:
            key = address_bytes(addr)
            name = set_of(sets[version], key)
        elif client_sets is not None and client.version in (version, mac_version):
            name, key = client_sets[version], pair_key(client, addr)
        else:
            raise error("a per-client grant needs gateway.per_client and a client of the "
                        "destination's IP version", address=str(addr))
        group = groups.get(name)
        if group is None:
            group = groups[name] = ([], [])
        group[0].append(nl.element(key, ms, udata))
        group[1].append(addr)
    return [(name, elems, addrs) for name, (elems, addrs) in groups.items()]

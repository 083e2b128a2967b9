"""The names of the nftables grant sets and which of them holds an address.

Each resolver process (``firewall.instances``) writes its own sets, and spreads its grants over
several sets per IP version by address (:func:`grant_shard`), because reading a set back costs
the kernel time growing with the square of its size.  The ruleset (:mod:`.nftables_rules`)
accepts an address found in any of them; the backend (:mod:`.nftables`) writes, looks up and
revokes an address in its own set only.
"""

from __future__ import annotations

from .base import IPAddress, RulesetSpec

GRANT_SETS = {4: "allow4", 6: "allow6"}
#: Grant sets per IP version a ruleset aims at, over all its instances.  A set's read-back costs
#: the kernel time growing with the square of its size (its dump restarts the walk from the first
#: element for every 32 KiB part): one set of a million grants takes 40-50 s, sixteen of 62,500
#: about 2 s (bench/restart.py).  Each set adds one lookup to a new connection's first packet.
GRANT_SHARDS = 16


def grant_shards(spec: RulesetSpec) -> int:
    """How many grant sets per IP version each instance writes: the instances share
    :data:`GRANT_SHARDS` (each process's sets already hold only its own share of the grants)."""
    return max(1, GRANT_SHARDS // spec.instances)


def grant_shard(key: bytes, shards: int) -> int:
    """Which of an instance's ``shards`` sets holds the address packed as ``key``: its last two
    bytes folded (spread evenly by sequential IPv4 and by IPv6 interface identifiers alike).
    Every process and version must agree on it: lookups and revocations go to this set only."""
    return (key[-1] ^ key[-2]) % shards


def grant_sets(spec: RulesetSpec, instance: int) -> dict[int, tuple[str, ...]]:
    """The grant sets one resolver process writes, by IP version, in shard order.

    Instance 0's first set keeps the name a single process has always used (``allow4``/
    ``allow6``), so an upgrade keeps its grants; instance k's is ``allow4_k``; shard j > 0 adds
    ``_s<j>`` (``allow4_s3``, ``allow4_1_s3``).  Separate sets per instance are what let several
    processes grant the same address without one shortening the other's grant: each process only
    ever rewrites its own element.
    """
    shards = grant_shards(spec)
    out = {}
    for v, name in GRANT_SETS.items():
        first = name if instance == 0 else f"{name}_{instance}"
        out[v] = (first, *(f"{first}_s{j}" for j in range(1, shards)))
    return out


def grant_set_of(spec: RulesetSpec, instance: int, address: IPAddress) -> str:
    """The name of instance ``instance``'s set that holds (or would hold) ``address``."""
    names = grant_sets(spec, instance)[address.version]
    return names[grant_shard(address.packed, len(names))]


def all_grant_sets(spec: RulesetSpec) -> list[tuple[int, int, str]]:
    """``(instance, version, set name)`` of every grant set the ruleset holds."""
    return [(k, v, name) for k in range(spec.instances)
            for v, names in grant_sets(spec, k).items() for name in names]


def shard_totals(spec: RulesetSpec, sizes: dict[str, int | None]) -> dict[str, int | None]:
    """Set sizes by name with each grant set's shards added up under its first name (None:
    no shard exists); other sets as they are."""
    out = dict(sizes)
    for k in range(spec.instances):
        for first, *rest in grant_sets(spec, k).values():
            counts = [c for c in (out.get(first), *(out.pop(n, None) for n in rest)) if c is not None]
            out[first] = sum(counts) if counts else None
    return out

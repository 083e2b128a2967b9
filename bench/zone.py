"""The benchmark's authoritative data: ``bench.test`` with ~100k names, and the query files.

Every name owns distinct addresses inside the lab's AnyIP prefixes, so a grant opened for one
name never makes another name's connect succeed by accident, and every address answers HTTP
and echo in the lab's internet namespace.

- ``n<i>.bench.test`` (TTL 300): A and AAAA; the throughput and latency workloads and the race's
  fresh / cache-hit trials.
- ``t<i>.bench.test`` (TTL 2): the race's near-expiry trials.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

ZONE = "bench.test"
LONG_TTL = 300
SHORT_TTL = 2

# 198.18.0.0/15 is AnyIP in the lab; the lab's own h/s names use 198.18.0-11.x and 198.19.0-1.x.
_V4_RANGES = ((ipaddress.IPv4Address("198.18.12.0"), 62464),    # .. 198.18.255.255
              (ipaddress.IPv4Address("198.19.2.0"), 65024))     # .. 198.19.255.255
V4_CAPACITY = sum(size for _, size in _V4_RANGES)
_V6_N = ipaddress.IPv6Address("2001:db8:118:b::")   # 2001:db8:118::/48 is AnyIP in the lab
_V6_T = ipaddress.IPv6Address("2001:db8:118:c::")


class BenchZone:
    """Sizes of the zone and the addresses of its names."""

    def __init__(self, names: int = 100_000, short_names: int = 4_000) -> None:
        if names + short_names > V4_CAPACITY:
            raise ValueError(f"at most {V4_CAPACITY} names fit the lab's free IPv4 AnyIP space")
        self.names = names
        self.short_names = short_names

    @staticmethod
    def _v4(index: int) -> str:
        for start, size in _V4_RANGES:
            if index < size:
                return str(start + index)
            index -= size
        raise ValueError("index outside the IPv4 pool")

    def n_address(self, i: int) -> tuple[str, str]:
        return self._v4(i), str(_V6_N + i)

    def t_address(self, i: int) -> tuple[str, str]:
        return self._v4(self.names + i), str(_V6_T + i)

    def records(self) -> list[str]:
        """The zone's resource records, one zone-file line each (relative owner names)."""
        lines = []
        for i in range(self.names):
            v4, v6 = self.n_address(i)
            lines += [f"n{i} {LONG_TTL} IN A {v4}", f"n{i} {LONG_TTL} IN AAAA {v6}"]
        for i in range(self.short_names):
            v4, v6 = self.t_address(i)
            lines += [f"t{i} {SHORT_TTL} IN A {v4}", f"t{i} {SHORT_TTL} IN AAAA {v6}"]
        return lines

    def lab_zones(self) -> dict[str, list[str]]:
        """The ``extra_zones`` argument for :class:`testbed.lab.Lab`."""
        return {ZONE: self.records()}


def write_queries(path: Path, names: range, types: tuple[str, ...] = ("A",)) -> int:
    """A dnsperf input file: ``n<i>.bench.test TYPE`` for each name in ``names`` and type,
    types interleaved per name; returns the number of queries."""
    with open(path, "w") as out:
        for i in names:
            for rtype in types:
                out.write(f"n{i}.{ZONE} {rtype}\n")
    return len(names) * len(types)

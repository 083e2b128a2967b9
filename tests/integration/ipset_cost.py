"""Measure a one-address grant: ipset by pyroute2, ipset hand-written, nftables hand-written.

    ip netns exec SCRATCH python3 ipset_cost.py  → JSON, microseconds (best, median of 5 x 2000)

Run in a throwaway namespace (it creates sets ``cost4`` and a table ``inet nettrust`` there).
Each grant is a fresh address with a 300 s timeout and a comment, as an answer writes.
Test helper, not product code.
"""

import ipaddress
import json
import statistics
import subprocess
import time

from pyroute2 import IPSet

from nettrust_core.firewall.base import Grant, RulesetSpec
from nettrust_core.firewall.nftables import NftablesBackend
from nettrust_core.netlink.ipset import IpsetSocket, element_data


def rounds(write, n=2000, count=5):
    out, k = [], 0
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for _ in range(count):
        start = time.perf_counter()
        for _i in range(n):
            k += 1
            write(ipaddress.IPv4Address(base + k))
        out.append((time.perf_counter() - start) / n * 1e6)
    return round(min(out), 2), round(statistics.median(out), 2)


def main():
    subprocess.run(["ipset", "create", "cost4", "hash:ip", "family", "inet", "timeout", "0",
                    "comment", "maxelem", "1000000", "-exist"], check=True)
    result = {}
    ips = IPSet()
    result["pyroute2_ipset"] = rounds(lambda a: ips.add("cost4", str(a), exclusive=False,
                                                        timeout=300, comment="cost.test"))
    ips.close()
    subprocess.run(["ipset", "flush", "cost4"], check=True)
    sock = IpsetSocket()
    result["handwritten_ipset"] = rounds(lambda a: sock.add("cost4", 4, [element_data(a.packed, 300, "cost.test")]))
    nft = NftablesBackend(RulesetSpec())
    nft.ensure()
    result["nftables"] = rounds(lambda a: nft.grant([Grant(a, 300.0, "cost.test")]))
    nft.remove()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

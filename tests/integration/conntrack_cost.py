"""Measure the liveness query: one kernel-filtered conntrack dump, with N tracked connections.

    ip netns exec NS python3 conntrack_cost.py TOTAL MARKED   → JSON with the timings

Run inside a throwaway namespace whose ruleset tracks connections and marks the ones to
127.0.0.0/24 (what NetTrust's grant rules do).  Entries are real: one UDP datagram per source port
to a new (address, port) creates one (unreplied) conntrack entry.  Test helper, not product code.
"""

import json
import socket
import sys
import time

from nettrust_core.lifecycle.conntrack import Conntrack

MARK = 0x40000000


def create(total: int, marked: int) -> None:
    """One socket; each (destination, port) pair is its own entry.  Marked: 127.0.0.0/24."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(total):
        net = "127.0.0" if i < marked else "127.1.0"
        s.sendto(b"x", (f"{net}.{1 + i // 60000}", 1 + i % 60000))
    s.close()


def best(fn, rounds=5):
    times = []
    result = None
    for _ in range(rounds):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), sorted(times)[len(times) // 2], result


def main() -> None:
    total, marked = int(sys.argv[1]), int(sys.argv[2])
    create(total, marked)
    ours, everything = Conntrack(MARK), Conntrack(0, 0)
    f_min, f_med, live = best(ours.live_destinations)
    a_min, a_med, all_ = best(everything.live_destinations)
    print(json.dumps({"tracked": sum(all_.values()), "marked": sum(live.values()),
                      "filtered_ms": [round(f_min * 1e3, 2), round(f_med * 1e3, 2)],
                      "unfiltered_ms": [round(a_min * 1e3, 2), round(a_med * 1e3, 2)]}))


if __name__ == "__main__":
    main()

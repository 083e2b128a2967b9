"""CPython's cyclic garbage collector inside the resolver process, kept off the answer path.

The answer path frees almost everything it allocates by reference counting; what stays are the
tracker's addresses and owners (one of each per granted address, for as long as the grant
lives) and the loaded policy and lists.  With CPython's default thresholds (700, 10, 10) the
collector nevertheless runs a young collection every ~700 net new objects and, every hundred of
those, a full one that walks every tracked object in the process — a pause of the answer path
that grows with the grants held.  Measured with bench/answer_path.py (real adapter and core,
record backend, cache misses that each grant a new address):

==================  ==========================================  ===========================
answers (= grants)  CPython's defaults (700, 10, 10)            :func:`settle`
==================  ==========================================  ===========================
20,000              147 young, 13 middle, 1 full collection:    10 young, 0 middle, 0 full:
                    1.5-2.1 µs per answer                       0.6 µs per answer
80,000              574 / 52 / 4 full (38-52 ms pauses each):   36 / 3 / 0 full:
                    2.9-4.1 µs per answer                       1.0-1.3 µs per answer
==================  ==========================================  ===========================

(collector time from ``gc.callbacks``, two runs each; a young collection at 10,000 takes ~1 ms.)

:func:`settle` (called once by the adapter after the service started) collects once, then
freezes what start-up built (configuration, policy, lists: never garbage while the process
lives, and never to be walked again) and raises the young threshold to 10,000: a full
collection then needs about a million net new objects, i.e. a large growth of the grants held,
not the steady state.  Reference counting still frees frozen objects; only cyclic garbage that
exists at that instant (there is none after the collection) would never be collected.
"""

from __future__ import annotations

import gc

#: Net new container objects between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def settle() -> tuple[int, int, int]:
    """Tune the collector for a long-running resolver process; returns the thresholds set."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_threshold()

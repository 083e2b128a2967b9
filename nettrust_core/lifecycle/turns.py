"""Long scans of the background threads, in short turns that let answers in between.

An answer needs the interpreter lock several times (at each call into the module, and again
after each system call the module makes).  A background thread looping in Python over the grant
table gives the lock up only every 5 ms (``sys.getswitchinterval()``), and a C-level pass over it
(a sort) not at all until it ends; an answer waits that long at each turn.  Measured with 120,000
grants (a second thread sleeping 0.2 ms in a loop meanwhile, /tmp script): behind the liveness
check's scan each wait was 6.1-6.6 ms, behind the counters' sort 9.6 ms -- NetTrust's cache-miss
p99.9 of 19-52 ms in the benchmark's runs (plain Unbound 0.7 ms).  :func:`in_turns` hands the
scan its pairs a slice at a time and gives the lock up between slices (``time.sleep(0)``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

#: Pairs per turn: a slice's Python loop takes a few hundred microseconds.
TURN = 4096


def in_turns(items: Iterable[T], size: int = TURN) -> Iterator[list[T]]:
    """``items`` in lists of ``size``, giving the interpreter lock up after each list.

    ``items`` must not change meanwhile (iterate a copy: :meth:`GrantTracker.items`)."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
        time.sleep(0)

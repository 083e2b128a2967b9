"""The resolver's collector settings (nettrust_core.collector): start-up objects frozen, young
collections rarer, so a steady stream of grants triggers no full collection."""

import gc

import pytest

from nettrust_core import collector


@pytest.fixture
def restored_gc():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_settle_freezes_the_start_up_heap_and_raises_the_young_threshold(restored_gc):
    start_up = [[i] for i in range(1000)]                     # e.g. a loaded list
    assert collector.settle()[0] == collector.YOUNG_THRESHOLD
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
    assert gc.get_freeze_count() >= len(start_up)


def test_a_stream_of_grants_causes_no_full_collection_after_settle(restored_gc):
    """What the answer path leaves behind per grant (an address-like object and an owner),
    100,000 times: with CPython's defaults that triggers full collections, after settle none."""
    def full_collections_during(work) -> int:
        seen = []
        def cb(phase, info):
            if phase == "start" and info["generation"] == 2:
                seen.append(1)
        gc.callbacks.append(cb)
        try:
            work()
        finally:
            gc.callbacks.remove(cb)
        return len(seen)

    class Kept:
        __slots__ = ("a", "b")

    def grants(store):
        def work():
            for i in range(100_000):
                k = Kept()
                k.a, k.b = i, [i]
                store.append(k)
        return work

    gc.set_threshold(700, 10, 10)
    assert full_collections_during(grants([])) >= 1           # control: the defaults do
    collector.settle()
    assert full_collections_during(grants([])) == 0

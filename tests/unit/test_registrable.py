"""The registrable domain (the per-domain budget's key): the walk that stops where no public-suffix
rule goes on gives what walking every label gives, for names built on every rule of Debian's list."""

from __future__ import annotations

import random

from nettrust_core.registrable import PSL_PATH, SuffixList


def _full_walk(psl: SuffixList, labels: tuple[str, ...]) -> int:
    """The definition, label by label to the end (the walk before it stopped early)."""
    best = 1
    for n in range(1, len(labels) + 1):
        head = labels[:n]
        if head in psl.exceptions:
            return n - 1
        if head in psl.rules or (head[:-1] + ("*",)) in psl.rules:
            best = n
    return best


def test_the_early_stop_gives_the_full_walks_answer_for_every_rule():
    psl = SuffixList.from_file(PSL_PATH)
    assert len(psl.rules) > 5000 and psl.exceptions and any("*" in r for r in psl.rules)
    rng = random.Random(17)
    names = 0
    for rule in sorted(psl.rules | psl.exceptions):
        base = tuple("x" if label == "*" else label for label in rule)
        for extra in ((), ("a",), ("a", "b"), ("www", "a", "b")):
            labels = base + extra
            assert psl.suffix_length(labels) == _full_walk(psl, labels), ".".join(reversed(labels))
            names += 1
        cut = base[:rng.randrange(1, len(base) + 1)] + ("zz",)       # off the rule's path
        assert psl.suffix_length(cut) == _full_walk(psl, cut)
    assert names > 20000
    # A few by hand: an ordinary name, a private suffix, a wildcard and its exception.
    assert psl.registrable("host.zone.example.com") == "example.com"
    assert psl.registrable("www.example.co.uk") == "example.co.uk"
    assert psl.registrable("a.b.kawasaki.jp") == "a.b.kawasaki.jp"          # *.kawasaki.jp
    assert psl.registrable("x.city.kawasaki.jp") == "city.kawasaki.jp"      # !city.kawasaki.jp

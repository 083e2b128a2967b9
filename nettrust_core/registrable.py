"""The registrable domain of a name (``www.example.co.uk`` → ``example.co.uk``): the unit the
grant budgets count by, so a wildcard zone cannot multiply its share by inventing names.

The public-suffix list is Debian's ``publicsuffix`` package (``/usr/share/publicsuffix/
public_suffix_list.dat``, kept current by the distribution), read here with the standard library
so the module needs nothing beyond what Unbound's embedded Python has.  The ICANN and private
sections both count: ``a.github.io`` and ``b.github.io`` are different tenants, as browsers treat
them.  A name that is itself a public suffix (or the root) is its own budget.  Without the file the
last two labels stand in (coarser for ``co.uk``-style suffixes), with a warning.

The algorithm is the list's own (publicsuffix.org/list): the longest matching rule wins, ``*``
matches one label, an exception rule (``!``) wins over everything and removes its first label,
and a name no rule matches has the implicit rule ``*``.
"""

from __future__ import annotations

from typing import Final

import logging
from functools import lru_cache

log = logging.getLogger("nettrust.registrable")

#: Where Debian's ``publicsuffix`` package puts the list.
PSL_PATH: Final = "/usr/share/publicsuffix/public_suffix_list.dat"


class SuffixList:
    """The rules of one public-suffix list, as sets of label-reversed tuples."""

    def __init__(self, lines) -> None:
        self.rules: set[tuple[str, ...]] = set()
        self.exceptions: set[tuple[str, ...]] = set()
        for line in lines:
            words = line.split(None, 1)
            if not words or words[0].startswith("//"):
                continue
            rule = words[0].lower()
            labels = _ascii_labels(rule.lstrip("!"))
            if labels is not None:
                (self.exceptions if rule.startswith("!") else self.rules).add(labels)
        #: Every proper prefix of a rule or exception: where no rule goes on from, a longer
        #: suffix cannot match, so :meth:`suffix_length` stops there (most names: after their
        #: top-level domain's label, instead of walking every label).
        self.inner: set[tuple[str, ...]] = {
            rule[:k] for rules in (self.rules, self.exceptions) for rule in rules
            for k in range(1, len(rule))}

    @classmethod
    def from_file(cls, path: str = PSL_PATH) -> "SuffixList":
        with open(path, encoding="utf-8") as f:
            return cls(f)

    def suffix_length(self, labels: tuple[str, ...]) -> int:
        """How many labels (from the right) of the label-reversed ``labels`` are public suffix."""
        best = 1                                        # the implicit rule "*"
        for n in range(1, len(labels) + 1):
            head = labels[:n]
            if head in self.exceptions:
                return n - 1
            if head in self.rules or (head[:-1] + ("*",)) in self.rules:
                best = n
            if head not in self.inner:
                break
        return best

    def registrable(self, name: str) -> str:
        labels = tuple(reversed(name.split("."))) if name else ()
        if not labels:
            return name
        n = self.suffix_length(labels)
        if n >= len(labels):
            return name                                 # a public suffix is its own budget
        return ".".join(reversed(labels[:n + 1]))


def _ascii_labels(rule: str) -> tuple[str, ...] | None:
    """A rule's labels, right to left, as they arrive off the wire (IDNA labels as ``xn--``)."""
    out = []
    for label in reversed(rule.split(".")):
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                return None                             # a rule no wire name can match
        out.append(label)
    return tuple(out)


def _load() -> SuffixList | None:
    try:
        return SuffixList.from_file()
    except (OSError, UnicodeError) as exc:
        log.warning("public-suffix list unreadable (%s: apt-get install publicsuffix): grant "
                    "budgets count by the last two labels", exc)
        return None


_PSL = _load()


@lru_cache(maxsize=8192)
def registrable_domain(name: str) -> str:
    """The registrable domain of ``name`` (normalized: lower case, no trailing dot); never raises."""
    if _PSL is not None:
        try:
            return _PSL.registrable(name)
        except Exception:                               # hostile input: fall back, never raise
            pass
    labels = name.rsplit(".", 2)
    return ".".join(labels[-2:]) if len(labels) > 1 else name

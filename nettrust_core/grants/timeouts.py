"""How long an answer's addresses are granted, and the comment that says which answer it was."""

from __future__ import annotations

from ..firewall.base import COMMENT_MAX


class Timeouts:
    """``clamp(ttl, min_ttl, max_ttl) + grace`` seconds per address (``grants.*``)."""

    __slots__ = ("min_ttl", "max_ttl", "grace")

    def __init__(self, min_ttl: float, max_ttl: float, grace: float) -> None:
        self.min_ttl, self.max_ttl, self.grace = float(min_ttl), float(max_ttl), float(grace)

    def for_ttl(self, ttl: int) -> float:
        return min(max(float(ttl), self.min_ttl), self.max_ttl) + self.grace


def comment(chain: tuple[str, ...]) -> str:
    """The name that opened the grant: the question, and the final name when a CNAME led there
    (cut to the kernel's comment size at a UTF-8 boundary)."""
    text = chain[0] if len(chain) == 1 else f"{chain[0]}>{chain[-1]}"
    data = text.encode("utf-8", "replace")[:COMMENT_MAX]     # a lone surrogate becomes "?"
    return data.decode("utf-8", "ignore")

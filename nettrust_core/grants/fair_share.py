"""Fair shares for eviction: how many to take from each group so the largest give first."""

from __future__ import annotations


def water_fill(counts: dict[str, int], n: int) -> dict[str, int]:
    """How many to take from each key so that ``n`` are taken and the largest give first:
    every key above a common level gives down to it (ties at the level: largest first)."""
    if n <= 0 or not counts:
        return {}
    if n >= sum(counts.values()):
        return dict(counts)
    values = list(counts.values())
    low, high = 0, max(values)              # the highest level whose excess still covers n
    while low < high:
        mid = (low + high + 1) // 2
        if sum(c - mid for c in values if c > mid) >= n:
            low = mid
        else:
            high = mid - 1
    quotas = {k: c - low - 1 for k, c in counts.items() if c > low + 1}
    rest = n - sum(quotas.values())
    for k, _c in sorted(((k, c) for k, c in counts.items() if c > low), key=lambda kc: -kc[1]):
        if rest <= 0:
            break
        quotas[k] = quotas.get(k, 0) + 1
        rest -= 1
    return quotas

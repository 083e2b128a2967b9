"""Does the shared tracker read back from Redis agree with the kernel?  Asked once per start,
before the read-back is trusted.

The host hash outlives the kernel's sets: a reboot, ``nettrust flush`` or a deleted table while
the resolver was stopped leave it naming grants the kernel no longer holds.  Trusted, those
would be believed live, their answers never written again, and their connects refused until the
hash's expiry.  So a sample of the read-back (the longest-living grant of each IP version and a
few at random) is looked up in the kernel first: one missing refuses the read-back (the kernel's
sets are read back instead, and the hash is deleted so its stale grants cannot be trusted at a
later start).  In normal operation none is missing: the writer deletes from the hash every grant
the tracker forgets (revoked, expired), and only a crash can lose its last 50 ms of deletions.
"""

from __future__ import annotations

import errno
import random
from typing import Any

from ..errors import NetTrustError
from ..lifecycle.adoption import longest
from ..lifecycle.verify import VERIFY_MARGIN
from ..networks import key_address

#: Grants sampled per IP version, besides the longest-living one.
SAMPLES = 15


def disagreement(backend: Any, live: list[tuple[int, dict, dict]], now: float,
                 rng: random.Random | None = None,
                 tops: list[tuple[int, float] | None] | None = None) -> str | None:
    """Sample ``live`` (per version: key -> expiry on the tracker clock ``now``, key -> owner)
    against the kernel: a reason to refuse it, or None.  ``tops``: :func:`longest` of each
    version, when the caller has it already (a pass over a million grants)."""
    rng = rng or random.Random()
    if tops is None:
        tops = [longest(incoming) for _v, incoming, _o in live]
    sampled = missing = 0
    for (_version, incoming, _owners), top in zip(live, tops, strict=True):
        keys = [top[0]] if top is not None else []
        keys += rng.sample(list(incoming), min(SAMPLES, len(incoming)))
        for key in dict.fromkeys(keys):
            if incoming[key] - now < VERIFY_MARGIN:
                continue
            sampled += 1
            try:
                left = backend.lookup(key_address(key))
            except NetTrustError as exc:
                if getattr(exc, "errno", None) == errno.ENOENT:
                    return f"its grant set is missing from the kernel ({exc})"
                raise
            if left is None:
                missing += 1
    if missing:
        return (f"{missing} of {sampled} sampled grants are missing from the kernel (sets "
                f"recreated or flushed since it was written)")
    return None

"""The registrable domain of a name (``www.example.co.uk`` → ``example.co.uk``): the unit the
grant budgets count by, so a wildcard zone cannot multiply its share by inventing names.

The public-suffix list comes from the ``publicsuffixlist`` package (pure Python, maintained,
its list refreshed with every release; installed with the project), ICANN and private sections
both: ``a.github.io`` and ``b.github.io`` are different tenants, as browsers treat them.
A name that is itself a public suffix (or the root) is its own budget.  Without the package the
last two labels stand in (coarser for ``co.uk``-style suffixes), with a warning.
"""

from __future__ import annotations

import logging
from functools import lru_cache

log = logging.getLogger("nettrust.registrable")

try:
    from publicsuffixlist import PublicSuffixList
except ImportError:                                     # pragma: no cover - depends on the venv
    _PSL = None
    log.warning("publicsuffixlist is not installed: grant budgets count by the last two labels")
else:
    _PSL = PublicSuffixList(accept_unknown=True)


@lru_cache(maxsize=8192)
def registrable_domain(name: str) -> str:
    """The registrable domain of ``name`` (normalized: lower case, no trailing dot); never raises."""
    if _PSL is not None:
        try:
            found = _PSL.privatesuffix(name)
        except Exception:                               # hostile bytes: fall back, never raise
            found = None
        if found:
            return found
    labels = name.rsplit(".", 2)
    return ".".join(labels[-2:]) if len(labels) > 1 else name

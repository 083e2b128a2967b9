"""Which local answers the administrator declared, as opposed to RPZ feeds and auth-zones.

Unbound hands every answer it makes without recursion to the ``reply_local`` callback: the
administrator's ``local-data``, but also RPZ rewrites and ``auth-zone`` answers.  Only the first
may skip the rebinding guard and ``require_dnssec`` (the administrator wrote the address); an
RPZ feed or a transferred zone is as untrusted as any upstream.  The callback cannot tell them
apart, so the module asks :class:`LocalNames`, built from Unbound's own ``local-data`` and
``local-zone`` settings, whether the query name is one the administrator declared.
"""

from __future__ import annotations

from .answer import normalize


class LocalNames:
    def __init__(self, names=(), redirect_zones=()) -> None:
        self.names = frozenset(names)
        self.redirect_zones = frozenset(redirect_zones)

    @classmethod
    def from_config(cls, local_data, local_zones=()) -> "LocalNames":
        """``local_data``: Unbound's ``local-data`` strings ("name [ttl] [class] type rdata");
        ``local_zones``: (name, type) pairs; a ``redirect`` zone answers every name below it
        with its apex's data, so those names count as declared too."""
        names = set()
        for line in local_data:
            owner = (line or "").strip().split(None, 1)
            if owner:
                names.add(normalize(owner[0].strip('"')))
        redirect = {normalize(z) for z, kind in local_zones if (kind or "").strip() == "redirect"}
        return cls(names, redirect & names)

    def declared(self, name: str) -> bool:
        if name in self.names:
            return True
        if self.redirect_zones:
            labels = name.split(".")
            return any(".".join(labels[i:]) in self.redirect_zones for i in range(len(labels)))
        return False

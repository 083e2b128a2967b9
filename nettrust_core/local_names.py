"""Which local answers the administrator declared, as opposed to RPZ feeds and auth-zones.

Unbound hands every answer it makes without recursion to the ``reply_local`` callback: the
administrator's ``local-data``, but also RPZ rewrites and ``auth-zone`` answers.  Only the first
may skip the rebinding guard and ``require_dnssec`` (the administrator wrote the address); an
RPZ feed or a transferred zone is as untrusted as any upstream.  The callback cannot tell them
apart, so the module asks :class:`LocalNames`, built from Unbound's own ``local-data`` and
``local-zone`` settings, whether the query name is one the administrator declared.
"""

from __future__ import annotations

import glob
import os
import re

from .answer import normalize

_DIRECTIVE = re.compile(r'^\s*(local-data|local-zone|include|include-toplevel)\s*:\s*(.*?)\s*$')
MAX_INCLUDES = 256


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

    @classmethod
    def from_conf_file(cls, conf: str) -> "LocalNames":
        """Read ``local-data``/``local-zone`` from an unbound.conf and the files it includes.

        Unbound frees its parsed local-data before modules start and ``unbound-checkconf -o``
        cannot print it, so the module reads the files itself.  What it misses is not
        declared: those answers are judged in full (fail closed), never trusted.
        """
        data, zones = [], []
        pending, seen = [conf], set[str]()
        while pending and len(seen) < MAX_INCLUDES:
            path = pending.pop(0)
            if path in seen:
                continue
            seen.add(path)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = f.readlines()
            except OSError:
                continue
            for line in lines:
                m = _DIRECTIVE.match(_strip_comment(line))
                if not m:
                    continue
                key, value = m.groups()
                if key.startswith("include"):
                    pattern = _unquote(value)
                    if not os.path.isabs(pattern):
                        pattern = os.path.join(os.path.dirname(path), pattern)
                    pending.extend(sorted(glob.glob(pattern)))
                elif key == "local-data":
                    data.append(_unquote(value))
                else:
                    parts = value.split()
                    if len(parts) >= 2:
                        zones.append((_unquote(parts[0]), _unquote(parts[1])))
        return cls.from_config(data, zones)

    def declared(self, name: str) -> bool:
        if name in self.names:
            return True
        if self.redirect_zones:
            labels = name.split(".")
            return any(".".join(labels[i:]) in self.redirect_zones for i in range(len(labels)))
        return False


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str:
    """Drop a '#' comment that is not inside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[:i]
    return line

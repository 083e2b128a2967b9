"""Encrypted-DNS bypass: canary names, and the well-known DoH/DoT endpoints refused attempts are
recognised by.

Canary names answered NXDOMAIN make browsers and operating systems turn their own DNS-over-HTTPS
off: Firefox asks ``use-application-dns.net`` (its "canary domain"); Apple's iCloud Private
Relay asks ``mask.icloud.com`` and ``mask-h2.icloud.com``.  They are answered NXDOMAIN whatever
``policy.blocked_answer`` says (a 0.0.0.0 answer would not switch Firefox's DoH off).
"""

from __future__ import annotations

import ipaddress

CANARY_NAMES = frozenset(("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"))
CANARY_RULE = "policy.canary_names"

#: Public resolvers' anycast addresses serving DoH (443) and DoT (853): a refused connection to
#: one of them is a bypass attempt.  (A device's own DoH to other hosts shows as port 443 only.)
DOH_ENDPOINTS = {
    "Google Public DNS": ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"),
    "Cloudflare": ("1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
                   "1.1.1.2", "1.0.0.2", "1.1.1.3", "1.0.0.3"),
    "Quad9": ("9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9", "9.9.9.11",
              "149.112.112.11"),
    "OpenDNS": ("208.67.222.222", "208.67.220.220", "2620:119:35::35", "2620:119:53::53"),
    "AdGuard DNS": ("94.140.14.14", "94.140.15.15", "2a10:50c0::ad1:ff", "2a10:50c0::ad2:ff"),
    "CleanBrowsing": ("185.228.168.9", "185.228.169.9"),
    "Mullvad DNS": ("194.242.2.2", "2a07:e340::2"),
}
_BY_ADDRESS = {ipaddress.ip_address(a): who for who, addrs in DOH_ENDPOINTS.items()
               for a in addrs}


def is_canary(name: str) -> bool:
    return name in CANARY_NAMES


def bypass_kind(destination: str, port: int | None, protocol: str) -> str | None:
    """``"DoT"``, ``"DoH (Cloudflare)"``, ``"DNS (Quad9)"``… for a refused attempt that looks like
    an encrypted-DNS bypass, else None."""
    if port == 853:
        return "DoT" if protocol == "tcp" else "DoQ"
    try:
        who = _BY_ADDRESS.get(ipaddress.ip_address(destination))
    except ValueError:
        return None
    if who is None:
        return None
    return f"DoH ({who})" if port == 443 else f"port {port} ({who})"


def recent_attempts(database: str, since: float = 86400.0, now: float | None = None) -> dict:
    """Refused bypass attempts the agent recorded in the last ``since`` seconds, by destination:
    ``{"attempts": n, "by_destination": [{destination, port, bypass, count, last}]}``."""
    import json
    import os
    import sqlite3
    import time
    if not os.path.exists(database):
        return {"error": f"no statistics database at {database}"}
    start = (time.time() if now is None else now) - since
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)
        try:
            rows = conn.execute("SELECT ts, data FROM events WHERE kind = 'unauthorized' AND "
                                "ts >= ? AND data LIKE '%\"bypass\"%'", (start,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"error": f"{database}: {exc}"}
    groups: dict[tuple, dict] = {}
    for ts, data in rows:
        try:
            d = json.loads(data)
        except ValueError:
            continue
        key = (d.get("destination"), d.get("port"), d.get("bypass"))
        g = groups.setdefault(key, {"destination": key[0], "port": key[1], "bypass": key[2],
                                    "count": 0, "last": 0.0, "users": set()})
        g["count"] += 1
        g["last"] = max(g["last"], ts)
        if d.get("user") or d.get("uid") is not None:
            g["users"].add(str(d.get("user") or d.get("uid")))
    out = sorted(groups.values(), key=lambda g: -g["count"])
    for g in out:
        g["users"] = sorted(g["users"])
    return {"attempts": sum(g["count"] for g in out), "by_destination": out}

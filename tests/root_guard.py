"""The test session's promise about this machine, checked: the root network namespace's
firewall, links, forwarding sysctls and resolver configuration are the same at the end of the
run as at its start.

Everything the tests do happens inside network namespaces they create. A test or fixture that
loads the module outside one (Unbound, unbound-checkconf, a CLI verb) would install NetTrust's
drop-all ruleset on this host: the session fails when that, or any other change, is seen.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class RootState:
    ruleset: str | None
    links: tuple[str, ...]
    forwarding: tuple[tuple[str, str], ...]
    resolv_conf: str | None


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None and shutil.which(argv[0], path="/usr/sbin:/sbin") is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return f"<{argv[0]} failed: {exc}>"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def snapshot() -> RootState:
    """What the root namespace looks like now (this process must be in it)."""
    links = _run(["ip", "-o", "link", "show"]) or ""
    names = tuple(sorted(line.split(":")[1].strip().split("@")[0]
                         for line in links.splitlines() if line.count(":") >= 2))
    paths = ["/proc/sys/net/ipv4/ip_forward",
             *sorted(glob.glob("/proc/sys/net/ipv4/conf/*/forwarding")),
             *sorted(glob.glob("/proc/sys/net/ipv6/conf/*/forwarding"))]
    forwarding = tuple((p, (_read(p) or "").strip()) for p in paths
                       if "/conf/" not in p or p.split("/")[-2] in ("all", "default") + names)
    return RootState(_run(["nft", "list", "ruleset"]), names, forwarding, _read("/etc/resolv.conf"))


def differences(before: RootState, after: RootState) -> list[str]:
    """Human-readable lines naming what changed between two snapshots (empty: nothing)."""
    out = []
    for f in fields(RootState):
        old, new = getattr(before, f.name), getattr(after, f.name)
        if old == new:
            continue
        if f.name == "links":
            added, gone = sorted(set(new) - set(old)), sorted(set(old) - set(new))
            out.append(f"links: added {added}, removed {gone}")
        elif f.name == "forwarding":
            changed = [f"{p}: {dict(old).get(p)} -> {v}" for p, v in new if dict(old).get(p) != v]
            out.append("forwarding sysctls: " + "; ".join(changed or ["set of sysctls changed"]))
        else:
            out.append(f"{f.name} changed:\n--- before\n{old}\n--- after\n{new}")
    return out

"""The resolver's cgroup for ``firewall.resolver_cgroup``: where cgroup v2 is mounted, and the
``socket cgroupv2`` match nft loads for it (nft syntax; nft 1.0.6's JSON cannot say it)."""

from __future__ import annotations

import os

from ..errors import FirewallError
from .base import RulesetSpec
from .nftables_rules import CGROUP_ROOT, FAMILY


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``…/unified`` on a
    hybrid host), preferring a mount under :data:`CGROUP_ROOT`; None when there is none."""
    found = []
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    found.append(left.split(" ")[4].replace("\\040", " "))
    except OSError:
        return None
    found.sort(key=lambda m: (not (m + "/").startswith(CGROUP_ROOT + "/"), len(m)))
    return found[0] if found else None


def resolver_cgroup_match(spec: RulesetSpec, mount: str | None = None) -> str:
    """``socket cgroupv2 level N "path"`` for the resolver's cgroup, in nft syntax.

    nft (1.0.6) turns the path into the cgroup's id when the rule is loaded, so the cgroup must
    exist then: a missing one is refused here with what to do.  The kernel keeps the id; if the
    cgroup is removed later (its unit stopped) the rule matches nothing -- the resolver loses
    its exemption, fail closed -- until the next load (Unbound's start) reads the new id.
    The level is the path's depth below the root of the hierarchy.
    """
    path = spec.resolver_cgroup or ""
    mount = mount if mount is not None else cgroup2_mount()
    if mount is None:
        raise FirewallError("firewall.resolver_cgroup is set but no cgroup v2 hierarchy is "
                            "mounted", table=spec.table, family=FAMILY)
    where = f"{mount}/{path}"
    if not os.path.isdir(where):
        raise FirewallError(f"firewall.resolver_cgroup: the cgroup {path!r} does not exist "
                            f"({where}); it must exist when the ruleset is loaded -- start the "
                            "resolver's unit first, or fix the path (systemd-cgls shows it)",
                            table=spec.table, family=FAMILY)
    rel = os.path.relpath(where, CGROUP_ROOT)
    if rel.startswith(".."):
        raise FirewallError(f"firewall.resolver_cgroup: the cgroup v2 hierarchy is mounted at "
                            f"{mount}, outside {CGROUP_ROOT}, where nft looks for it",
                            table=spec.table, family=FAMILY)
    return f'socket cgroupv2 level {len(path.split("/"))} "{rel}"'

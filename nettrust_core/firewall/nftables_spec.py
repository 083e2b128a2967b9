"""What a :class:`~.base.RulesetSpec` must satisfy before the nftables backend loads it: names
nft accepts, hooks it can program, and no forward hook without a LAN side (grants would let the
internet connect in).  Checked before anything touches the kernel.
"""

from __future__ import annotations

import re

from ..errors import FirewallError
from .base import MAX_INSTANCES, RulesetSpec
from .nftables_rules import FAMILY, FILTER_HOOKS

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\Z")
_CGROUP = re.compile(r"[A-Za-z0-9_.@:-]+(?:/[A-Za-z0-9_.@:-]+)*\Z")


def validate_spec(spec: RulesetSpec) -> None:
    """Refuse a spec nft would reject or misread, before anything touches the kernel."""
    problems = []
    if not _NAME.match(spec.table):
        problems.append(f"table name {spec.table!r} (letters, digits, _ . -; up to 63)")
    if spec.action not in ("reject", "drop"):
        problems.append(f"action {spec.action!r} (reject or drop)")
    if not spec.hooks or len(set(spec.hooks)) != len(spec.hooks) or not set(spec.hooks) <= set(FILTER_HOOKS):
        problems.append(f"hooks {spec.hooks!r} (output, optionally forward)")
    if not isinstance(spec.priority, int) or not -2**31 <= spec.priority < 2**31:
        problems.append(f"priority {spec.priority!r} (a 32-bit integer)")
    if spec.resolver_uid is not None and (not isinstance(spec.resolver_uid, int) or spec.resolver_uid < 0):
        problems.append(f"resolver_uid {spec.resolver_uid!r}")
    if not isinstance(spec.instances, int) or not 1 <= spec.instances <= MAX_INSTANCES:
        problems.append(f"instances {spec.instances!r} (1 to {MAX_INSTANCES})")
    if "forward" in spec.hooks and not (spec.lan_interfaces or spec.lan_networks):
        problems.append("the forward hook without lan_interfaces or lan_networks (grants would "
                        "let the internet connect in)")
    if any(not _IFNAME.match(i) for i in spec.lan_interfaces):
        problems.append(f"lan_interfaces {spec.lan_interfaces!r}")
    if spec.resolver_cgroup is not None and (spec.resolver_uid is None
                                             or not _CGROUP.match(spec.resolver_cgroup)):
        problems.append(f"resolver_cgroup {spec.resolver_cgroup!r} (a cgroup path, with a resolver_uid)")
    if (spec.per_client or spec.open_networks) and "forward" not in spec.hooks:
        problems.append("per_client / open_networks without the forward hook")
    if any(not isinstance(p, int) or not 0 < p < 65536 for p in spec.management_ports):
        problems.append(f"management_ports {spec.management_ports!r}")
    if problems:
        raise FirewallError("invalid ruleset: " + "; ".join(problems), table=spec.table, family=FAMILY)

"""Who else filters on our hooks: every base chain there, and the ones that matter to NetTrust.

In nftables every base chain on a hook sees the packet, in priority order; ``accept`` only ends
that chain, ``drop`` ends everything.  So another table's ``accept`` never bypasses NetTrust.
What can matter:

* a ``nat`` or ``route`` chain that runs before ours can rewrite the destination or reroute the
  packet, so NetTrust checks a different address than the one DNS answered (DNAT on output at
  priority -100 is common: docker, kube-proxy);
* for the forward hook, any ``nat`` chain on prerouting (it always runs before forward);
* a chain at the same priority as ours: the kernel's order between them is not defined;
* legacy iptables tables (``/proc/net/ip*_tables_names``), which this report cannot list.

The chains come from the backend's ``base_chains()`` (for nftables,
:class:`nettrust_core.firewall.diagnostics.BaseChain`); this module only reads their fields, so
the lifecycle imports nothing from the firewall package.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

#: The fields of a base chain, in the order :func:`describe` shows them.
FIELDS = ("family", "table", "name", "hook", "priority", "type", "policy")


class BaseChain(Protocol):
    family: str
    table: str
    name: str
    hook: str
    priority: int
    type: str
    policy: str


@runtime_checkable
class ChainSource(Protocol):
    """What the report needs of a backend: its firewall.diagnostics.Diagnostics side."""

    def base_chains(self) -> Sequence[BaseChain]: ...


def describe(chain: BaseChain | Mapping[str, Any]) -> str:
    """``inet nettrust output: filter hook output priority 0 policy drop``."""
    f = chain if isinstance(chain, Mapping) else {k: getattr(chain, k) for k in FIELDS}
    return (f"{f['family']} {f['table']} {f['name']}: {f['type']} hook {f['hook']} "
            f"priority {f['priority']} policy {f['policy']}")


IP_FAMILIES = ("inet", "ip", "ip6")
LEGACY_FILES = ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")


def relevant(chains: Sequence[BaseChain], hooks: tuple[str, ...]) -> list[BaseChain]:
    """Chains on our hooks (and prerouting, when we filter forward), in priority order."""
    wanted = set(hooks) | ({"prerouting"} if "forward" in hooks else set())
    return sorted((c for c in chains if c.family in IP_FAMILIES and c.hook in wanted),
                  key=lambda c: (c.hook, c.priority, c.family, c.table, c.name))


def warnings(chains: Sequence[BaseChain], table: str, hooks: tuple[str, ...], priority: int,
             legacy: list[str] | None = None) -> list[str]:
    out = []
    for c in relevant(chains, hooks):
        if c.family == "inet" and c.table == table:
            continue
        if c.hook == "prerouting":
            if c.type == "nat":
                out.append(f"{describe(c)} may rewrite destinations before NetTrust's forward chain "
                           "checks them")
            continue
        if c.type in ("nat", "route") and c.priority < priority:
            out.append(f"{describe(c)} runs before NetTrust (priority {priority}) and may rewrite or "
                       "reroute the destination it checks")
        elif c.priority == priority:
            out.append(f"{describe(c)} has NetTrust's priority {priority}: the order between them is not "
                       "defined (set firewall.priority to tell)")
    for name in legacy or ():
        out.append(f"legacy iptables table {name!r} is loaded: not listed here; its NAT/mangle "
                   "rules can change what NetTrust sees")
    return out


def legacy_tables() -> list[str]:
    names = []
    for path in LEGACY_FILES:
        try:
            with open(path) as f:
                names += [ln.strip() for ln in f if ln.strip()]
        except OSError:
            pass
    return names


def report(backend: ChainSource, table: str, hooks: tuple[str, ...], priority: int) -> dict:
    """``{"chains": [...], "warnings": [...]}`` for status output and the start-up log."""
    chains = backend.base_chains()
    return {"chains": [{k: getattr(c, k) for k in FIELDS} for c in relevant(chains, hooks)],
            "warnings": warnings(chains, table, hooks, priority, legacy_tables())}

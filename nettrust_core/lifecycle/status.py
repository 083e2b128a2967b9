"""The lifecycle part of ``nettrust status``: conntrack usable or not, and the chain report.

Runs in the CLI's process (root), asking the kernel the same questions the resolver asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NetTrustError
from ..ruleset import CT_MARK
from . import chains
from .conntrack import Conntrack, ConntrackError

if TYPE_CHECKING:
    from ..config import Config


def lifecycle_status(config: Config, backend: object, conntrack: Conntrack | None = None) -> dict:
    """``conntrack``: what to ask (default the kernel's; tests inject a fake).  ``backend``: any
    firewall backend; its chains are reported when it is a :class:`.chains.ChainSource`."""
    out: dict = {}
    if config.lifecycle.liveness:
        ct = conntrack if conntrack is not None else Conntrack(CT_MARK)
        try:
            live = ct.live_destinations()
            out["conntrack"] = {"available": True, "live_connections": sum(live.values()),
                                "live_hosts": len(live)}
        except ConntrackError as exc:
            out["conntrack"] = {"available": False, "error": str(exc)}
        finally:
            ct.close()
    else:
        out["conntrack"] = {"available": None, "error": "not used (lifecycle.liveness = false)"}
    from .connections import ConnectionAudit        # reads only: never terminates from here
    audit = ConnectionAudit(config, backend, terminate=False)
    try:
        found, _known = audit.find()
        out["unauthorized_connections"] = [item.to_dict() for _conn, item in found]
    except NetTrustError as exc:
        out["unauthorized_connections_error"] = str(exc)
    fw = config.firewall
    if not isinstance(backend, chains.ChainSource):
        out["chains_error"] = "the firewall backend lists no base chains"
        return out
    try:
        out.update(chains.report(backend, fw.table, tuple(fw.hooks), fw.priority))
    except NetTrustError as exc:
        out["chains_error"] = str(exc)
    return out


def format_lifecycle(st: dict, table: str) -> list[str]:
    lines = []
    ct = st.get("conntrack", {})
    if ct.get("available"):
        lines.append(f"conntrack: available, {ct['live_connections']} live connections to "
                     f"{ct['live_hosts']} granted addresses")
    elif ct.get("available") is False:
        lines.append(f"conntrack: UNAVAILABLE ({ct.get('error')}) — grants are not renewed for "
                     "open connections and lapse at their DNS expiry; DNS and grants keep working")
    else:
        lines.append(f"conntrack: {ct.get('error')}")
    found = st.get("unauthorized_connections")
    if found is not None:
        lines.append(f"connections no grant allows: {len(found)}")
        for c in found[:20]:
            lines.append(f"  {c['proto']} {c['src']}:{c['sport']} -> {c['dst']}:{c['dport']}")
        if len(found) > 20:
            lines.append(f"  … and {len(found) - 20} more (nettrust status --json)")
    if "unauthorized_connections_error" in st:
        lines.append(f"connections: cannot audit ({st['unauthorized_connections_error']})")
    if "chains" in st:
        lines.append("base chains on NetTrust's hooks (lower priority runs first):")
        for c in st["chains"]:
            ours = "  (NetTrust)" if c["family"] == "inet" and c["table"] == table else ""
            lines.append(f"  {chains.describe(c)}{ours}")
    for w in st.get("warnings", []):
        lines.append(f"warning: {w}")
    if "chains_error" in st:
        lines.append(f"base chains: cannot list ({st['chains_error']})")
    return lines

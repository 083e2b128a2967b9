"""Gateway mode's part of ``nettrust hosts`` and ``nettrust status``: the per-client grants
(client -> destination, time left) and the struck clients, read through the backend's optional
:class:`~nettrust_core.firewall.base.ClientPairs` verbs (nothing when the backend has none)."""

from __future__ import annotations

from .durations import format_duration
from .firewall.base import ClientPairs


def gateway_state(backend) -> dict:
    """``{"client_pairs": [...], "struck": [...]}`` as plain values (JSON-ready), sorted."""
    if not isinstance(backend, ClientPairs):
        return {"client_pairs": [], "struck": []}
    pairs = sorted(backend.list_pairs(), key=lambda p: (str(p.client), p.address.version,
                                                        p.address, -p.expires_in))
    struck = sorted(backend.list_strikes(), key=lambda s: str(s.who))
    return {"client_pairs": [{"client": str(p.client), "address": str(p.address),
                              "expires_in": round(p.expires_in, 3), "timeout": p.timeout,
                              "name": p.comment, "instance": p.instance} for p in pairs],
            "struck": [{"struck": s.who if isinstance(s.who, int) else str(s.who),
                        "uid": isinstance(s.who, int), "expires_in": round(s.expires_in, 3)}
                       for s in struck]}


def format_gateway(state: dict) -> list[str]:
    """The text lines: one per pair and per struck client."""
    pairs, struck = state["client_pairs"], state["struck"]
    lines = [f"per-client grants: {len(pairs)}"]
    if pairs:
        cw = max(len(p["client"]) for p in pairs)
        aw = max(len(p["address"]) for p in pairs)
        lines.append(f"  {'CLIENT':<{cw}}  {'DESTINATION':<{aw}}  {'LEFT':>8}  NAME")
        for p in pairs:
            lines.append(f"  {p['client']:<{cw}}  {p['address']:<{aw}}  "
                         f"{format_duration(round(p['expires_in'])):>8}  {p['name']}")
    lines.append(f"struck clients: {len(struck)}")
    for s in struck:
        who = f"uid {s['struck']}" if s["uid"] else s["struck"]
        lines.append(f"  {who}  DNS and DoT dropped for {format_duration(round(s['expires_in']))}")
    return lines

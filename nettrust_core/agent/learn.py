"""``nettrust learn``: allow patterns proposed from the grants actually written, to review.

Read from the statistics database (read-only, like ``nettrust stats``): every name whose answer
opened at least one address since ``--since``.  The names are then collapsed, from the most
specific to the least:

1. **Siblings become ``*.parent``**: when at least ``siblings`` (default 3) used names sit exactly
   one label below the same parent, they are replaced by ``*.parent``.
2. **A registrable domain's many entries become ``**.domain``**: when at least ``siblings``
   entries (names or ``*.`` patterns from step 1) remain strictly below the same registrable
   domain (``example.co.uk``, from the public-suffix list) *and* they sit under at least two
   different parents, they are replaced by ``**.domain``.  Nothing ever collapses above a
   registrable domain: no ``**.com``, no ``**.github.io``-wide pattern for two tenants.
3. A registrable domain used itself (``example.com``) stays listed by name: ``**.example.com``
   does not cover the apex.

Connections refused (or, in audit mode, that would have been) to addresses no recorded answer
named -- bare-IP connections -- are listed apart, commented out: reaching them needs
``reachable.hosts``, which is a different decision from allowing a name.

Every proposed line carries a ``# learned:`` comment saying what it stands for.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from ..registrable import registrable_domain

#: Used names one label below a parent (or entries below a registrable domain) that collapse.
SIBLINGS = 3
#: Names shown in a collapsed entry's comment.
SHOWN = 3
#: Names listed per entry in the JSON (``name_count`` has them all).
NAMES_LISTED = 20


@dataclass(frozen=True)
class Entry:
    """One proposed allow pattern and the used names it stands for."""

    pattern: str
    names: tuple[str, ...]
    grants: int

    def comment(self) -> str:
        if self.names == (self.pattern,):
            return f"learned: {self.grants} grant{'s' * (self.grants != 1)}"
        shown = ", ".join(self.names[:SHOWN]) + (", …" if len(self.names) > SHOWN else "")
        return f"learned: {len(self.names)} names ({shown}), {self.grants} grants"


@dataclass(frozen=True)
class BareAddress:
    address: str
    attempts: int
    ports: tuple[str, ...]
    users: tuple[str, ...]
    verdicts: tuple[str, ...]

    def comment(self) -> str:
        who = f", by {', '.join(self.users)}" if self.users else ""
        return (f"learned: {self.attempts} attempt{'s' * (self.attempts != 1)} "
                f"({', '.join(self.verdicts)}) to {', '.join(self.ports)}{who}")


@dataclass
class Proposal:
    since: float
    entries: list[Entry] = field(default_factory=list)
    bare: list[BareAddress] = field(default_factory=list)
    names_used: int = 0

    def to_dict(self) -> dict:
        return {"since": self.since, "names_used": self.names_used,
                "allow": [{"pattern": e.pattern, "names": list(e.names[:NAMES_LISTED]),
                           "name_count": len(e.names), "grants": e.grants}
                          for e in self.entries],
                "bare_addresses": [b.__dict__ | {"ports": list(b.ports), "users": list(b.users),
                                                 "verdicts": list(b.verdicts)} for b in self.bare]}


def collapse(used: dict[str, int], siblings: int = SIBLINGS) -> list[Entry]:
    """``used``: name → grants written for it.  Returns the entries, sorted (see module doc)."""
    siblings = max(2, siblings)
    apexes = [n for n in used if registrable_domain(n) == n]     # never a sibling: no *.com
    # 1. siblings one label below the same parent -> *.parent
    by_parent: dict[str, list[str]] = defaultdict(list)
    for name in used:
        if registrable_domain(name) != name:
            by_parent[name.partition(".")[2]].append(name)
    below: list[Entry] = []
    for parent, names in by_parent.items():
        names.sort()
        if len(names) >= siblings:
            below.append(Entry(f"*.{parent}", tuple(names), sum(used[n] for n in names)))
        else:
            below += [Entry(n, (n,), used[n]) for n in names]
    # 2. many entries under two or more parents below one registrable domain -> **.domain
    by_domain: dict[str, list[Entry]] = defaultdict(list)
    for e in below:
        by_domain[registrable_domain(e.names[0])].append(e)
    out = [Entry(n, (n,), used[n]) for n in apexes]
    for domain, group in by_domain.items():
        parents = {e.names[0].partition(".")[2] for e in group}
        if len(group) >= siblings and len(parents) >= 2:
            members = tuple(sorted(n for e in group for n in e.names))
            out.append(Entry(f"**.{domain}", members, sum(e.grants for e in group)))
        else:
            out += group
    return sorted(out, key=lambda e: (_sort_key(e.pattern), e.pattern))


def _sort_key(pattern: str) -> tuple:
    """Grouped by registrable domain, in name order (the apex before its ``**.``)."""
    bare = pattern.lstrip("*.")
    return (tuple(reversed(registrable_domain(bare).split("."))),
            tuple(reversed(bare.split("."))), pattern.count("*"))


def propose(conn, start: float = 0.0, siblings: int = SIBLINGS) -> Proposal:
    """The proposal from a read-only connection (:func:`..stats_view.connect`)."""
    used = {r[0]: r[1] for r in conn.execute(
        "SELECT name, COUNT(*) FROM grant_log WHERE ts >= ? AND name IS NOT NULL "
        "GROUP BY name", (start,))}
    proposal = Proposal(since=start, names_used=len(used))
    proposal.entries = collapse(used, siblings)
    proposal.bare = bare_addresses(conn, start)
    return proposal


#: DNS and DoT to anything but the resolver stay refused whatever reachable.hosts says (a bypass,
#: not a connection to allow): never proposed.
DNS_PORTS = frozenset({53, 853})


def bare_addresses(conn, start: float = 0.0) -> list[BareAddress]:
    """Refused / would-refuse attempts to addresses that no recorded answer named (DNS and DoT
    attempts left out: they are bypass attempts, which no reachable host would let through)."""
    found: dict[str, dict] = {}
    for d in conn.execute("SELECT destination, protocol, port, user, uid, verdict "
                          "FROM refused_attempts WHERE ts >= ? ORDER BY ts", (start,)):
        address = str(d["destination"] or "")
        if not address or d["port"] in DNS_PORTS:
            continue
        f = found.setdefault(address, {"n": 0, "ports": set(), "users": set(), "verdicts": set()})
        f["n"] += 1
        f["ports"].add(f"{d['protocol'] or '?'}/{d['port'] or '-'}")
        if d["user"] or d["uid"] is not None:
            f["users"].add(str(d["user"] or f"uid {d['uid']}"))
        f["verdicts"].add(str(d["verdict"] or "refused"))
    named = {r[0] for r in conn.execute(
        "SELECT DISTINCT address FROM answer_log WHERE address IN (%s)" % ",".join("?" * len(found)),
        tuple(found))} if found else set()
    return sorted((BareAddress(a, f["n"], tuple(sorted(f["ports"])), tuple(sorted(f["users"])),
                               tuple(sorted(f["verdicts"])))
                   for a, f in found.items() if a not in named),
                  key=lambda b: (-b.attempts, b.address))


def to_toml(proposal: Proposal, now: float | None = None) -> str:
    """The snippet: a ``[policy]`` table with ``allow``, bare addresses commented out."""
    now = time.time() if now is None else now
    since = (datetime.fromtimestamp(proposal.since).strftime("%Y-%m-%d %H:%M")
             if proposal.since else "the first record")
    n, used = len(proposal.entries), proposal.names_used
    lines = [f"# nettrust learn: {n} allow pattern{'s' * (n != 1)} proposed from {used} "
             f"name{'s' * (used != 1)} whose answers were granted,",
             f"# {since} to {datetime.fromtimestamp(now).strftime('%Y-%m-%d %H:%M')}. "
             "Review every line before using it; each says what it stands for.",
             '# With mode = "allowlist" (under [general]) these become the only names answered.',
             "[policy]"]
    if proposal.entries:
        width = max(len(_quoted(e.pattern)) for e in proposal.entries) + 1
        lines.append("allow = [")
        lines += [f"    {(_quoted(e.pattern) + ','):<{width}}  # {e.comment()}"
                  for e in proposal.entries]
        lines.append("]")
    else:
        lines.append("allow = []  # learned: no granted names in this period")
    if proposal.bare:
        lines += ["", "# Connections to bare addresses (no recorded DNS answer named them), "
                  "refused or that would be.",
                  "# Not proposed: they are not names. To let one through, uncomment it "
                  "(reachable.hosts opens it",
                  "# to every process and port):", "# [reachable]", "# hosts = ["]
        lines += [f"#     {_quoted(b.address)},  # {b.comment()}" for b in proposal.bare]
        lines.append("# ]")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return json.dumps(text)

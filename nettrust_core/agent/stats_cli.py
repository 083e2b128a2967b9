"""The ``nettrust agent`` and ``nettrust stats`` commands (registered by nettrust_core.cli).

Kept out of cli.py so the CLI module stays a list of thin commands; heavy imports (sqlite-utils,
prometheus-client) happen only when these commands run.
"""

from __future__ import annotations

import argparse
import json

from ..config import load_config
from ..errors import ConfigError


def register(sub) -> None:
    c = sub.add_parser("agent", help="run the statistics/metrics/alerts agent in the foreground")
    c.set_defaults(func=cmd_agent)

    st = sub.add_parser("stats", help="what was asked, answered and granted, and why")
    _shared_options(st, None)
    views = st.add_subparsers(dest="view", metavar="VIEW")
    # The shared options are accepted after the view too (`stats summary --since 1h`): each
    # view's copy has no default of its own, so one given before the view is kept.
    after = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _shared_options(after, argparse.SUPPRESS)
    views.add_parser("summary", parents=[after],
                     help="totals: queries by source and verdict, grants, events")
    t = views.add_parser("top", parents=[after], help="busiest domains, clients or blocked names")
    t.add_argument("what", choices=("domains", "clients", "blocked"))
    t.add_argument("-n", "--limit", type=int, default=10)
    h = views.add_parser("hosts", parents=[after],
                         help="per address: times queried, names, last grant, expiry")
    h.add_argument("-n", "--limit", type=int, default=100)
    c = views.add_parser("clients", parents=[after], help="per client: queries, blocked, names")
    c.add_argument("-n", "--limit", type=int, default=100)
    w = views.add_parser("why", parents=[after], help="the story of an address: the names, "
                         "answers, clients and rules that opened it, and refused attempts")
    w.add_argument("address")
    st.set_defaults(func=cmd_stats, view="summary")
    w = sub.add_parser("why", help="why an address is open, or was refused (= `stats why`)")
    w.add_argument("address")
    _shared_options(w, None)
    w.set_defaults(func=cmd_stats, view="why")

    c = sub.add_parser("learn", help="propose allow patterns from the grants recorded (a TOML "
                       "snippet to review)")
    c.add_argument("--since", default="7d", help='how far back ("7d", the default; "24h") or a '
                   "date/time")
    c.add_argument("--siblings", type=int, default=3, metavar="N",
                   help="N used names below one parent become *.parent (default 3)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--database", help="statistics database (default: stats.database)")
    c.set_defaults(func=cmd_learn)

    c = sub.add_parser("web", help="serve the dashboard (off by default: [web] enabled = true)")
    c.add_argument("--hash-password", action="store_true",
                   help="read a password (twice, or once from stdin) and print the "
                        "web.password_hash value to put in the config")
    c.set_defaults(func=cmd_web)


def _shared_options(parser, default) -> None:
    """--since, --json and --database, for ``stats`` and (``default`` SUPPRESS) each view."""
    parser.add_argument("--since", default=default,
                        help='only this recent ("1h", "7d") or since a date/time')
    parser.add_argument("--json", action="store_true", default=default or False,
                        help="machine-readable output")
    parser.add_argument("--database", default=default,
                        help="statistics database (default: stats.database)")


def cmd_learn(args) -> int:
    from . import stats_view as v
    from .learn import propose, to_toml
    config = load_config(args.config)
    conn = v.connect(args.database or config.stats.database)
    try:
        proposal = propose(conn, v.since(args.since), args.siblings)
    finally:
        conn.close()
    print(json.dumps(proposal.to_dict(), indent=2) if args.json else to_toml(proposal), end="")
    return 0


def cmd_web(args) -> int:
    if args.hash_password:
        from .web.auth import read_new_password, hash_password
        print(hash_password(read_new_password()))
        return 0
    from .web.server import serve
    serve(load_config(args.config))
    return 0


def cmd_agent(args) -> int:
    from ..logs import setup_logging
    from .agent import Agent
    config = load_config(args.config)
    if not config.stats.enabled:
        raise ConfigError("statistics are disabled: set enabled = true under [stats] (and "
                          "regenerate the Unbound include with `nettrust unbound-conf`)",
                          file=config.path, key="stats.enabled",
                          line=config.line_of("stats.enabled"))
    setup_logging(config)
    Agent(config).run()
    return 0


def cmd_stats(args) -> int:
    from . import stats_view as v
    config = load_config(args.config)
    conn = v.connect(args.database or config.stats.database)
    start = v.since(args.since)
    data: dict | list[dict]
    try:
        if args.view == "summary":
            data = v.summary(conn, start)
        elif args.view == "top":
            data = v.top(conn, args.what, start, args.limit)
        elif args.view == "hosts":
            data = v.hosts(conn, start, args.limit)
        elif args.view == "clients":
            data = v.clients(conn, start, args.limit)
        else:
            data = v.why(conn, args.address, start)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(_text(args, data, v))
    return 0


def _text(args, data, v) -> str:
    when = {"last_seen": v.when, "last_queried": v.when, "last_grant": v.when,
            "expires": v.when, "granted": v.when, "last": v.when}
    if args.view == "summary":
        lines = [f"queries:   {data['queries']}  since {v.when(data['since'])}",
                 "  by source:  " + _pairs(data["by_source"]),
                 "  by verdict: " + _pairs(data["by_outcome"]),
                 f"clients:   {data['clients']}    domains: {data['domains']}",
                 f"grants:    {data['grants']} for {data['granted_addresses']} addresses, "
                 f"{data['active_addresses']} still open",
                 "events:    " + (_pairs(data["events"]) or "none")]
        return "\n".join(lines)
    if args.view == "why":
        return why_text(data, v)
    if not data:
        return "nothing recorded" + (f" since {args.since}" if args.since else "")
    columns = {"hosts": ["address", "queried", "names", "last_grant", "expires"],
               "clients": ["client", "queries", "blocked", "domains", "last_seen"]}.get(args.view)
    if columns is None:
        columns = list(data[0])
    return v.table(data, columns, when)


#: The sections of ``why``'s story, in order: (key in the data, heading, columns).
WHY_SECTIONS = (
    ("grants", "grants:", ["granted", "expires", "name", "chain", "client", "rule"]),
    ("answers", "answers naming it:", ["name", "times", "cached", "clients", "last"]),
    ("refused", "refused connection attempts:", ["attempted", "verdict", "source", "user",
                                                  "protocol", "port", "hook"]),
)


def why_text(data: dict, v) -> str:
    """``stats why``: one state line, then each section of :data:`WHY_SECTIONS` that has rows."""
    when = {k: v.when for k in ("granted", "expires", "last", "attempted")}
    return "\n".join([f"{data['address']}: {_why_state(data, v)}"] + _why_origins(data)
                     + [f"\n{heading}\n" + v.table(data[key], columns, when)
                        for key, heading, columns in WHY_SECTIONS if data.get(key)])


def _why_origins(data: dict) -> list[str]:
    """Grants a reverse lookup opened (ptr.confirm): their chain is PTR name > forward name."""
    return sorted({f"  opened by reverse lookup of {links[0]}, confirmed by {links[1]}"
                   for g in data["grants"]
                   if len(links := (g.get("chain") or "").split(" > ")) > 1
                   and links[0].endswith(".arpa")})


def _why_state(data: dict, v) -> str:
    refused = len(data.get("refused") or ())
    attempts = f"{refused} refused connection attempt{'s' * (refused != 1)}"
    if not data["grants"]:
        never = "never granted" + (", never answered" if not data["answers"] else "")
        return f"{never}; {attempts} (in the recorded period)"
    state = (f"open until {v.when(data['expires'])}" if data["open"] else
             f"closed (last grant expired {v.when(data['expires'])})")
    return state + (f"; {attempts}" if refused else "")


def _pairs(d: dict) -> str:
    return "  ".join(f"{k}={n}" for k, n in d.items())

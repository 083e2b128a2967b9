"""``nettrust`` — the command line, a thin twin of the library.

Each command is one library call; errors become one clean line on stderr and exit status 1
(2 for usage errors, from argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from . import __version__
from .config import load_config
from .cli_gateway import format_gateway, gateway_state
from .cli_policy import cmd_explain, cmd_lists_update
from .durations import format_duration
from .errors import NetTrustError
from .service import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except NetTrustError as exc:
        print(f"nettrust: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"nettrust: {exc} (the firewall needs root or CAP_NET_ADMIN)", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nettrust", description="DNS-driven egress firewall")
    p.add_argument("--version", action="version", version=f"nettrust {__version__}")
    p.add_argument("-c", "--config", default=os.environ.get("NETTRUST_CONFIG") or DEFAULT_CONFIG,
                   help=f"configuration file (default $NETTRUST_CONFIG or {DEFAULT_CONFIG})")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="validate a configuration file without starting anything")
    c.add_argument("file", nargs="?", help="the file (default: --config)")
    c.add_argument("--effective", action="store_true", help="print the effective configuration as JSON")
    c.add_argument("--unbound", metavar="CONF",
                   help="also check Unbound's effective settings in CONF (read with "
                        "`unbound-checkconf -o`; loads no module, touches no firewall)")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("status", help="ruleset present, priority, set sizes, counters")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_status)

    c = sub.add_parser("hosts", help="granted addresses, the name that opened them, time left")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_hosts)

    c = sub.add_parser("flush", help="revoke every grant (the drop policy stays)")
    c.set_defaults(func=cmd_flush)

    c = sub.add_parser("remove", help="delete the whole ruleset: egress is open again")
    c.add_argument("--stop", action="store_true",
                   help="stop the Unbound running the module first (it would re-create the "
                        "ruleset on its next answer); without it, remove refuses while it runs")
    c.set_defaults(func=cmd_remove)

    c = sub.add_parser("explain", help="what the policy says about a name (dry run, no DNS)")
    c.add_argument("name")
    c.set_defaults(func=cmd_explain)

    c = sub.add_parser("lists", help="blocklists and allowlists ([[policy.lists]])")
    lists = c.add_subparsers(required=True, metavar="ACTION")
    u = lists.add_parser("update", help="re-read the list files: entries, invalid lines, what "
                         "was added and removed since the last update (downloads nothing)")
    u.add_argument("--json", action="store_true")
    u.add_argument("--verbose", "-v", action="store_true", help="every line, not the first 10")
    u.add_argument("--strict", action="store_true", help="exit 1 when a line is invalid")
    u.add_argument("--no-save", action="store_true",
                   help="compare only; the next update compares with the same old state")
    u.set_defaults(func=cmd_lists_update)

    c = sub.add_parser("unbound-conf", help="print the Unbound include for this configuration")
    c.add_argument("--script", default=_default_script(),
                   help="path of unbound_module/nettrust_unbound.py (default: the installed one)")
    c.add_argument("--write", metavar="FILE",
                   help="write the include to FILE (atomically, only when it changed) instead of "
                        "printing it; the unit's ExecStartPre= runs this on every start")
    c.add_argument("--group", type=int, metavar="K",
                   help="[[gateway.groups]]: the include of group K's instance (its addresses)")
    c.set_defaults(func=cmd_unbound_conf)

    from .agent.stats_cli import register as register_stats
    register_stats(sub)        # `nettrust agent`, `nettrust stats …`
    from .cli_admin import register as register_admin
    register_admin(sub)        # `nettrust resolver-setup`
    from .cli_kube import register as register_kube
    register_kube(sub)         # `nettrust kube …`, `nettrust operator`, `nettrust cloud aws`
    from .fleet.cli import register as register_fleet
    register_fleet(sub)        # `nettrust follow`, `nettrust fleet …`
    _config_after_verb(p)
    return p


def _config_after_verb(parser: argparse.ArgumentParser) -> None:
    """Accept ``-c FILE`` after the verb too (``nettrust hosts -c FILE``), at every depth.

    The sub-parsers' option has no default of its own (SUPPRESS), so a ``-c`` before the verb
    is kept unless one after it overrides it.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in dict.fromkeys(action.choices.values()):
            if "-c" not in child._option_string_actions:
                child.add_argument("-c", "--config", default=argparse.SUPPRESS,
                                   help="configuration file (also accepted before the command)")
            _config_after_verb(child)


def _default_script() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(here, "unbound_module", "nettrust_unbound.py")


def _backend(args):
    """The configured backend, closed when the ``with`` block ends."""
    from .ruleset import make_backend
    return contextlib.closing(make_backend(load_config(args.config)))


def cmd_check(args) -> int:
    path = args.file or args.config
    config = load_config(path)
    if args.effective:
        print(json.dumps(config.to_dict(), indent=2, default=str))
    else:
        print(f"{path}: OK ({config.mode} mode, upstream {config.upstream.mode}, "
              f"{len(config.policy.allow)} allow / {len(config.policy.deny)} deny patterns, "
              f"{len(config.policy.lists)} lists)")
    from .agent.alert_targets import problems as alert_problems
    for warning in alert_problems(config, _policy_allows(config)):
        print(f"nettrust: warning: {warning}", file=sys.stderr)
    if args.unbound:
        from .unbound_settings import control_socket, problems, read_settings
        settings = read_settings(args.unbound)
        found = problems(settings, config)
        for problem in found:
            print(f"nettrust: {args.unbound}: {problem}", file=sys.stderr)
        if found:
            return 1
        sock = control_socket(settings)
        print(f"{args.unbound}: OK for NetTrust (cache invalidation via "
              f"{sock or 'nothing: no local control socket'})")
    return 0


def _policy_allows(config):
    """name -> whether the policy answers it (the lists are read at the first call)."""
    policy = None

    def allowed(name: str) -> bool:
        nonlocal policy
        if policy is None:
            from .lists import loader_for
            from .policy import Policy
            policy = Policy(config, loader_for(config).load()[0])
        from .answer import normalize
        return policy.check_name(normalize(name)).allowed
    return allowed


def cmd_status(args) -> int:
    from .lifecycle.status import format_lifecycle, lifecycle_status
    config = load_config(args.config)
    with _backend(args) as backend:
        st = backend.status()
        lifecycle = lifecycle_status(config, backend)
        gateway = gateway_state(backend) if config.gateway.per_client and st.present else None
    bypass = _bypass_status(config)
    if args.json:
        print(json.dumps({**st.to_dict(), "lifecycle": lifecycle, "encrypted_dns_bypass": bypass,
                          **(gateway or {})}, indent=2, default=str))
        return 0 if st.present else 1
    audit = config.firewall.enforcement == "audit"
    if audit:
        print("enforcement: AUDIT -- nothing is refused; what would be is logged and counted")
    for member in st.members or (st,):
        if len(st.members) > 1:
            print(f"backend {member.backend}:")
        if not member.present:
            print(f"ruleset: ABSENT (table {member.family} {member.table}) — egress is not "
                  "filtered by NetTrust")
            continue
        print(f"ruleset: present (table {member.family} {member.table})")
        print(f"hooks: {', '.join(member.hooks)}  priority: {member.priority}  "
              f"policy: {member.policy}  action: {member.action}")
        print("sets: " + "  ".join(f"{k}={v}" for k, v in member.sets.items()))
        if member.family == "bpf":          # the ebpf backend: pinned links, per-reason counts
            print(f"maps: {config.ebpf.map_size} grants each")
            for name, link in member.chains.items():
                print(f"attached {name}: program {link.get('prog_id')} link {link.get('link_id')}")
            print("counts: " + "  ".join(f"{k}={c['packets']}" for k, c in member.counters.items()))
            continue
        for name, c in member.counters.items():
            label = f"{name} (would refuse)" if audit else name
            print(f"counter {label}: {c.get('packets', 0)} packets, {c.get('bytes', 0)} bytes")
    if not st.present:
        return 1
    for line in format_lifecycle(lifecycle, st.table):
        print(line)
    for line in _format_bypass(bypass):
        print(line)
    for line in format_gateway(gateway) if gateway is not None else ():
        print(line)
    return 0


def _bypass_status(config) -> dict:
    """Refused DoH/DoT attempts of the last 24 h, as the agent recorded them."""
    if not config.stats.enabled:
        return {"error": "not recorded ([stats] is off: refused attempts reach no database)"}
    from .lists.bypass import recent_attempts
    return recent_attempts(config.stats.database)


def _format_bypass(st: dict) -> list[str]:
    if "error" in st:
        return [f"encrypted DNS bypass attempts: unknown — {st['error']}"]
    if not st["attempts"]:
        return ["encrypted DNS bypass attempts (24h): none refused"]
    from datetime import datetime
    lines = [f"encrypted DNS bypass attempts (24h): {st['attempts']} refused"]
    for g in st["by_destination"][:10]:
        users = f" by {', '.join(g['users'])}" if g["users"] else ""
        last = datetime.fromtimestamp(g["last"]).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"  {g['bypass']}: {g['destination']} port {g['port']}: {g['count']} "
                     f"(last {last}){users}")
    return lines


def _absent(backend) -> str | None:
    """One line saying the ruleset is absent (and what that means), or None when present.

    With several backends (firewall.backends), absent means absent from every one of them; one
    member missing is said on stderr and the verb goes on with the others.
    """
    st = backend.status(count_elements=False)
    if st.present:
        return None
    members = st.members or (st,)
    if any(m.present for m in members):
        missing = ", ".join(m.backend for m in members if not m.present)
        print(f"nettrust: warning: no ruleset in backend(s) {missing}", file=sys.stderr)
        return None
    return (f"no NetTrust ruleset (table {st.family} {st.table}): egress is not filtered by "
            "NetTrust; it is created when Unbound starts with the module")


def cmd_hosts(args) -> int:
    with _backend(args) as backend:
        absent = _absent(backend)
        if absent:
            print(f"nettrust: {absent}", file=sys.stderr)
            return 1
        grants = _longest_per_address(backend.list_grants())
        gateway = gateway_state(backend) if load_config(args.config).gateway.per_client else None
    grants.sort(key=lambda g: (g.address.version, g.address))
    if args.json:     # gateway mode: the pairs as rows with a "client", then the struck clients
        print(json.dumps([{"address": str(g.address), "name": g.comment, "expires_in": round(g.expires_in, 3),
                           "timeout": g.timeout, "instance": g.instance} for g in grants]
                         + (gateway["client_pairs"] + gateway["struck"] if gateway else []), indent=2))
        return 0
    for line in format_gateway(gateway) if gateway is not None else ():
        print(line)
    if not grants:
        print("no granted addresses")
        return 0
    width = max(len(str(g.address)) for g in grants)
    print(f"{'ADDRESS':<{width}}  {'LEFT':>8}  {'TIMEOUT':>8}  NAME")
    for g in grants:
        print(f"{str(g.address):<{width}}  {format_duration(round(g.expires_in)):>8}  "
              f"{format_duration(round(g.timeout)):>8}  {g.comment}")
    return 0


def _longest_per_address(grants: list) -> list:
    """One row per address: with firewall.instances > 1 several processes may have granted it,
    each in its own set, and it stays open until the longest of those grants ends."""
    best: dict = {}
    for g in grants:
        if g.address not in best or g.expires_in > best[g.address].expires_in:
            best[g.address] = g
    return list(best.values())


def cmd_flush(args) -> int:
    # No count first: counting is a full set dump, ~50 s with a million grants, and a flush is
    # what an administrator wants at once.
    # The running resolvers notice within grants.verify_interval (their last grant is gone from
    # the kernel): they forget what they had granted, drop those names from Unbound's cache and
    # grant the next answers afresh.
    config = load_config(args.config)
    with _backend(args) as backend:
        absent = _absent(backend)
        if absent:
            print(f"nettrust: nothing to flush: {absent}", file=sys.stderr)
            return 1
        backend.flush_grants()
    every = config.grants.verify_interval
    if every:
        print(f"revoked every grant; the resolver notices within {format_duration(every)} "
              "and grants the next answers afresh")
    else:
        print("revoked every grant; grants.verify_interval is 0, so the resolver only notices "
              "at its next write: names in Unbound's cache stay unreachable until they expire "
              "(unbound-control flush_zone . clears them)")
    return 0


def cmd_remove(args) -> int:
    from .resolver_procs import module_resolvers, stop_resolvers
    running = module_resolvers()
    if running and not args.stop:
        print("nettrust: refused: " + "; ".join(str(r) for r in running) + " runs the NetTrust "
              "module and would re-create the ruleset on its next answer. Stop it first ("
              + " / ".join(dict.fromkeys(r.stop_command() for r in running))
              + "), or run `nettrust remove --stop`", file=sys.stderr)
        return 1
    if running:
        for line in stop_resolvers(running):
            print(line)
    with _backend(args) as backend:
        backend.remove()
    print("ruleset removed: egress is no longer filtered by NetTrust")
    return 0


def cmd_unbound_conf(args) -> int:
    from .unbound_conf import render
    text = render(load_config(args.config), script=os.path.abspath(args.script), group=args.group)
    if not args.write:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.write) as f:
            if f.read() == text:
                print(f"{args.write}: up to date with {args.config}")
                return 0
    except FileNotFoundError:
        pass
    tmp = f"{args.write}.nettrust-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.write)
    print(f"{args.write}: regenerated from {args.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

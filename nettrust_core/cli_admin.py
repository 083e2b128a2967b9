"""``nettrust resolver-setup`` (alias ``install-resolver``), ``haproxy-conf``, ``resolv-guard``:
the administration verbs around the resolver (one function each)."""

from __future__ import annotations

import os
import sys

from . import resolver_setup as rs
from .config import load_config


def register(sub) -> None:
    c = sub.add_parser("resolver-setup", aliases=["install-resolver"],
                       help="point this host's lookups at the local resolver: detect "
                            "systemd-resolved / NetworkManager / ifupdown-dhclient and print "
                            "(or --apply) the one setting it needs")
    c.add_argument("--apply", action="store_true", help="write the setting (default: print it)")
    c.add_argument("--check", action="store_true",
                   help="only say whether /etc/resolv.conf points at the local resolver "
                        "(exit 1 when not)")
    c.add_argument("--undo", action="store_true", help="remove what --apply wrote")
    c.add_argument("--address", default="127.0.0.1", help="the local resolver (default 127.0.0.1)")
    c.add_argument("--root", default="/", help="act on the system under this directory (tests)")
    c.set_defaults(func=cmd_resolver_setup)

    c = sub.add_parser("haproxy-conf",
                       help="print HAProxy's configuration for DoT with client certificates "
                            "([dot]), or its systemd unit")
    c.add_argument("--write", metavar="FILE",
                   help="write it to FILE (atomically, only when it changed) instead of printing")
    c.add_argument("--unit", action="store_true",
                   help="the systemd unit running HAProxy with it instead (" + UNIT + ")")
    c.add_argument("--nettrust", default="/usr/local/bin/nettrust",
                   help="with --unit: the nettrust command the unit runs")
    c.set_defaults(func=cmd_haproxy_conf)

    c = sub.add_parser("resolv-guard",
                       help="watch [resolv_conf] path in the foreground (as root, so that "
                            "`revert = true` can rewrite it); Ctrl-C or SIGTERM stops")
    c.set_defaults(func=cmd_resolv_guard)


UNIT = "nettrust-dot.service"


def write_if_changed(path: str, text: str, source: str) -> str:
    """Write ``text`` to ``path`` atomically unless it already holds it; one line saying which."""
    try:
        with open(path) as f:
            if f.read() == text:
                return f"{path}: up to date with {source}"
    except FileNotFoundError:
        pass
    tmp = f"{path}.nettrust-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return f"{path}: regenerated from {source}"


def cmd_haproxy_conf(args) -> int:
    from . import dot
    config = load_config(args.config)
    if not config.dot.enabled:
        print(f"nettrust: {args.config}: [dot] enabled is false: Unbound has no PROXY port for "
              "HAProxy to reach (set it, then regenerate the Unbound include too)",
              file=sys.stderr)
        return 1
    text = (dot.systemd_unit(config, args.nettrust) if args.unit else dot.haproxy_config(config))
    if args.write:
        print(write_if_changed(args.write, text, args.config))
    else:
        sys.stdout.write(text)
    return 0


def cmd_resolv_guard(args) -> int:
    import signal
    import threading

    from .resolv_guard import ResolvGuard
    from .report import Reporter
    config = load_config(args.config)
    reporter = Reporter(config.stats.report_socket if config.stats.enabled else None)
    guard = ResolvGuard(config.resolv_conf, reporter=reporter)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    guard.start()
    try:
        while not done.wait(1.0) and guard.alive:
            pass
    finally:
        guard.stop()
        reporter.close()
    return 1 if guard.died else 0


def cmd_resolver_setup(args) -> int:
    if args.check:
        ok, why = rs.points_at_local(args.root)
        print(why if ok else f"nettrust: {why}; run `nettrust resolver-setup`",
              file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    if args.undo:
        for line in rs.undo(args.root) or ["nothing to undo"]:
            print(line)
        return 0
    setting = rs.detect(args.root, args.address)
    if not args.apply:
        sys.stdout.write(setting.describe())
        print("(nothing written: add --apply to write it)")
        return 0
    print(rs.apply(setting, args.root))
    if setting.then:
        print(f"then run: {setting.then}")
    return 0

"""``nettrust resolver-setup``: the administration verbs around the firewall (one function each)."""

from __future__ import annotations

import sys

from . import resolver_setup as rs


def register(sub) -> None:
    c = sub.add_parser("resolver-setup",
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

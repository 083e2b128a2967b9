"""The fleet's verbs: ``nettrust follow``, ``nettrust fleet certs|publish-config|status``."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

from ..config import load_config
from ..errors import ConfigError


def register(sub) -> None:
    c = sub.add_parser("follow", help="fleet follower: enforce the grants the masters publish "
                       "(runs until SIGTERM; [fleet] role = \"follower\")")
    c.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    c.set_defaults(func=cmd_follow)

    c = sub.add_parser("fleet", help="fleet helpers: lab certificates, the config document")
    verbs = c.add_subparsers(required=True, metavar="ACTION")
    v = verbs.add_parser("certs", help="make a lab CA and certificates (openssl; EC P-256)")
    v.add_argument("directory")
    v.add_argument("--server", action="append", default=[], metavar="ADDRESS_OR_NAME",
                   help="the Redis server's addresses/names (makes server.crt)")
    v.add_argument("--node", action="append", default=[], metavar="NAME",
                   help="a client certificate NAME.crt for this node (repeat)")
    v.set_defaults(func=cmd_certs)
    v = verbs.add_parser("publish-config", help="publish this configuration's document now "
                         "(followers fetch it; a master also does at start)")
    v.set_defaults(func=cmd_publish_config)
    v = verbs.add_parser("status", help="print the follower's status file")
    v.set_defaults(func=cmd_status)


def cmd_follow(args) -> int:
    from ..ruleset import make_backend
    from .connect import connect
    from .follower import Follower
    config = load_config(args.config)
    if config.fleet.role != "follower":
        raise ConfigError('`nettrust follow` needs [fleet] role = "follower"', key="fleet.role",
                          file=config.path)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    follower = Follower(config, make_backend(config), lambda: connect(config.fleet, name=f"{config.fleet.node}-follower"))
    done = threading.Event()

    def on_signal(_signo, _frame) -> None:
        follower.stopping.set()
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    follower.start()
    print(f"follower {config.fleet.node}: READY", file=sys.stderr, flush=True)
    try:
        follower.run()
    finally:
        follower.stop()
        follower.backend.close()        # the ruleset and grants stay: fail closed
    return 0


def cmd_certs(args) -> int:
    from .certs import make_ca, make_cert
    print(make_ca(args.directory))
    if args.server:
        for path in make_cert(args.directory, "server", server_names=args.server):
            print(path)
    for node in args.node:
        for path in make_cert(args.directory, node):
            print(path)
    return 0


def cmd_publish_config(args) -> int:
    from . import config_doc
    from .connect import connect
    from .keys import Keys
    config = load_config(args.config)
    client = connect(config.fleet)
    version = config_doc.publish(client, Keys(config.fleet.prefix), config)
    print(f"configuration version {version}")
    return 0


def cmd_status(args) -> int:
    config = load_config(args.config)
    with open(config.fleet.status_file) as f:
        print(json.dumps(json.load(f), indent=2))
    return 0

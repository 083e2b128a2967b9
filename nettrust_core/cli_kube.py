"""``nettrust kube …``, ``nettrust operator`` and ``nettrust cloud aws``: the verbs beyond one host.

Each needs an extra (``nettrust[operator]``, ``nettrust[aws]``); the import happens inside the
verb, so the rest of the CLI — and the resolver — never load kopf, kubernetes or boto3.
"""

from __future__ import annotations

import os
import sys

from .errors import InvalidValue


def register(sub) -> None:
    kube = sub.add_parser("kube", help="Kubernetes: CRDs, the operator's install bundle, rendering")
    verbs = kube.add_subparsers(dest="kube_verb", required=True)
    c = verbs.add_parser("manifests", help="print the operator's install bundle (namespace, CRDs, RBAC, "
                                           "Deployment) as YAML")
    c.add_argument("--image", default="nettrust:latest", help="the NetTrust image the operator runs")
    c.add_argument("--namespace", default="nettrust-system")
    c.add_argument("--feed", default="sqlite:/var/lib/nettrust/stats.db",
                   help="where the grants come from: sqlite:PATH (a node's statistics database) or "
                        "rediss://HOST:PORT/DB?ca=…&cert=…&key=… (the fleet's stream, every node's)")
    c.add_argument("--feed-tls-secret", default="nettrust-fleet-tls",
                   help="the kubernetes.io/tls secret a rediss:// feed reads at /etc/nettrust/tls")
    c.set_defaults(func=cmd_manifests)
    c = verbs.add_parser("render", help="validate an EgressPolicy or AgentPool file against its CRD and "
                                        "print what the operator makes of it")
    c.add_argument("file")
    c.set_defaults(func=cmd_render)

    c = sub.add_parser("operator", help="run the Kubernetes operator (kopf; needs nettrust[operator])")
    c.set_defaults(func=cmd_operator)

    c = sub.add_parser("cloud", help="cloud sinks: keep a cloud firewall object equal to the live grants")
    clouds = c.add_subparsers(dest="cloud_verb", required=True)
    c = clouds.add_parser("aws", help="an AWS managed prefix list (needs nettrust[aws], i.e. boto3)")
    c.add_argument("--prefix-list", required=True, metavar="ID")
    c.add_argument("--region", default=os.environ.get("AWS_REGION"))
    c.add_argument("--endpoint-url", default=None, help="another EC2 endpoint (a test server)")
    c.add_argument("--feed", default="sqlite:/var/lib/nettrust/stats.db",
                   help="sqlite:PATH or rediss://HOST:PORT/DB?ca=…&cert=…&key=… (the fleet's stream)")
    c.add_argument("--interval", type=float, default=30.0, help="seconds between reconciles")
    c.add_argument("--min-lifetime", type=float, default=300.0,
                   help="keep an address at least this long (seconds): fewer API calls")
    c.add_argument("--max-entries", type=int, default=None, help="default: the list's MaxEntries")
    c.add_argument("--once", action="store_true", help="reconcile once and exit")
    c.add_argument("--clear", action="store_true", help="empty the list and exit (uninstall)")
    c.set_defaults(func=cmd_cloud_aws)


def _dump(objects) -> None:
    import yaml
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))


def cmd_manifests(args) -> int:
    from .kube.bundle import operator_objects
    _dump(operator_objects(args.image, args.namespace, args.feed, args.feed_tls_secret))
    return 0


def cmd_render(args) -> int:
    from .kube.crds import validate
    from .kube.desired import Desired
    from .kube.render import agent_pool_objects, calico_network_set, cilium_policy, network_policy
    import yaml
    with open(args.file, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    out = []
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000000")
        try:
            validate(doc)
        except InvalidValue as exc:
            print(f"nettrust: {args.file}: {exc}", file=sys.stderr)
            return 2
        if doc["kind"] == "AgentPool":
            out += agent_pool_objects(doc)
            continue
        doc["metadata"].setdefault("namespace", "default")
        enforcement = doc["spec"].get("enforcement", "nftables")
        empty = Desired({}, 0)
        if enforcement == "networkpolicy":
            out.append(network_policy(doc, empty))
        elif enforcement == "cilium":
            out.append(cilium_policy(doc))
        elif enforcement == "calico":
            out.append(calico_network_set(doc, empty))
    _dump(out)
    return 0


def cmd_operator(args) -> int:
    os.execvp(sys.executable, [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                               "-m", "nettrust_core.kube.operator"])
    return 1  # not reached


def cmd_cloud_aws(args) -> int:
    import boto3

    from .cloud.aws import AwsPrefixList
    from .cloud.sink import CloudReconciler
    from .grant_feed import feed_from_spec
    ec2 = boto3.client("ec2", region_name=args.region, endpoint_url=args.endpoint_url)
    cap = args.max_entries or int(ec2.describe_managed_prefix_lists(
        PrefixListIds=[args.prefix_list])["PrefixLists"][0]["MaxEntries"])
    sink = AwsPrefixList(ec2, args.prefix_list, cap)
    if args.clear:
        print(f"removed {sink.clear().removed} entries from {args.prefix_list}")
        return 0
    reconciler = CloudReconciler(feed_from_spec(args.feed), sink, args.interval, args.min_lifetime)
    if args.once:
        change = reconciler.once()
        print(f"{args.prefix_list}: +{change.added} -{change.removed} in {change.calls} calls "
              f"({change.conflicts} conflicts retried, {reconciler.counters['cloud_capped']} over the cap)")
        return 0
    reconciler.run()
    return 0

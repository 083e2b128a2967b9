#!/usr/bin/env python3
"""Figures of the eBPF backend (issue 18), every part in throwaway namespaces it deletes.

    sudo /usr/bin/python3 bench/ebpf_figures.py [--calls 5000] [--seconds 4] [--skip-iperf]

1. **Answer-path write**: µs per ``grant()`` of one address (a new grant; then refreshes that
   extend it), eBPF backend (one lookup + one update ``bpf()`` syscall) against the nftables
   backend (one acked netlink batch) in the same run, each best of 5 rounds.
2. **Throughput**: iperf3 TCP client -> gateway -> server namespaces over veth, without XDP and
   with the backend's XDP (generic mode) on the gateway's client-facing veth, the server granted.
3. **Blocked SYN flood**: a raw-socket SYN sender in the client namespace towards an address
   with no grant; the XDP drop counter's rate (pps) and the sender's rate.

Maps are pinned on a private bpffs mounted on a temporary directory (unmounted afterwards);
nothing is attached in the root namespace.  Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO]

from nettrust_core.firewall.base import Grant, RulesetSpec  # noqa: E402
from nettrust_core.firewall.ebpf import EbpfBackend  # noqa: E402
from testbed.throwaway_netns import NetNS, veth_pair  # noqa: E402


def _rounds(backend, calls: int, base: int, rounds: int = 5) -> dict[str, float]:
    addrs = [ipaddress.IPv4Address(base + i) for i in range(calls)]
    new, refresh = [], []
    for r in range(rounds):
        grants = [[Grant(a, 300 + r * 10)] for a in addrs]
        t = time.perf_counter()
        for g in grants:
            backend.grant(g)
        (new if r == 0 else refresh).append((time.perf_counter() - t) / calls * 1e6)
        if r == 0:
            backend.flush_grants()
            grants = [[Grant(a, 300)] for a in addrs]
            t = time.perf_counter()
            for g in grants:
                backend.grant(g)
            new.append((time.perf_counter() - t) / calls * 1e6)
    return {"new_us": round(min(new), 2), "extend_us": round(min(refresh), 2)}


def answer_path(calls: int, pin: str) -> dict:
    def nft() -> dict:
        from nettrust_core.firewall.nftables import NftablesBackend
        b = NftablesBackend(RulesetSpec(table="ntbench"))
        b.ensure()
        try:
            return _rounds(b, calls, int(ipaddress.IPv4Address("198.18.0.1")))
        finally:
            b.remove()
            b.close()

    def ebpf() -> dict:
        b = EbpfBackend(RulesetSpec(hooks=()), pin_path=pin, map_size=65536)
        b.ensure()
        try:
            return _rounds(b, calls, int(ipaddress.IPv4Address("198.18.0.1")))
        finally:
            b.remove()

    with NetNS("ntebpf-bench") as ns:
        out = {}
        for _ in range(2):           # interleaved, so both see the same load
            for name, fn in (("nftables", nft), ("ebpf", ebpf)):
                r = ns.run(fn)
                best = out.setdefault(name, r)
                out[name] = {k: min(best[k], r[k]) for k in r}
        out["ratio_new"] = round(out["nftables"]["new_us"] / out["ebpf"]["new_us"], 1)
        return out


def _topology() -> tuple[NetNS, NetNS, NetNS]:
    client, gw, server = NetNS("ntebpf-c"), NetNS("ntebpf-g"), NetNS("ntebpf-s")
    veth_pair(client, gw, ["10.95.1.2/24"], ["10.95.1.1/24"])
    veth_pair(gw, server, ["10.95.2.1/24"], ["10.95.2.2/24"])
    client.sh("ip", "route", "add", "default", "via", "10.95.1.1")
    server.sh("ip", "route", "add", "default", "via", "10.95.2.1")
    gw.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    return client, gw, server


def _lan_if(gw: NetNS) -> str:
    out = json.loads(gw.sh("ip", "-j", "-4", "addr", "show").stdout)
    return next(link["ifname"] for link in out for a in link.get("addr_info", [])
                if a.get("local") == "10.95.1.1")


def _iperf(client: NetNS, server: NetNS, seconds: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", server.name, "iperf3", "-s", "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = client.sh("iperf3", "-c", "10.95.2.2", "-t", str(seconds), "-J").stdout
        return round(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9, 2)
    finally:
        srv.kill()
        srv.wait()


def _syn_flood(dst: str, seconds: float) -> int:
    """Raw TCP SYNs to ``dst`` for ``seconds``: how many were sent."""
    import socket
    import struct
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    n = 0
    pkts = [struct.pack("!HHIIBBHHH", 10000 + i, 80, i, 0, 5 << 4, 0x02, 65535, 0, 0)
            for i in range(1024)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p in pkts:
            s.sendto(p, (dst, 0))
        n += len(pkts)
    return n


def gateway(pin: str, seconds: int, skip_iperf: bool) -> dict:
    client, gw, server = _topology()
    out: dict = {}
    try:
        lan = _lan_if(gw)
        if not skip_iperf:
            out["iperf_no_xdp_gbps"] = [_iperf(client, server, seconds) for _ in range(2)]
        spec = RulesetSpec(hooks=("forward",), lan_interfaces=(lan,))

        def attach() -> None:
            b = EbpfBackend(spec, pin_path=pin)
            b.ensure()
            b.grant([Grant(ipaddress.ip_address("10.95.2.2"), 3600)])

        gw.run(attach)
        assert "xdpgeneric" in gw.sh("ip", "link", "show", lan).stdout
        if not skip_iperf:
            out["iperf_xdp_generic_gbps"] = [_iperf(client, server, seconds) for _ in range(2)]
        b = EbpfBackend(spec, pin_path=pin)
        before = b.stats()["drop_no_grant"]
        t = time.monotonic()
        sent = client.run(_syn_flood, "10.95.2.3", float(seconds))
        took = time.monotonic() - t
        dropped = b.stats()["drop_no_grant"] - before
        out["syn_flood"] = {"sent_pps": round(sent / took), "xdp_dropped_pps": round(dropped / took),
                            "dropped": dropped, "sent": sent}
        gw.run(lambda: EbpfBackend(spec, pin_path=pin).remove())
    finally:
        for ns in (client, gw, server):
            ns.delete()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--skip-iperf", action="store_true")
    args = ap.parse_args()
    fs = tempfile.mkdtemp(prefix="nt-bpffs-bench-")
    subprocess.run(["mount", "-t", "bpf", "bpf", fs], check=True)
    try:
        result = {"answer_path": answer_path(args.calls, os.path.join(fs, "a"))}
        print("answer path:", result["answer_path"], flush=True)
        result["gateway"] = gateway(os.path.join(fs, "g"), args.seconds, args.skip_iperf)
        print("gateway:", result["gateway"], flush=True)
    finally:
        subprocess.run(["umount", "-l", fs], check=False)
        shutil.rmtree(fs, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Try NetTrust safely: a narrated walkthrough in a sandbox of network namespaces.

    sudo ./try-nettrust            walkthrough, then a shell inside the sandbox (exit = tear down)
    sudo ./try-nettrust --no-shell walkthrough only, then tear down
    sudo ./try-nettrust --cleanup  remove what an interrupted run left behind

Nothing outside the sandbox changes: the root namespace's firewall, routes and resolv.conf
stay as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .lab import Lab, cleanup_stale
from .product import DIST_PACKAGES, SYSTEM_PYTHON, NetTrustHost

CONFIG = """\
# The sandbox's /etc/nettrust/nettrust.toml
[general]
mode = "denylist"
[policy]
deny = ["**.blocked.fw.test"]        # a name you never want reachable
require_dnssec = ["sec.test"]        # this zone must validate to be opened
[grants]
min_ttl = "1s"                       # short, so you can watch a grant expire
max_ttl = "1h"
grace = "2s"
"""

BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") \
    if sys.stdout.isatty() else ("",) * 5


def say(text: str) -> None:
    print(f"\n{BOLD}{text}{RESET}", flush=True)


def show(lab, argv: list[str], *, env=None, expect_ok: bool | None = None) -> subprocess.CompletedProcess:
    shown = ["nettrust" if a.endswith("/bin/nettrust") else a for a in argv]
    print(f"{DIM}[sandbox]${RESET} {shlex.join(shown)}", flush=True)
    res = lab.run("host", argv, check=False, env=env, timeout=20)
    out = (res.stdout + res.stderr).rstrip()
    if out:
        print("\n".join("    " + ln for ln in out.splitlines()))
    if expect_ok is not None:
        good = (res.returncode == 0) == expect_ok
        print(f"    {GREEN if good else RED}→ {'as expected' if good else 'UNEXPECTED'}{RESET}")
    return res


def cli_wrapper(lab: Lab, host: NetTrustHost) -> Path:
    """A ``nettrust`` command for the sandbox, bound to its configuration."""
    bindir = Path(lab.work_dir) / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "nettrust"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={host.code_dir}:{DIST_PACKAGES} exec {SYSTEM_PYTHON} "
                       f"-m nettrust_core.cli -c {host.config_path} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def refused_counter(lab) -> int:
    """Packets the ruleset's final rule refused so far (its ``rejected`` counter)."""
    res = lab.run("host", ["nft", "-j", "list", "counter", "inet", "nettrust", "rejected"],
                  check=False, timeout=10)
    if res.returncode != 0:
        return 0
    return sum(item["counter"].get("packets", 0) for item in json.loads(res.stdout)["nftables"]
               if "counter" in item)


def refused(lab, address: str, name: str | None, why: str) -> None:
    """Connect to ``address`` (as ``name``: curl --resolve, so the command shows which name the
    address belongs to) and show that the firewall's counter, not the server, refused it."""
    host = f"[{address}]" if ":" in address else address
    before = refused_counter(lab)
    if name:
        argv = ["curl", "-sS", "--max-time", "2", "--resolve", f"{name}:80:{host}", f"http://{name}/"]
    else:
        argv = ["curl", "-sS", "--max-time", "2", f"http://{host}/"]
    show(lab, argv, expect_ok=False)
    after = refused_counter(lab)
    link = f"{address} is {name} ({why})" if name else f"{address}: {why}"
    print(f"    {DIM}firewall:{RESET} refused counter {before} → {after} (+{after - before}): "
          f"{link}", flush=True)


def walkthrough(lab: Lab, host: NetTrustHost, pause: float) -> None:
    nt = [str(cli_wrapper(lab, host))]
    env = None
    curl = ["curl", "-sS", "--max-time", "2"]

    say("1. NetTrust is running: Unbound + the module, a default-drop egress ruleset (nftables).")
    show(lab, [*nt, "status"], env=env)
    time.sleep(pause)
    say("2. An allowed name: resolve it, connect to it, over IPv4 and IPv6. The answers opened "
        "exactly its addresses.")
    show(lab, [*curl, "-4", "http://www.fw.test/"], expect_ok=True)
    show(lab, [*curl, "-6", "http://www.fw.test/"], expect_ok=True)
    show(lab, [*nt, "hosts"], env=env)
    time.sleep(pause)
    say("3. A bare IP address no DNS answer gave out: refused (malware, hard-coded C2, DoH bypass).")
    refused(lab, "198.18.10.10", None, "no answer ever named it")
    refused(lab, "2001:db8:118::a0a", None, "no answer ever named it")
    time.sleep(pause)
    say("4. A denied name: answered NXDOMAIN by NetTrust itself, never sent upstream, never opened.")
    show(lab, ["dig", "+noall", "+comments", "+answer", "www.blocked.fw.test"])
    show(lab, ["dig", "+noall", "+comments", "+answer", "www.blocked.fw.test", "AAAA"])
    refused(lab, "198.51.100.66", "www.blocked.fw.test", "its A upstream; denied by policy")
    refused(lab, "2001:db8:100::66", "www.blocked.fw.test", "its AAAA upstream; denied by policy")
    time.sleep(pause)
    say("5. A forged (DNSSEC-bogus) answer: SERVFAIL. Even with +cd, where the client sees the data,"
        " the addresses stay closed.")
    show(lab, ["dig", "+noall", "+comments", "www.bad.test"])
    show(lab, ["dig", "+cd", "+short", "www.bad.test", "A", "www.bad.test", "AAAA"])
    refused(lab, "198.51.100.30", "www.bad.test", "its bogus A")
    refused(lab, "2001:db8:100::30", "www.bad.test", "its bogus AAAA")
    time.sleep(pause)
    say("6. Grants expire with the answer: short.fw.test has TTL 2 s; with 2 s grace the holes close"
        " after ~4 s.")
    show(lab, [*curl, "-4", "http://short.fw.test/"], expect_ok=True)
    show(lab, [*curl, "-6", "http://short.fw.test/"], expect_ok=True)
    show(lab, [*nt, "hosts"], env=env)
    print(f"{DIM}    … waiting 5 s{RESET}", flush=True)
    time.sleep(5)
    refused(lab, "198.51.100.12", "short.fw.test", "its A expired")
    refused(lab, "2001:db8:100::12", "short.fw.test", "its AAAA expired")


def interactive_shell(lab: Lab, host: NetTrustHost) -> None:
    bindir = cli_wrapper(lab, host).parent
    say("You are now inside the sandbox's host namespace. Try:")
    print("    dig www.sec.test            curl http://www.fw.test/      curl http://198.18.0.7/\n"
          "    nettrust hosts              nettrust status               nft list ruleset\n"
          f"    the module's log: {host.process.log_path}\n"
          "Type 'exit' to leave; the sandbox is then torn down.")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               PS1="[nettrust-sandbox] \\w# ")
    subprocess.call(lab.command("host", ["bash", "--norc", "-i"]), env=env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="try-nettrust", description=__doc__.splitlines()[0])
    p.add_argument("--no-shell", action="store_true", help="do not open a shell at the end")
    p.add_argument("--cleanup", action="store_true", help="remove leftovers of an interrupted run")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between steps")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("try-nettrust: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    if args.cleanup:
        removed = cleanup_stale(include_unrecorded=False)
        print("removed: " + (", ".join(removed) if removed else "nothing"))
        return 0
    say("Building the sandbox: a 'host' namespace (Unbound + NetTrust + nftables) and an 'internet'"
        " namespace (NSD with DNSSEC-signed zones, HTTP and echo servers)…")
    t = time.monotonic()
    with Lab() as lab:
        lab.set_resolver(["127.0.0.1", "::1"])
        host = NetTrustHost(lab, CONFIG, name="sandbox")
        host.start()
        print(f"    ready in {time.monotonic() - t:.1f} s: namespaces {lab.host_ns} and {lab.net_ns}")
        print("\n" + "\n".join("    " + ln for ln in CONFIG.splitlines()))
        walkthrough(lab, host, args.pause)
        if not args.no_shell and sys.stdin.isatty():
            interactive_shell(lab, host)
        say("Tearing the sandbox down (namespaces, processes, files).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

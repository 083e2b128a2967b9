"""The conntrack reaction (issue 16): connections no grant allows are reported, and with
``lifecycle.terminate_unauthorized = true`` cut, while granted ones live on.

A real Unbound with our module in the lab's host namespace; real TCP connections from that
namespace to the lab's echo server (port 7), each held by a small Python process that echoes a
line whenever asked on its stdin.  The first connection is opened before NetTrust ever started,
to an address nobody resolved.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from lab_util import resolving_lab

from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

EXTRA = {"fw.test": ["kept 300 IN A 198.51.100.93"]}
UNRESOLVED = "198.51.100.91"
GRANTED = "198.51.100.93"
HOLDER = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], 7), timeout=3)
print(json.dumps({"open": s.getsockname()[1]}), flush=True)
for line in sys.stdin:
    try:
        s.sendall(b"ping\\n")
        got = s.recv(100)
        print(json.dumps("echo" if got == b"ping\\n" else repr(got)), flush=True)
    except OSError as exc:
        print(json.dumps(type(exc).__name__), flush=True)
"""
CONFIG = """
[grants]
min_ttl = "1s"
[lifecycle]
liveness = false
terminate_unauthorized = {terminate}
"""


class Holder:
    def __init__(self, lab, address: str) -> None:
        self.proc = subprocess.Popen(lab.command("host", ["/usr/bin/python3", "-c", HOLDER, address]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["open"]

    def ping(self):
        self.proc.stdin.write("x\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_for(nt, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in nt.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{nt.log()[-3000:]}"
        time.sleep(0.05)
    return nt.log()


#: Another firewall of the host that tracks connections (as most do: Docker, firewalld, a
#: stateful ruleset): conntrack follows connections from before NetTrust's start.  Without one,
#: conntrack is off in a namespace until NetTrust's ruleset asks for it, and an older
#: connection's next packet is "new" to the ruleset, refused unless granted.
HOST_FIREWALL = """
table inet hostfw {
    chain out { type filter hook output priority 100; policy accept; ct state established counter accept; }
}
"""


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        lab.run("host", ["nft", "-f", "-"], input=HOST_FIREWALL)
        yield lab


def test_a_connection_from_before_start_is_reported_then_cut_while_a_granted_one_lives(lab):
    early = Holder(lab, UNRESOLVED)                 # before NetTrust: nothing filters yet
    granted = None
    try:
        assert early.ping() == "echo"
        nt = NetTrustHost(lab, CONFIG.format(terminate="false"), name="report")
        nt.start()
        line = f"connection not granted by any answer: tcp 192.0.2.2:{early.port} -> {UNRESOLVED}:7"
        log = wait_for(nt, line)
        assert f"{line} (terminated)" not in log
        status = json.loads(nt.nettrust("status", "--json").stdout)
        listed = status["lifecycle"]["unauthorized_connections"]
        assert {"src": "192.0.2.2", "dst": UNRESOLVED, "proto": "tcp", "sport": early.port,
                "dport": 7, "terminated": False} in listed
        assert early.ping() == "echo"               # reported only: it still flows
        out = lab.run("host", ["dig", "+short", "@127.0.0.1", "kept.fw.test"]).stdout.split()
        assert out == [GRANTED]
        granted = Holder(lab, GRANTED)              # opened through a grant
        assert GRANTED not in json.dumps(listed)
        lab.stop_unbound()                          # on_exit "keep": ruleset and grants stay

        nt = NetTrustHost(lab, CONFIG.format(terminate="true"), name="terminate")
        nt.start()
        wait_for(nt, f"{line} (terminated)")
        assert f"-> {GRANTED}:7" not in nt.log()    # the granted one is never touched
        assert early.ping() in ("ConnectionResetError", "BrokenPipeError")   # cut: TCP reset
        assert granted.ping() == "echo"             # control: the granted connection lives
        status = json.loads(nt.nettrust("status", "--json").stdout)
        assert status["lifecycle"]["unauthorized_connections"] == []
    finally:
        early.close()
        if granted is not None:
            granted.close()
        lab.stop_unbound()

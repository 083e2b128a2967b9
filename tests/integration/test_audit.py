"""Audit mode end to end: the same connection attempt is refused under ``firewall.enforcement =
"enforce"`` and goes through under ``"audit"``, where the kernel's own rule logs it (NFLOG prefix
``nettrust-audit``), counts it, and the agent stores it as a "would refuse" event.

Real Unbound with the module, real nftables in the lab's namespace, real TCP connects, the real
``nettrust agent`` and ``nettrust status``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab_util import dig, direct, wait_for

from nettrust_core.agent import stats_view
from testbed.lab import Lab
from testbed.product import NetTrustHost, stats_section
from testbed.zones import h_address

pytestmark = pytest.mark.integration

POLICY = """
[policy]
deny = ["**.blocked.fw.test"]
[grants]
min_ttl = "2s"
grace = "1s"
[metrics]
enabled = false
"""


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


def run_host(lab, name: str, enforcement: str) -> NetTrustHost:
    base = Path(lab.work_dir) / name
    base.mkdir(mode=0o755)
    section = stats_section(lab, database=str(base / "s.db"), report_socket=str(base / "a.sock"),
                            dnstap_socket=str(base / "d.sock"))
    host = NetTrustHost(lab, POLICY + f'[firewall]\nenforcement = "{enforcement}"\n' + section,
                        name=name)
    host.start_agent()
    host.start()
    return host



def attempts(host, address: str) -> list[dict]:
    """The refused-attempt events the agent stored for ``address``."""
    conn = stats_view.connect(host.config.stats.database)
    try:
        return [e for e in stats_view.refused(conn) if e["destination"] == address]
    finally:
        conn.close()


def rejected_packets(host) -> int:
    st = json.loads(host.nettrust("status", "--json", check=False).stdout)
    return st["counters"]["rejected"]["packets"]



def test_enforce_refuses_what_audit_lets_through_and_records(lab):
    v4, v6 = h_address(401)                  # never asked: not granted in either mode
    enforce = run_host(lab, "enforce", "enforce")
    try:
        assert direct(lab, v4) == "ConnectionRefusedError"
        assert direct(lab, v6) == "ConnectionRefusedError"
        assert direct(lab, "203.0.113.53", 53) is not True        # DNS: only the resolver's
        refused = wait_for(lambda: attempts(enforce, v4), "the refused event")
        assert refused[0]["verdict"] == "refused" and refused[0]["port"] == 80
        assert "AUDIT" not in enforce.nettrust("status").stdout
    finally:
        lab.stop_unbound()
        enforce.stop_agent()

    audit = run_host(lab, "audit", "audit")
    try:
        before = rejected_packets(audit)
        assert direct(lab, v4) is True                  # the very attempt enforce refused
        assert direct(lab, v6) is True
        assert direct(lab, "203.0.113.53", 53) is True  # nothing is dropped, DNS included
        assert rejected_packets(audit) >= before + 3    # counted: "would refuse"
        status = audit.nettrust("status").stdout
        assert "enforcement: AUDIT" in status and "rejected (would refuse)" in status
        for address in (v4, v6):
            seen = wait_for(lambda a=address: attempts(audit, a), f"the would-refuse event of {address}")
            assert seen[0]["verdict"] == "would refuse" and seen[0]["port"] == 80
            assert seen[0]["protocol"] == "tcp" and seen[0]["hook"] == "output"
        # the policy still judges names: a blocked name is still not answered
        assert dig(lab, "z.blocked.fw.test").status == "NXDOMAIN"
        assert dig(lab, "h402.fw.test").status == "NOERROR"
        ruleset = lab.run("host", ["nft", "list", "table", "inet", "nettrust"]).stdout
        assert "nettrust-audit" in ruleset
        refusing = [line.strip() for line in ruleset.splitlines()
                    if re.search(r"(\bdrop|reject with .*)$", line.strip())
                    and "policy drop" not in line]
        assert refusing == [], refusing
    finally:
        lab.stop_unbound()
        audit.stop_agent()
    # control: back to enforce, the same address is refused again
    again = run_host(lab, "again", "enforce")
    try:
        assert direct(lab, v4) == "ConnectionRefusedError"
    finally:
        lab.stop_unbound()
        again.stop_agent()

"""The CLI an administrator meets around a real resolver: verbs without a ruleset, and
``nettrust remove`` while Unbound runs the module (real Unbound, nftables, lab namespaces)."""

from __future__ import annotations

import re
import time

import pytest

from lab_util import direct, resolving_lab

from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

CLOSED = "198.18.50.50"         # answered by nobody: reachable only while the firewall is absent


@pytest.fixture(scope="module")
def lab():
    with resolving_lab() as lab:
        yield lab


@pytest.fixture
def nt(lab):
    host = NetTrustHost(lab, '[grants]\nmin_ttl = "1s"\n')
    yield host
    lab.stop_unbound()
    host.nettrust("remove", check=False)


def present(lab) -> bool:
    return lab.run("host", ["nft", "list", "table", "inet", "nettrust"], check=False).returncode == 0


@pytest.mark.parametrize("verb", ["hosts", "flush"])
def test_verbs_without_a_ruleset_say_so_in_one_line(nt, lab, verb):
    assert not present(lab)
    done = nt.nettrust(verb, check=False)
    assert done.returncode == 1
    # (SYSTEM_PYTHON may warn first that publicsuffixlist is absent: not ours to judge here)
    err = [ln for ln in done.stderr.splitlines() if "publicsuffixlist" not in ln]
    assert len(err) == 1
    err = err[0]
    assert "no NetTrust ruleset (table inet nettrust)" in err
    assert "errno" not in err and "netlink" not in err
    nt.start()                                          # control: with the ruleset, both succeed
    assert nt.nettrust(verb).returncode == 0


def test_remove_is_refused_while_the_module_runs_and_stop_makes_it_stick(nt, lab):
    proc = nt.start()
    assert present(lab)
    assert direct(lab, CLOSED) == "ConnectionRefusedError"
    done = nt.nettrust("remove", check=False)
    assert done.returncode == 1
    assert re.search(rf"refused: Unbound \(pid {proc.pid}\).*runs the NetTrust module", done.stderr)
    assert f"kill {proc.pid}" in done.stderr and "nettrust remove --stop" in done.stderr
    assert present(lab) and direct(lab, CLOSED) == "ConnectionRefusedError"   # nothing changed
    done = nt.nettrust("remove", "--stop")
    assert f"stopped Unbound (pid {proc.pid})" in done.stdout
    assert "ruleset removed" in done.stdout
    time.sleep(2)                                      # no resolver left to re-create it
    assert not present(lab)
    assert direct(lab, CLOSED) is True
    # Control: plain `remove` with no resolver running just removes (nothing to refuse).
    assert nt.nettrust("remove").returncode == 0

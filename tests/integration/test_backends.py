"""Several firewall backends end to end (issue 11): ``firewall.backends = ["nftables",
"recording"]`` with a real Unbound running our module, NSD serving the lab's zones, nftables in
the lab's namespace and real clients.

``recording`` is a FAKE backend (nettrust_core/firewall/recording.py): it programs nothing and
appends each call to a JSON-lines journal (``[recording] journal``), which is how this test sees
what the resolver process wrote into it.  ``[recording] fail_grants = true`` makes the fake refuse
every grant: a fake failure, standing for a second backend that breaks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lab_util import dig, direct, resolving_lab, wait_for

from testbed.product import NetTrustHost, stats_section

pytestmark = pytest.mark.integration

EXTRA = {"fw.test": [
    "both 300 IN A 198.51.100.71", "both 300 IN AAAA 2001:db8:100::71",
    "refused 300 IN A 198.51.100.72", "refused 300 IN AAAA 2001:db8:100::72",
]}
CONFIG = """
[grants]
min_ttl = "1s"
[firewall]
backends = ["nftables", "recording"]
[lifecycle]
liveness = false
report_interval = "1s"
[recording]
journal = "{journal}"
fail_grants = {fail}
"""


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


def journal_file(lab, name: str) -> Path:
    """An empty journal the fake (inside Unbound, user unbound) may append to."""
    path = Path(lab.work_dir) / "nettrust" / f"{name}.jsonl"
    path.parent.mkdir(mode=0o755, exist_ok=True)
    path.write_text("")
    os.chmod(path, 0o666)
    return path


def journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]



def scrape(lab) -> dict[str, float]:
    out = lab.run("host", ["curl", "-sS", "--max-time", "3", "http://127.0.0.1:9531/metrics"]).stdout
    return {name: float(value) for name, _, value in
            (ln.rpartition(" ") for ln in out.splitlines() if ln and not ln.startswith("#"))}



def test_a_grant_reaches_every_configured_backend(lab):
    path = journal_file(lab, "both")
    host = NetTrustHost(lab, CONFIG.format(journal=path, fail="false"), name="both")
    host.start()
    try:
        verbs = [e["verb"] for e in journal(path)]
        assert verbs[:1] == ["ensure"], verbs                  # the fake was built and ensured
        for rtype, address in (("A", "198.51.100.71"), ("AAAA", "2001:db8:100::71")):
            assert direct(lab, address) == "ConnectionRefusedError"       # control: not yet
            assert dig(lab, "both.fw.test", rtype) == ("NOERROR", [address])
            assert direct(lab, address) is True                           # nftables has it
            assert address in host.grants()
            recorded = [g for e in journal(path) if e["verb"] == "grant" for g in e["grants"]]
            assert [address, recorded[-1][1], "both.fw.test"] == recorded[-1]  # so has the fake
            assert recorded[-1][1] >= 300 and {e["pid"] for e in journal(path)} == {
                host.process.pid}
    finally:
        lab.stop_unbound()


def test_a_failing_backend_fails_the_answer_closed_and_is_counted(lab):
    path = journal_file(lab, "failing")
    config = CONFIG.format(journal=path, fail="true") + stats_section(lab)
    host = NetTrustHost(lab, config, name="failing")
    host.start_agent()
    host.start()
    try:
        for rtype, address in (("A", "198.51.100.72"), ("AAAA", "2001:db8:100::72")):
            for _attempt in (1, 2):                            # not served from cache either
                assert dig(lab, "refused.fw.test", rtype) == ("SERVFAIL", [])
            # nftables (listed first) had accepted the grant: it was rolled back there
            assert direct(lab, address) == "ConnectionRefusedError"
            assert address not in host.grants()
            refused = [e for e in journal(path) if e["verb"] == "grant_refused"]
            assert address in refused[-1]["grants"]
        assert not [e for e in journal(path) if e["verb"] == "grant"]
        log = host.log()
        assert "firewall backend 'recording' refused the grant" in log, log[-3000:]
        assert "rolled back on nftables" in log
        metrics = wait_for(lambda: (m := scrape(lab)) and any(
            'name="backend_errors_recording"' in k and v >= 4 for k, v in m.items()) and m,
            "the per-backend counter in the metrics")
        per_backend = {k: v for k, v in metrics.items() if 'name="backend_errors_' in k}
        assert list(per_backend.values()) == [4.0], per_backend     # only recording failed
        assert metrics["nettrust_backend_errors_total"] >= 4
        # a rollback revokes only the refused answer's addresses: the earlier grant (test
        # above, 300 s) is untouched
        assert direct(lab, "198.51.100.71") is True
    finally:
        lab.stop_unbound()
        host.stop_agent()
        host.nettrust("remove")

"""The dashboard in a real browser: headless Chromium (Debian package) logs in and loads every
page of ``nettrust web``, which reads the database that a real ``nettrust agent`` fills from a real
Unbound with the module, answering real dig queries in the lab; one connection is refused by the
firewall.  Everything runs in the lab's host namespace on loopback (the browser too).

Set NETTRUST_WEB_SCREENSHOTS=DIR to keep the screenshots (the README's are made so).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from lab_util import direct, wait_for

from nettrust_core.agent import stats_view
from nettrust_core.agent.web.auth import hash_password
from testbed.lab import Lab
from testbed.product import NetTrustHost, stats_section
from testbed.zones import h_address

pytestmark = pytest.mark.integration

PASSWORD = "lab dashboard password"
PORT = 9532
NAMES = [f"h{i}.fw.test" for i in range(601, 606)]
REFUSED = "198.51.100.250"              # never answered: the firewall refuses it
SCRIPT = Path(__file__).with_name("browser_pages.py")


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def dashboard(lab):
    config = ('[policy]\ndeny = ["**.blocked.fw.test"]\n[metrics]\nenabled = false\n'
              + stats_section(lab) + f'[web]\nenabled = true\nlisten = "127.0.0.1:{PORT}"\n'
              f'password_hash = "{hash_password(PASSWORD)}"\n')
    host = NetTrustHost(lab, config, name="web")
    host.start_agent()
    host.start()
    # traffic: five names answered and granted (one twice), a blocked one, a refused connect
    for name in NAMES + NAMES[:1]:
        lab.run("host", ["dig", "@127.0.0.1", "+short", name])
    lab.run("host", ["dig", "@127.0.0.1", "+short", "z.blocked.fw.test"])
    assert direct(lab, REFUSED) == "ConnectionRefusedError"
    db = host.config.stats.database

    def recorded():
        conn = stats_view.connect(db)
        try:
            return (stats_view.summary(conn)["grants"] >= 5
                    and stats_view.refused(conn) and stats_view.top(conn, "blocked"))
        finally:
            conn.close()
    wait_for(recorded, "the agent to store the traffic")
    web = lab.spawn("host", [sys.executable, "-m", "nettrust_core.cli", "-c",
                             str(host.config_path), "web"], log_name="web",
                    env={"PYTHONPATH": str(host.code_dir)})
    wait_for(lambda: lab.run("host", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                      f"http://127.0.0.1:{PORT}/login"], check=False).stdout
             == "200" or not web.alive(), "the dashboard to listen")
    assert web.alive(), web.log_tail()
    yield host
    web.stop()
    lab.stop_unbound()
    host.stop_agent()



@pytest.fixture(scope="module")
def seen(lab, dashboard):
    """What the browser saw on every page (one browser session, see browser_pages.py)."""
    work = Path(lab.work_dir) / "browser"
    shots = work / "shots"
    shots.mkdir(parents=True)
    granted = h_address(601)[0]
    out = lab.run("host", [sys.executable, str(SCRIPT), f"http://127.0.0.1:{PORT}", PASSWORD,
                           str(work / "profile"), str(shots), "h610.fw.test", granted, REFUSED],
                  timeout=180, env={"PYTHONPATH": str(dashboard.code_dir)})
    result = json.loads(out.stdout)
    keep = os.environ.get("NETTRUST_WEB_SCREENSHOTS")
    if keep:
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(keep) / f"dashboard-{png.name}")
    result["shots"] = {p.stem: p.stat().st_size for p in shots.glob("*.png")}
    return result


def test_login_is_required_and_a_wrong_password_is_refused(seen):
    assert seen["redirected_to_login"] is True
    assert seen["wrong_password_error"] == "Wrong password."
    assert seen["after_login"] == "/log"            # back where the user was going


def test_overview_shows_totals_top_lists_and_a_drawn_plot(seen):
    assert seen["plot_pixels"] > 50                 # the queries line is drawn on the canvas
    assert [t.lower() for t in seen["plot_legend"][1:]] == ["queries", "blocked", "grants",
                                                           "refused"]
    totals = dict(zip(seen["totals"][1::2], seen["totals"][0::2], strict=True))
    assert int(totals["grants"]) >= 5 and int(totals["blocked"]) == 1
    assert int(totals["refused attempts"]) >= 1
    allowed = {r[0]: int(r[1]) for r in seen["top-allowed"]}
    assert allowed[NAMES[0]] == 2 and all(n in allowed for n in NAMES)
    assert seen["top-blocked"][0][0] == "z.blocked.fw.test"
    assert seen["top-clients"][0][0] == "127.0.0.1"


def test_query_log_shows_rows_with_verdict_and_grants_and_follows_new_ones(seen):
    by_name = {}
    for _time, name, client, verdict, _reason, _source, grants in seen["log"]:
        by_name.setdefault(name, []).append((client, verdict, grants))
    client, verdict, grants = by_name[NAMES[1]][0]
    assert client == "127.0.0.1" and verdict == "granted" and h_address(602)[0] in grants
    assert by_name["z.blocked.fw.test"][0][1] == "blocked"
    # a query made after the page loaded appears without a reload
    assert seen["followed"] and seen["followed"][0][3] == "granted"
    assert "following new queries" in seen["follow_status"]


def test_granted_hosts_refused_attempts_and_why(seen):
    hosts = {r[0]: r for r in seen["granted"]}
    assert h_address(601)[0] in hosts and NAMES[0] in hosts[h_address(601)[0]][1]
    left = hosts[h_address(601)[0]][3]
    assert left.endswith("s") and left[0].isdigit()            # time left, counting down
    refused = [r for r in seen["refused"] if r[2] == REFUSED]
    assert refused and refused[0][1] == "refused" and refused[0][3] == "tcp/80"
    assert seen["why_state"].startswith(h_address(601)[0] + ": open until")
    assert seen["why-grants"][0][2] == NAMES[0]
    # why tells a refused address's story too: never granted, the attempt with its port
    assert seen["why_refused_state"].startswith(f"{REFUSED}: never granted")
    assert "refused connection attempt" in seen["why_refused_state"]
    assert seen["why-refused"] and {(r[1], r[4]) for r in seen["why-refused"]} == {("refused",
                                                                                   "tcp/80")}


def test_learn_page_shows_the_proposal(seen):
    patterns = [r[0] for r in seen["learn-allow"]]
    assert "*.fw.test" in patterns                 # five siblings collapsed
    assert "[policy]" in seen["learn_toml"] and "# learned:" in seen["learn_toml"]
    assert [r[0] for r in seen["learn-bare"]] == [REFUSED]


def test_no_page_failed_and_every_page_was_captured(seen):
    assert seen["errors"] == [] and seen["console"] == []
    assert set(seen["shots"]) == {"overview", "log", "hosts", "refused", "why", "learn"}
    assert all(size > 20_000 for size in seen["shots"].values())

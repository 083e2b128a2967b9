"""The container image, built here from docker/Containerfile and run the way the README says:
the network namespace it filters shared with the host (here the lab's host namespace, through
``--network ns:/run/netns/<host ns>``), ``--cap-add NET_ADMIN``, ``/etc/nettrust`` mounted.

Podman runs with a private storage root (testbed.containers.Podman) and builds FROM a Debian
minbase tarball cached in /var/cache/nettrust-test, since no registry is reachable here.  The
root namespace's ruleset and forwarding sysctls are compared before and after the whole run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_util import resolving_lab

from testbed import netns
from testbed.containers import BASE_IMAGE, HostSnapshot, Podman, cleanup_stale
from testbed.product_container import NetTrustContainer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/nettrust:test"
# Addresses only these names give out; 198.51.100.78 / 2001:db8:100::78 no answer ever gives.
EXTRA = {"fw.test": ["ctr 300 IN A 198.51.100.77", "ctr 300 IN AAAA 2001:db8:100::77"]}
ANSWERED = {"4": "198.51.100.77", "6": "2001:db8:100::77"}
UNANSWERED = {"4": "198.51.100.78", "6": "2001:db8:100::78"}
CONFIG = """
[policy]
deny = ["**.blocked.fw.test"]
[grants]
min_ttl = "1s"
max_ttl = "1h"
grace = "2s"
[log]
level = "debug"
"""
ONLY_TWO_CAPS = 1 << 12 | 1 << 10     # CAP_NET_ADMIN | CAP_NET_BIND_SERVICE
KILLED_RUN = """
import os, signal
from testbed.containers import Podman
podman = Podman().start()
podman("images")
print(podman.work_dir, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def podman(container_prerequisites):
    podman = Podman()
    podman.start()
    try:
        yield podman
    finally:
        podman.close()
    changes = HostSnapshot.take().changes_since(podman.before)
    if changes:
        pytest.fail("podman changed the host:\n" + "\n".join(changes))


@pytest.fixture(scope="module")
def image(podman):
    t0 = time.monotonic()
    podman.build(IMAGE, REPO / "docker" / "Containerfile", REPO)
    print(f"image built in {time.monotonic() - t0:.1f} s")
    return IMAGE


@pytest.fixture(scope="module")
def lab():
    with resolving_lab(EXTRA) as lab:
        yield lab


@pytest.fixture(scope="module")
def nt(lab, podman, image):
    container = NetTrustContainer(lab, podman, image, CONFIG)
    try:
        t0 = time.monotonic()
        container.start()
        print(f"container answered DNS {time.monotonic() - t0:.2f} s after podman run")
        yield container
    finally:
        container.stop()


def dig(lab, name, rtype="A"):
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=3", name, rtype]).stdout
    status = re.search(r"status: (\w+)", out).group(1)
    answers = [ln.split()[-1] for ln in out.split("ANSWER SECTION:\n", 1)[-1].split("\n\n")[0].splitlines()
               if "ANSWER SECTION" in out and ln and not ln.startswith(";")]
    return status, answers


def reachable(lab, address, port=80):
    """True, or the name of the error a connect from the host namespace got."""
    try:
        lab.connect("host", address, port, timeout=0.9).close()
        return True
    except OSError as exc:
        return type(exc).__name__


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(ln.split(":\t", 1) for ln in lines if ":\t" in ln)


def test_image_has_the_cli_and_a_valid_default_config(podman, image):
    out = podman("run", "--rm", "--network=none", image, "nettrust", "check").stdout
    assert out.startswith("/etc/nettrust/nettrust.toml: OK")
    assert podman("image", "exists", BASE_IMAGE, check=False).returncode == 0


def test_a_bad_mounted_config_stops_the_container_naming_file_key_and_line(podman, image, tmp_path):
    (tmp_path / "nettrust.toml").write_text('[grants]\nmin_ttl = "1s"\nmax_ttl = "soon"\n')
    tmp_path.chmod(0o755)
    run = podman("run", "--rm", "--network=none", "-v", f"{tmp_path}:/etc/nettrust:ro", image, check=False)
    assert run.returncode != 0
    assert "/etc/nettrust/nettrust.toml:3: grants.max_ttl: invalid duration 'soon'" in run.stderr, run.stderr


def test_a_config_dir_with_only_nettrust_toml_is_enough(podman, image, tmp_path):
    """The README's minimal /etc/nettrust; --network=none gives the container a namespace of
    its own (loopback only), so its ruleset lands there."""
    (tmp_path / "nettrust.toml").write_text('[grants]\nmax_ttl = "1h"\n')
    tmp_path.chmod(0o755)
    name = "nettrust-minimal"          # the storage is this run's own: no clash possible
    podman("run", "-d", "--name", name, "--network=none", "--cap-add=NET_ADMIN",
           "-v", f"{tmp_path}:/etc/nettrust:ro", image)
    try:
        deadline = time.monotonic() + 20
        while "nettrust: ready" not in (log := podman("logs", name).stderr) and time.monotonic() < deadline:
            assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() == "running", log
            time.sleep(0.1)
        assert "nettrust: ready" in log, log
        assert podman("exec", name, "nettrust", "status", check=False).returncode == 0
    finally:
        podman("rm", "--force", name, check=False)


def test_unbound_runs_as_unbound_holding_only_the_two_capabilities(nt, lab):
    pid = nt.pid()                         # the entrypoint exec()s into Unbound: same process
    status = proc_status(pid)
    uid = int(nt.podman("exec", nt.name, "id", "-u", "unbound").stdout)
    assert status["Name"] == "unbound"
    assert uid != 0 and status["Uid"].split() == [str(uid)] * 4
    for field in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
        assert int(status[field], 16) == ONLY_TWO_CAPS, (field, status[field])
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns.netns_inode(lab.host_ns)
    assert "nettrust: ready" in nt.log()


def test_container_answers_dns_through_the_module(nt, lab):
    status, answers = dig(lab, "www.fw.test")
    assert status == "NOERROR" and answers
    # The module's policy answers denied names itself; they never go upstream.
    assert dig(lab, "x.blocked.fw.test") == ("NXDOMAIN", [])


@pytest.mark.parametrize("family,rtype", [("4", "A"), ("6", "AAAA")])
def test_answered_address_becomes_reachable_unanswered_stays_blocked(nt, lab, family, rtype):
    answered, unanswered = ANSWERED[family], UNANSWERED[family]
    assert answered not in nt.grants()
    assert reachable(lab, answered) is not True
    assert dig(lab, "ctr.fw.test", rtype) == ("NOERROR", [answered])
    assert reachable(lab, answered) is True
    assert reachable(lab, unanswered) is not True
    grant = nt.grants()[answered]
    assert grant["name"] == "ctr.fw.test" and 300 < grant["expires_in"] <= 302


def test_operating_commands_work_inside_the_container(nt, lab):
    dig(lab, "ctr.fw.test")
    hosts = json.loads(nt.podman("exec", nt.name, "nettrust", "hosts", "--json").stdout)
    assert {"address": ANSWERED["4"], "name": "ctr.fw.test"}.items() <= next(
        h for h in hosts if h["address"] == ANSWERED["4"]).items()
    control = nt.podman("exec", nt.name, "unbound-control", "-c", "/run/nettrust/unbound.conf", "status")
    assert "is running" in control.stdout


def test_a_client_resolving_through_the_container_connects(nt, lab):
    out = lab.run("host", ["curl", "-sS", "-4", "--max-time", "3", "http://www.fw.test/"]).stdout
    assert out.startswith("hello from")


def test_stopping_the_container_fails_closed_and_a_user_unbound_container_adopts_grants(nt, lab, podman, image):
    nt.stop()
    assert nt.nettrust("status", check=False).returncode == 0        # ruleset still there
    assert reachable(lab, UNANSWERED["4"]) is not True
    assert ANSWERED["4"] in nt.grants()                               # decaying by kernel timeout
    # Podman grants --cap-add capabilities to a non-root --user as ambient ones, so the image
    # also runs without ever being root inside; Docker does not (the root default covers it).
    again = NetTrustContainer(lab, podman, image, CONFIG, name="nettrust-user")
    try:
        again.start(user="unbound", caps=("NET_ADMIN", "NET_BIND_SERVICE"))
        status = proc_status(again.pid())
        assert status["Name"] == "unbound" and status["Uid"].split()[0] != "0"
        assert int(status["CapEff"], 16) == ONLY_TWO_CAPS
        adopted = re.search(r"(\d+) live grants adopted", again.log())
        assert adopted and int(adopted.group(1)) >= 1, again.log()[-2000:]
        assert reachable(lab, ANSWERED["4"]) is True
        assert dig(lab, "ctr.fw.test") == ("NOERROR", [ANSWERED["4"]])
    finally:
        again.stop()


def test_a_killed_run_s_storage_is_removed_by_the_next_one(podman):
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work_dir = killed.stdout.strip()
    assert Path(work_dir).is_dir()
    assert cleanup_stale() == [work_dir]
    assert not Path(work_dir).exists()


def test_the_host_is_as_before_once_podman_is_gone(podman, nt, lab):
    nt.stop()
    podman.close()
    after = HostSnapshot.take()
    assert after.ruleset == podman.before.ruleset
    assert after.sysctls["net/ipv4/ip_forward"] == podman.before.sysctls["net/ipv4/ip_forward"]
    assert after.changes_since(podman.before) == []
    assert not podman.work_dir.exists()

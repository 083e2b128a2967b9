"""install.sh on a fresh Debian 12 host: a container with systemd as PID 1 (tests/integration/
install/Containerfile: Debian's packages, nothing of NetTrust), run in a lab's host namespace
that has no route to any package index.

One life cycle, in order (the tests share the container and depend on the previous step):
install without --start leaves egress alone; --start refuses while resolv.conf does not name the
local resolver; after `nettrust resolver-setup --apply`, --start resolves and enforces, IPv4 and
IPv6; a second run changes no file, restarts Unbound once and keeps the live grants; an edit of
the forwarder followed by `systemctl restart unbound` takes effect; --uninstall leaves a host
whose plain Unbound starts after the container restarts; --purge removes /etc/nettrust.

Podman runs with a private storage (testbed.containers.Podman), and the root namespace's ruleset
and sysctls are compared before and after.  Heavy: run it on its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from lab_util import resolving_lab

from testbed.containers import HostSnapshot, Podman

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/nettrust-debian-host:test"
EXTRA = {"fw.test": ["inst 300 IN A 198.51.100.77", "inst 300 IN AAAA 2001:db8:100::77",
                     "other 300 IN A 198.51.100.79"]}
ANSWERED = {"A": "198.51.100.77", "AAAA": "2001:db8:100::77"}
UNANSWERED = {"A": "198.51.100.78", "AAAA": "2001:db8:100::78"}
NOWHERE = "192.0.2.1"           # a forwarder that answers nothing
WATCHED = ["/etc/nettrust/nettrust.toml", "/etc/unbound/unbound.conf.d/nettrust.conf",
           "/etc/unbound/unbound.conf.d/remote-control.conf",
           "/etc/systemd/system/unbound.service.d/nettrust.conf", "/usr/local/bin/nettrust"]


def config(forwarder: str) -> str:
    return f"""
[upstream]
mode = "forward"
servers = ["{forwarder}"]
[policy]
deny = ["**.blocked.fw.test"]
[grants]
min_ttl = "1s"
"""


class Host:
    """The container: ``sh`` runs a command in it (as root), ``lab`` is the namespace it shares."""

    def __init__(self, podman, lab, name):
        self.podman, self.lab, self.name = podman, lab, name

    def sh(self, cmd: str, *, check: bool = True, timeout: float = 300, input: str | None = None):  # noqa: A002
        return self.podman("exec", "-i", self.name, "sh", "-c", cmd, check=check, timeout=timeout,
                           input=input)

    def install(self, *flags: str, check: bool = False):
        return self.sh(f"cd /root/nettrust && ./install.sh {' '.join(flags)}", check=check)

    def write(self, path: str, text: str) -> None:
        self.sh(f"cat > {path}", input=text)

    def wait_booted(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, f"systemd still {state!r}"
            time.sleep(0.3)

    def digests(self) -> dict[str, str]:
        out = self.sh("for f in " + " ".join(WATCHED) + "; do printf '%s ' $f; "
                      "cat $f 2>/dev/null | sha256sum; done").stdout
        return dict(line.split(" ", 1) for line in out.splitlines())

    def unbound_starts(self) -> int:
        """How many times systemd started unbound.service since the container booted."""
        out = self.sh("journalctl -b -q -u unbound -o cat | grep -c '^Started unbound.service' "
                      "|| true").stdout
        return int(out.strip() or 0)


def dig(lab, name, rtype="A"):
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=4", name, rtype], check=False).stdout
    status = re.search(r"status: (\w+)", out)
    answers = re.findall(rf"^{re.escape(name)}\.\s+\d+\s+IN\s+{rtype}\s+(\S+)$", out, re.M)
    return (status.group(1) if status else "TIMEOUT"), answers


def reachable(lab, address, port=80):
    try:
        lab.connect("host", address, port, timeout=0.9).close()
        return True
    except OSError as exc:
        return type(exc).__name__


def table_present(lab) -> bool:
    return lab.run("host", ["nft", "list", "table", "inet", "nettrust"], check=False).returncode == 0


@pytest.fixture(scope="module")
def host(container_prerequisites):
    podman = Podman()
    podman.start()
    try:
        t0 = time.monotonic()
        podman.build(IMAGE, REPO / "tests/integration/install/Containerfile",
                     REPO / "tests/integration/install")
        print(f"image built in {time.monotonic() - t0:.1f} s")
        with resolving_lab(EXTRA) as lab:
            name = f"{lab.token}-debian"
            mounts = [f"{REPO}:/src:ro"]
            for path in {lab.trust_anchor_file.parent, lab.root_hints_file.parent}:
                mounts.append(f"{path}:{path}:ro")
            podman("run", "-d", "--name", name, f"--network=ns:/run/netns/{lab.host_ns}",
                   "--systemd=always", "--cap-add=NET_ADMIN",
                   *(a for m in mounts for a in ("-v", m)), IMAGE, timeout=60)
            h = Host(podman, lab, name)
            try:
                h.wait_booted()
                h.sh("mkdir -p /root/nettrust && tar -C /src --exclude=./.venv --exclude=./.git "
                     "--exclude='*/__pycache__' --exclude=./build -cf - . | tar -C /root/nettrust -xf -")
                # The lab's zones and trust anchors for every Unbound in the container (server:
                # settings only; the forwarder is NetTrust's setting).
                zones = lab.unbound_zone_conf("forward").split("forward-zone:")[0]
                h.write("/etc/unbound/unbound.conf.d/lab.conf", zones)
                h.sh("systemctl restart unbound")
                yield h
            finally:
                podman("rm", "--force", "--time", "5", name, check=False, timeout=60)
    finally:
        podman.close()
    changes = HostSnapshot.take().changes_since(podman.before)
    if changes:
        pytest.fail("podman changed the host:\n" + "\n".join(changes))


def test_1_install_without_start_leaves_egress_alone(host):
    lab = host.lab
    assert reachable(lab, "198.18.50.50") is True            # control: nothing filters yet
    pid = host.sh("systemctl show -p MainPID --value unbound").stdout.strip()
    t0 = time.monotonic()
    done = host.install()
    print(f"first install.sh: {time.monotonic() - t0:.1f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all present" in done.stdout                      # no package index needed
    assert "from PyPI" not in done.stdout and "trying PyPI" not in done.stdout   # Debian only
    assert "NetTrust is installed" in done.stdout
    assert not table_present(lab)
    assert reachable(lab, "198.18.50.50") is True
    assert host.sh("systemctl show -p MainPID --value unbound").stdout.strip() == pid   # untouched


def test_2_start_refuses_while_resolv_conf_names_another_server(host):
    host.write("/etc/nettrust/nettrust.toml", config(host.lab.upstream_addresses[0]))
    done = host.install("--start", "--offline")
    assert done.returncode == 1
    assert "--start refused" in done.stderr and "nettrust resolver-setup" in done.stderr
    assert not table_present(host.lab) and reachable(host.lab, "198.18.50.50") is True


def test_3_start_resolves_and_enforces_ipv4_and_ipv6(host):
    lab = host.lab
    setup = host.sh("nettrust resolver-setup --apply")
    assert "wrote /etc/resolv.conf" in setup.stdout
    done = host.install("--start", "--offline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert table_present(lab)
    assert host.sh("systemctl is-active unbound").stdout.strip() == "active"
    assert reachable(lab, "198.18.50.50") == "ConnectionRefusedError"      # unanswered: refused
    for rtype in ("A", "AAAA"):
        assert reachable(lab, ANSWERED[rtype]) is not True
        assert dig(lab, "inst.fw.test", rtype) == ("NOERROR", [ANSWERED[rtype]])
        assert reachable(lab, ANSWERED[rtype]) is True
        assert reachable(lab, UNANSWERED[rtype]) is not True
    assert dig(lab, "x.blocked.fw.test")[0] == "NXDOMAIN"
    # The container's own lookups go through the same resolver.
    assert "198.51.100.77" in host.sh("getent ahostsv4 inst.fw.test").stdout


def test_4_second_run_changes_nothing_restarts_once_and_keeps_grants(host):
    lab = host.lab
    before = host.digests()
    starts = host.unbound_starts()
    done = host.install("--offline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "keeping the existing /etc/nettrust/nettrust.toml" in done.stdout
    assert host.digests() == before
    assert host.unbound_starts() == starts + 1
    # The grant made before the upgrade still opens the way, with no new DNS answer.
    assert reachable(lab, ANSWERED["A"]) is True
    assert ANSWERED["A"] in host.sh("nettrust hosts").stdout


def test_5_a_forwarder_change_takes_effect_on_restart(host):
    lab = host.lab
    host.write("/etc/nettrust/nettrust.toml", config(NOWHERE))
    host.sh("systemctl restart unbound")
    assert NOWHERE in host.sh("cat /etc/unbound/unbound.conf.d/nettrust.conf").stdout
    assert dig(lab, "other.fw.test")[0] in ("SERVFAIL", "TIMEOUT")       # the new forwarder
    host.write("/etc/nettrust/nettrust.toml", config(lab.upstream_addresses[0]))
    host.sh("systemctl restart unbound")
    assert dig(lab, "other.fw.test") == ("NOERROR", ["198.51.100.79"])     # control: back


def test_6_uninstall_leaves_plain_unbound_that_starts_after_a_restart(host):
    lab = host.lab
    done = host.install("--uninstall")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not table_present(lab)
    assert reachable(lab, "198.18.50.50") is True
    gone = host.sh("ls /etc/unbound/unbound.conf.d/nettrust.conf /etc/systemd/system/unbound.service.d "
                   "/opt/nettrust /usr/local/bin/nettrust 2>&1 || true").stdout
    assert gone.count("No such file") == 4, gone
    assert "control-interface: /run/unbound.ctl" in host.sh(
        "cat /etc/unbound/unbound.conf.d/remote-control.conf").stdout          # restored
    assert host.sh("cat /etc/resolv.conf").stdout.find("nettrust") == -1        # restored
    assert host.sh("test -f /etc/nettrust/nettrust.toml", check=False).returncode == 0   # kept
    host.podman("restart", "--time", "5", host.name, timeout=120)
    host.wait_booted()
    assert host.sh("systemctl is-active unbound").stdout.strip() == "active"
    assert dig(lab, "localhost")[0] == "NOERROR"
    assert "python" not in host.sh("journalctl -b -q -u unbound -o cat").stdout
    assert not table_present(lab)


def test_7_purge_removes_the_configuration(host):
    done = host.install("--uninstall", "--purge")
    assert done.returncode == 0, done.stderr
    assert host.sh("test -e /etc/nettrust", check=False).returncode == 1
    assert host.sh("getent passwd nettrust", check=False).returncode == 2
    assert host.sh("systemctl is-active unbound").stdout.strip() == "active"


# -- the same host without systemd ----------------------------------------------------------------
ONLY_TWO_CAPS = 1 << 12 | 1 << 10     # CAP_NET_ADMIN | CAP_NET_BIND_SERVICE


def test_8_without_systemd_the_start_script_runs_unbound_with_two_capabilities(host):
    """No init system at all (`sleep` as PID 1): install.sh makes the control-socket directory
    and the root trust anchor itself, and its start script runs the module as `unbound`."""
    lab, podman = host.lab, host.podman
    podman("rm", "--force", "--time", "5", host.name, check=False, timeout=60)
    bare = Host(podman, lab, f"{lab.token}-nosystemd")
    mounts = [f"{REPO}:/src:ro", *(f"{p}:{p}:ro" for p in {lab.trust_anchor_file.parent,
                                                          lab.root_hints_file.parent})]
    podman("run", "-d", "--name", bare.name, f"--network=ns:/run/netns/{lab.host_ns}",
           "--systemd=false", "--cap-add=NET_ADMIN", *(a for m in mounts for a in ("-v", m)),
           IMAGE, "sleep", "infinity", timeout=60)
    try:
        bare.sh("mkdir -p /root/nettrust && tar -C /src --exclude=./.venv --exclude=./.git "
                "--exclude='*/__pycache__' -cf - . | tar -C /root/nettrust -xf -")
        bare.write("/etc/unbound/unbound.conf.d/lab.conf",
                   lab.unbound_zone_conf("forward").split("forward-zone:")[0])
        bare.sh("mkdir -p /etc/nettrust")
        bare.write("/etc/nettrust/nettrust.toml", config(lab.upstream_addresses[0]))
        assert bare.sh("test -d /run/systemd/system", check=False).returncode == 1
        done = bare.install("--offline")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "start Unbound with NetTrust:  /usr/local/sbin/nettrust-unbound-start &" in done.stdout
        assert bare.sh("stat -c %U /run/unbound && test -s /var/lib/unbound/root.key").stdout.strip() == "unbound"
        assert not table_present(lab)
        bare.sh("nettrust resolver-setup --apply")
        done = bare.install("--start", "--offline")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert table_present(lab)
        pid = bare.sh("pgrep -x unbound").stdout.split()[0]
        status = dict(ln.split(":\t", 1) for ln in bare.sh(f"cat /proc/{pid}/status").stdout.splitlines()
                      if ":\t" in ln)
        uid = bare.sh("id -u unbound").stdout.strip()
        assert status["Uid"].split() == [uid] * 4
        assert int(status["CapEff"], 16) == ONLY_TWO_CAPS
        assert dig(lab, "inst.fw.test", "AAAA") == ("NOERROR", [ANSWERED["AAAA"]])
        assert reachable(lab, ANSWERED["AAAA"]) is True
        assert reachable(lab, UNANSWERED["AAAA"]) is not True
        done = bare.install("--uninstall")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert not table_present(lab) and reachable(lab, "198.18.50.50") is True
    finally:
        podman("rm", "--force", "--time", "2", bare.name, check=False, timeout=60)

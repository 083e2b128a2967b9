"""Podman for the tests, without changing the machine it runs on.

Root podman is easy to misuse on a test machine: without an explicit ``--network`` its default
bridge makes netavark add NAT tables to the root namespace's firewall and set ``ip_forward=1``;
a storage configuration that changes after the first call stalls every later ``run`` for 20 s;
and its defaults (crun, ulimits above the caller's hard limits) fail on hybrid-cgroup VMs
(see ../shared/reference/containers.md).  :class:`Podman` fixes all of that up front:

* a private storage root and ``containers.conf`` written before the first podman call
  (``netns = "host"`` as a backstop, runc, ulimits within the caller's hard limits),
* every ``run``/``create``/``build`` must name its network, or :class:`~testbed.errors.LabError`,
* no registry: the Debian base is a ``debootstrap --variant=minbase`` tarball built from the
  machine's own Debian mirror, cached in :data:`CACHE_DIR` between runs (CI clones afresh on the
  same machine) and imported once per storage (``podman image exists`` guard),
* ``close()`` resets the private storage and removes what podman created outside it (cgroup
  directories, ``/var/lib/containers``, ``/run/containers``); :meth:`HostSnapshot.take` before and
  after lets a test prove that, and that the root namespace's ruleset and forwarding sysctls did
  not change.
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SYSTEM_PATH, LabCommandError, LabError, find_tool
from .teardown import owner_alive, register, signals_deferred, unregister, write_owner

SUITE = "bookworm"
BASE_IMAGE = f"localhost/debian-{SUITE}:base"
CACHE_DIR = Path("/var/cache/nettrust-test")
BASE_TARBALL = CACHE_DIR / f"{SUITE}-minbase.tar.zst"
#: Rebuild the cached base after this long.  The image build installs from the live mirror
#: anyway, so an older base still works; it only drifts further from current Debian.
BASE_MAX_AGE = 30 * 86400
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap", "zstd": "zstd",
         "tar": "tar", "nft": "nftables"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: What root podman creates outside its storage root whatever it is told: its blob-info cache
#: and netavark's run directory.  Removed again by close() when they did not exist before.
PODMAN_LEFTOVERS = (Path("/var/lib/containers"), Path("/run/containers"))
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
_NETWORKED = ("run", "create", "build")
WORK_PREFIX = "nettrust-podman-"


# ------------------------------------------------------------------------------ prerequisites

def debian_mirrors(sources=APT_SOURCES) -> dict[str, str]:
    """Suite → URI of the machine's configured Debian mirrors (one-line and deb822 sources).

    E.g. ``{"bookworm": "http://deb.debian.org/debian", "bookworm-security": "http://…"}``.
    """
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.is_file():
            files.append(src)
    found: dict[str, str] = {}
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if fields.get("Enabled", "yes").strip() == "no" or "deb" not in fields.get("Types", "").split():
                    continue
                uris = fields.get("URIs", "").split()
                for suite in fields.get("Suites", "").split():
                    if uris:
                        found.setdefault(suite, uris[0])
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    found.setdefault(m.group(2), m.group(1))
    return {suite: uri.rstrip("/") for suite, uri in found.items() if uri.startswith(("http://", "https://"))}


def mirror_problem(mirror: str | None, timeout: float = 10.0) -> str | None:
    """Why ``mirror`` cannot serve the build (None: it can)."""
    if not mirror:
        return f"no http(s) Debian mirror for {SUITE} in /etc/apt/sources.list(.d)"
    url = f"{mirror}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:   # noqa: S310 (apt's own mirror)
            reply.read(64)
    except OSError as exc:
        return f"the configured Debian mirror is unreachable ({url}: {exc})"
    return None


def missing_prerequisites() -> list[str]:
    """Why the container tests cannot run here (empty: they can), each a sentence to act on."""
    problems = []
    if os.geteuid() != 0:
        problems.append("building and running the image needs root")
    for tool, package in TOOLS.items():
        if find_tool(tool) is None:
            problems.append(f"{tool} missing (apt-get install {package})")
    # The image build runs apt-get against the mirror, whether the base is cached or not.
    problem = mirror_problem(debian_mirrors().get(SUITE))
    if problem:
        problems.append(problem)
    return problems


def _fresh(path: Path) -> bool:
    return path.stat().st_size > 0 and time.time() - path.stat().st_mtime < BASE_MAX_AGE


# ------------------------------------------------------------------------------ host snapshot

@dataclass
class HostSnapshot:
    """What podman must leave as it was in the root namespace."""

    ruleset: str
    sysctls: dict[str, str]
    links: list[str]
    cgroup_dirs: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)

    SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")

    @classmethod
    def take(cls) -> HostSnapshot:
        nft = subprocess.run([find_tool("nft") or "nft", "list", "ruleset"], capture_output=True,
                             text=True, env={"PATH": SYSTEM_PATH}, check=True)
        ip = subprocess.run([find_tool("ip") or "ip", "-o", "link", "show"], capture_output=True,
                            text=True, env={"PATH": SYSTEM_PATH}, check=True)
        return cls(ruleset=nft.stdout,
                   sysctls={k: Path("/proc/sys", k).read_text().strip() for k in cls.SYSCTLS},
                   links=sorted(ln.split(":")[1].strip() for ln in ip.stdout.splitlines()),
                   cgroup_dirs=sorted(str(p) for p in CGROUP_ROOT.glob("*/libpod_parent")),
                   leftovers=[str(p) for p in PODMAN_LEFTOVERS if p.exists()])

    def changes_since(self, before: HostSnapshot) -> list[str]:
        """Human-readable differences from ``before`` (empty: nothing changed)."""
        changes = []
        if self.ruleset != before.ruleset:
            changes.append(f"root namespace ruleset changed:\n--- before\n{before.ruleset}\n--- after\n{self.ruleset}")
        for key, value in self.sysctls.items():
            if value != before.sysctls.get(key):
                changes.append(f"{key}: {before.sysctls.get(key)} -> {value}")
        if self.links != before.links:
            changes.append(f"root namespace links: {before.links} -> {self.links}")
        if self.cgroup_dirs != before.cgroup_dirs:
            changes.append(f"cgroup dirs: {before.cgroup_dirs} -> {self.cgroup_dirs}")
        if self.leftovers != before.leftovers:
            changes.append(f"podman's directories outside its storage: {before.leftovers} -> {self.leftovers}")
        return changes


# ------------------------------------------------------------------------------ the base image

def build_base_tarball(target: Path = BASE_TARBALL, *, mirrors: dict[str, str] | None = None) -> Path:
    """The cached minbase tarball, built (debootstrap, ~30 s) when missing or stale.

    Built under a lock and renamed into place, so concurrent test runs build it once and never
    read half a file.  Its apt sources are the machine's mirror for the suite, -updates and
    -security, so the image gets the same package versions as the host.
    """
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and _fresh(target):
            return target
        mirrors = debian_mirrors() if mirrors is None else mirrors
        problem = mirror_problem(mirrors.get(SUITE))
        if problem:
            raise LabError(problem)
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=target.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            _checked(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirrors[SUITE]], timeout=900)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / junk).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            lines = [f"deb {mirrors[s]} {s} main" for s in (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
                     if s in mirrors]
            (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
            partial = Path(tmp) / "base.tar.zst"
            _checked(["sh", "-c", 'tar -C "$1" --numeric-owner -c . | zstd -q -T0 -3 -o "$2"', "sh",
                      str(rootfs), str(partial)], timeout=300)
            os.chmod(partial, 0o644)
            os.replace(partial, target)
    return target


def _checked(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
             input: str | None = None) -> subprocess.CompletedProcess:  # noqa: A002
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                          env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **(env or {})})
    if proc.returncode != 0:
        raise LabCommandError(f"{' '.join(argv)} exited {proc.returncode}:\n{(proc.stderr or proc.stdout)[-3000:]}",
                              argv=argv, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    return proc


# ------------------------------------------------------------------------------ podman

class Podman:
    """Root podman with a private, throw-away storage root; use as a context manager.

    ``podman(*args)`` runs one command with this configuration; ``run``/``create``/``build``
    without ``--network`` are refused before podman ever sees them.
    """

    def __init__(self, work_root: str | os.PathLike = "/var/tmp") -> None:
        self.work_root = Path(work_root)
        self.work_dir: Path | None = None
        self.token = "podman"
        self.before: HostSnapshot | None = None
        self._closed = False

    def __enter__(self) -> Podman:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Podman:
        cleanup_stale(self.work_root)
        self.before = HostSnapshot.take()
        self.work_dir = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=self.work_root))
        self.token = self.work_dir.name
        write_owner(self.work_dir)
        (self.work_dir / "preexisting").write_text("\n".join(self.before.leftovers) + "\n")
        register(self)
        for sub in ("storage", "runroot", "libpod-tmp", "tmp"):
            (self.work_dir / sub).mkdir()
        nofile = _limit(resource.RLIMIT_NOFILE, 1048576)
        nproc = _limit(resource.RLIMIT_NPROC, 32768)      # podman lowers its own nproc to 32768
        (self.work_dir / "containers.conf").write_text(f"""\
[containers]
# Backstop: never let netavark build a bridge/NAT in the root namespace.
netns = "host"
# At or below the caller's hard limits (root may lack CAP_SYS_RESOURCE).
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
# crun 1.8 refuses hybrid cgroup v1+v2 layouts; runc copes.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# `podman system reset` removes tmp_dir itself: keep it apart from TMPDIR.
tmp_dir = "{self.work_dir}/libpod-tmp"
image_copy_tmp_dir = "{self.work_dir}/tmp"
""")
        (self.work_dir / "storage.conf").write_text(f"""\
[storage]
driver = "overlay"
graphroot = "{self.work_dir}/storage"
runroot = "{self.work_dir}/runroot"
""")
        return self

    def env(self) -> dict[str, str]:
        return _podman_env(self.work_dir)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:  # noqa: A002
        if self.work_dir is None or self._closed:
            raise LabError("Podman is not started (use `with Podman() as podman:`)")
        args = tuple(str(a) for a in args)
        require_network(args)
        argv = [find_tool("podman") or "podman", *args]
        if check:
            return _checked(argv, timeout=timeout, env=self.env(), input=input)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                              env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **self.env()})

    def ensure_base(self) -> str:
        """Import the cached Debian base (building the tarball first if needed) once."""
        if self("image", "exists", BASE_IMAGE, check=False).returncode != 0:
            tarball = build_base_tarball()
            _checked(["sh", "-c", 'zstd -dc "$1" | podman import -q - "$2"', "sh", str(tarball), BASE_IMAGE],
                     timeout=300, env=self.env())
        return BASE_IMAGE

    def build(self, tag: str, containerfile: Path, context: Path, *, base: str | None = None,
              timeout: float = 900) -> str:
        """``podman build`` on the host network (apt reaches the mirror), FROM the local base."""
        base = base or self.ensure_base()
        self("build", "--network=host", "--pull=never", "--build-arg", f"BASE={base}",
             "-f", str(containerfile), "-t", tag, str(context), timeout=timeout)
        return tag

    def close(self) -> None:
        """Remove every container, image and layer of this storage, and what podman left outside it."""
        if self._closed or self.work_dir is None:
            return
        with signals_deferred():
            errors = []
            reset = self("system", "reset", "--force", check=False, timeout=120)
            if reset.returncode != 0:
                errors.append(f"podman system reset: {reset.stderr.strip()}")
            if self.before is not None and not self._others_running():
                # Shared by every podman on the machine: only the last run out removes them.
                for parent in CGROUP_ROOT.glob("*/libpod_parent"):
                    if str(parent) not in self.before.cgroup_dirs:
                        _rmdir_tree(parent, errors)
                for path in PODMAN_LEFTOVERS:
                    if str(path) not in self.before.leftovers:
                        shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(self.work_dir, ignore_errors=True)
            if self.work_dir.exists():
                errors.append(f"could not remove {self.work_dir}")
            self._closed = True
            unregister(self)
        if errors:
            raise LabError("podman cleanup incomplete:\n  - " + "\n  - ".join(errors))


    def _others_running(self) -> bool:
        return any(entry != self.work_dir and owner_alive(entry)
                   for entry in self.work_root.glob(WORK_PREFIX + "*"))


def _podman_env(work_dir: Path) -> dict[str, str]:
    return {"CONTAINERS_CONF": str(work_dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(work_dir / "storage.conf"),
            "TMPDIR": str(work_dir / "tmp")}


def cleanup_stale(work_root: str | os.PathLike = "/var/tmp") -> list[str]:
    """Reset and remove the private storage of runs killed before ``close()`` (their owner
    process is gone); returns the directories removed."""
    removed, preexisting, live, unknown = [], set(), 0, False
    for entry in sorted(Path(work_root).glob(WORK_PREFIX + "*")):
        alive = owner_alive(entry)
        if alive or (alive is None and time.time() - entry.stat().st_mtime < 60):
            live += 1
            continue
        if (entry / "storage.conf").is_file():
            subprocess.run([find_tool("podman") or "podman", "system", "reset", "--force"],
                           capture_output=True, timeout=120,
                           env={"PATH": SYSTEM_PATH, **_podman_env(entry)})
        try:
            preexisting.update((entry / "preexisting").read_text().split())
        except OSError:
            unknown = True              # killed before it recorded what existed: leave them
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(str(entry))
    if removed and not live and not unknown:
        for path in PODMAN_LEFTOVERS:
            if str(path) not in preexisting:
                shutil.rmtree(path, ignore_errors=True)
    return removed


def require_network(args: tuple[str, ...]) -> None:
    """LabError unless a ``run``/``create``/``build`` names its network: podman's default bridge
    changes the root namespace's firewall and ``ip_forward``, even when the run then fails."""
    if args and args[0] in _NETWORKED and not any(a == "--network" or a.startswith("--network=")
                                                  for a in args):
        raise LabError(f"podman {args[0]} without --network would let podman build a bridge "
                       f"in the root namespace; pass --network=host, ns:/run/netns/<name> or none")


def _limit(which: int, wanted: int) -> int:
    hard = resource.getrlimit(which)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _rmdir_tree(top: Path, errors: list[str]) -> None:
    """rmdir every (empty) cgroup directory below and including ``top``, deepest first."""
    paths = [Path(root, name) for root, dirs, _files in os.walk(top, topdown=False) for name in dirs]
    for path in [*paths, top]:
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"rmdir {path}: {exc}")

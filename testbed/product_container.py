"""NetTrust's container image running inside a lab: the image's own entrypoint, Unbound and module,
joined to the lab's host namespace (``--network ns:/run/netns/<host ns>``).

The configuration is the one :class:`testbed.product.NetTrustHost` writes and validates, mounted
as the image's ``/etc/nettrust``; the lab's zones and trust anchors reach the container as a
snippet in ``/etc/nettrust/unbound.conf.d/`` plus read-only mounts of the files it names, at the
same paths.  Everything else (listen addresses, privilege drop, module path) is the image's.
"""

from __future__ import annotations

import time

from . import netns
from .errors import LabError
from .product import NetTrustHost

_READY_TIMEOUT = 30.0


class NetTrustContainer:
    """One NetTrust container in ``lab``'s host namespace, run by ``podman`` (a started Podman)."""

    def __init__(self, lab, podman, image: str, config_text: str, *, name: str = "nettrust") -> None:
        self.lab = lab
        self.podman = podman
        self.image = image
        self.host = NetTrustHost(lab, config_text, name=name)
        self.config_dir = self.host.config_path.parent
        snippets = self.config_dir / "unbound.conf.d"
        snippets.mkdir(mode=0o755, exist_ok=True)
        (snippets / "lab.conf").write_text(self.host.zone_conf())
        (snippets / "lab.conf").chmod(0o644)
        self.name = f"{lab.token}-{name}"
        self.started = False

    def run_args(self, *, user: str | None = None, caps: tuple[str, ...] = ("NET_ADMIN",)) -> list[str]:
        """``podman run`` arguments: the README's host command with the lab's namespace as host."""
        mounts = [f"{self.config_dir}:/etc/nettrust:ro"]
        for path in (self.lab.trust_anchor_file.parent, self.lab.root_hints_file.parent):
            mounts.append(f"{path}:{path}:ro")
        args = ["run", "-d", "--name", self.name, f"--network=ns:/run/netns/{self.lab.host_ns}",
                *(f"--cap-add={c}" for c in caps),
                "-e", f"NETTRUST_CONFIG=/etc/nettrust/{self.host.config_path.name}"]
        if user is not None:
            args += ["--user", user]
        for mount in mounts:
            args += ["-v", mount]
        return [*args, self.image]

    def start(self, **run_options) -> NetTrustContainer:
        """Start the container; return once Unbound answers on 127.0.0.1:53 in the host ns."""
        self.podman(*self.run_args(**run_options), timeout=60)
        self.started = True
        deadline = time.monotonic() + _READY_TIMEOUT
        while netns.dns_probe(self.lab.host_ns, "127.0.0.1", "localhost.", 1, rd=True, timeout=0.2) is None:
            if self.state() != "running":
                raise LabError(f"container {self.name} is {self.state()}; log:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"container {self.name} did not answer DNS within {_READY_TIMEOUT:.0f} s; "
                               f"log:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def inspect(self, template: str) -> str:
        return self.podman("inspect", "--format", template, self.name).stdout.strip()

    def state(self) -> str:
        return self.inspect("{{.State.Status}}")

    def pid(self) -> int:
        """The container's first process, which the entrypoint exec()s into Unbound."""
        return int(self.inspect("{{.State.Pid}}"))

    def log(self) -> str:
        result = self.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> None:
        """SIGTERM (Unbound's deinit runs), then remove the container."""
        if self.started:
            self.podman("stop", "--time", "10", self.name, check=False, timeout=60)
            self.podman("rm", "--force", self.name, check=False, timeout=60)
            self.started = False

    # The kernel state is the lab's: the host-side CLI reads it like an administrator would.
    def nettrust(self, *args: str, check: bool = True):
        return self.host.nettrust(*args, check=check)

    def grants(self) -> dict[str, dict]:
        return self.host.grants()


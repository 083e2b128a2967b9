"""The testbed's one exception and the tool look-ups that produce its most common message."""

from __future__ import annotations

import shutil

from nettrust_core.errors import NetTrustError

#: The PATH every lab command runs with, whatever the caller's PATH is (pyenv shims, venvs).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Which Debian package provides each external tool the lab (or its tests) may call.
APT_PACKAGES = {
    "ip": "iproute2",
    "nsd": "nsd",
    "nsd-checkconf": "nsd",
    "ldns-keygen": "ldnsutils",
    "ldns-signzone": "ldnsutils",
    "ldns-verify-zone": "ldnsutils",
    "setpriv": "util-linux",
    "sysctl": "procps",
    "unbound": "unbound",
    "unbound-checkconf": "unbound",
    "dig": "bind9-dnsutils",
    "curl": "curl",
    "nft": "nftables",
    "/usr/bin/python3": "python3",
}


class LabError(NetTrustError):
    """The lab could not do what it was asked; the message says what to do about it."""


class LabCommandError(LabError):
    """A command run by the lab failed; ``argv``, ``returncode``, ``stdout`` and ``stderr`` say how."""

    def __init__(self, message: str, *, argv: list[str], returncode: int | None,
                 stdout: str = "", stderr: str = "") -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message)


def find_tool(name: str) -> str | None:
    """The absolute path of ``name`` on the system PATH, or None."""
    if name.startswith("/"):
        return name if shutil.which(name) else None
    return shutil.which(name, path=SYSTEM_PATH)


def missing_tool_message(name: str) -> str:
    package = APT_PACKAGES.get(name)
    hint = f"install it with: apt-get install {package}" if package else "install it"
    return f"required tool {name!r} not found on {SYSTEM_PATH}; {hint}"


def require_tool(name: str) -> str:
    """The absolute path of ``name``; LabError naming the apt package when it is missing."""
    path = find_tool(name)
    if path is None:
        raise LabError(missing_tool_message(name))
    return path

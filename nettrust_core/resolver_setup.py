"""Pointing this host at the local resolver: which tool owns /etc/resolv.conf, and its one setting.

Four cases, detected in this order under a root directory (``/``, or a temporary root in tests):

- **systemd-resolved** (``etc/resolv.conf`` links into ``/run/systemd/resolve``): a drop-in
  ``etc/systemd/resolved.conf.d/nettrust.conf`` with ``DNS=127.0.0.1`` and ``Domains=~.``, so the
  stub at 127.0.0.53 forwards every name to Unbound;
- **NetworkManager** (``etc/NetworkManager/NetworkManager.conf``): ``etc/NetworkManager/conf.d/
  90-nettrust.conf`` with a global DNS domain ``*`` served by 127.0.0.1, which NetworkManager
  writes into resolv.conf instead of the servers DHCP gave;
- **ifupdown with dhclient** (``etc/dhcp/dhclient.conf``): ``supersede domain-name-servers
  127.0.0.1;`` there, so a lease renewal does not put the DHCP servers back;
- otherwise **a plain resolv.conf**: ``nameserver 127.0.0.1`` (the old file kept beside it).

:func:`points_at_local` answers the question ``install.sh --start`` asks before enabling the
firewall: would this host's own lookups go to the local resolver?
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from .errors import NetTrustError

MARK = "# nettrust resolver-setup"
BACKUP = ".nettrust-orig"
RESOLVED_STUB = ipaddress.ip_address("127.0.0.53")
RESOLVED_DROPIN = "etc/systemd/resolved.conf.d/nettrust.conf"


@dataclass(frozen=True)
class Setting:
    manager: str            # "systemd-resolved", "NetworkManager", "ifupdown-dhclient", "resolv.conf"
    path: str               # the file, relative to the root
    text: str               # what it gets (whole file, or the line appended for dhclient)
    append: bool = False    # dhclient: append the line to the existing file
    then: str = ""          # the command that makes it take effect now

    def describe(self) -> str:
        verb = "append to" if self.append else "write"
        body = "".join(f"    {line}\n" for line in self.text.splitlines())
        who = ("no tool manages /etc/resolv.conf here (a plain file)" if self.manager == "resolv.conf"
               else f"{self.manager} manages /etc/resolv.conf here")
        out = f"{who}; {verb} /{self.path}:\n{body}"
        return out + (f"then run: {self.then}\n" if self.then else "")


def _p(root: str, rel: str) -> str:
    return os.path.join(root, rel)


def detect(root: str = "/", address: str = "127.0.0.1") -> Setting:
    """The one setting this system needs so its lookups go to the resolver at ``address``."""
    link = _resolv_link(root)
    if link and "systemd/resolve" in link:
        return Setting("systemd-resolved", "etc/systemd/resolved.conf.d/nettrust.conf",
                       f"{MARK}\n[Resolve]\nDNS={address}\nDomains=~.\n",
                       then="systemctl restart systemd-resolved")
    if os.path.exists(_p(root, "etc/NetworkManager/NetworkManager.conf")):
        return Setting("NetworkManager", "etc/NetworkManager/conf.d/90-nettrust.conf",
                       f"{MARK}\n[global-dns-domain-*]\nservers={address}\n",
                       then="systemctl reload NetworkManager")
    if os.path.exists(_p(root, "etc/dhcp/dhclient.conf")):
        return Setting("ifupdown-dhclient", "etc/dhcp/dhclient.conf",
                       f"supersede domain-name-servers {address}; {MARK}\n", append=True,
                       then="ifdown IFACE && ifup IFACE (or wait for the next lease); until "
                            "then /etc/resolv.conf keeps the DHCP servers")
    return Setting("resolv.conf", "etc/resolv.conf", f"{MARK}\nnameserver {address}\n")


def apply(setting: Setting, root: str = "/") -> str:
    """Write ``setting`` under ``root`` (idempotent; a replaced resolv.conf is kept as
    ``resolv.conf.nettrust-orig``).  Returns one line saying what was done."""
    path = _p(root, setting.path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if setting.append:
        old = _read(path) or ""
        if setting.text.strip() in old:
            return f"/{setting.path} already has the setting"
        with open(path, "a") as f:
            f.write(("" if old.endswith("\n") or not old else "\n") + setting.text)
        return f"appended to /{setting.path}"
    if _read(path) == setting.text:
        return f"/{setting.path} already has the setting"
    if setting.manager == "resolv.conf" and os.path.lexists(path):
        if not os.path.lexists(path + BACKUP):
            if os.path.islink(path):
                os.symlink(os.readlink(path), path + BACKUP)
            else:
                with open(path + BACKUP, "w") as f:
                    f.write(_read(path) or "")
        if os.path.islink(path):
            os.unlink(path)
        else:
            # In place: a container's resolv.conf is often a bind mount (no rename over it).
            with open(path, "w") as f:
                f.write(setting.text)
            return f"wrote /{setting.path} (the old one kept as /{setting.path}{BACKUP})"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(setting.text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return f"wrote /{setting.path}"


def undo(root: str = "/") -> list[str]:
    """Remove what :func:`apply` wrote (any of the four cases); lines saying what was done."""
    done = []
    for rel in (RESOLVED_DROPIN,
                "etc/NetworkManager/conf.d/90-nettrust.conf"):
        if os.path.exists(_p(root, rel)):
            os.unlink(_p(root, rel))
            done.append(f"removed /{rel}")
    dh = _p(root, "etc/dhcp/dhclient.conf")
    text = _read(dh)
    if text and MARK in text:
        with open(dh, "w") as f:
            f.write("".join(line for line in text.splitlines(True) if MARK not in line))
        done.append("removed the NetTrust line from /etc/dhcp/dhclient.conf")
    rc = _p(root, "etc/resolv.conf")
    if os.path.lexists(rc + BACKUP) and MARK in (_read(rc) or ""):
        if os.path.islink(rc + BACKUP):
            os.unlink(rc)
            os.replace(rc + BACKUP, rc)
        else:
            with open(rc, "w") as f:
                f.write(_read(rc + BACKUP) or "")
            os.unlink(rc + BACKUP)
        done.append("restored /etc/resolv.conf")
    return done


def nameservers(root: str = "/") -> list[str]:
    return parse_nameservers(_read(_p(root, "etc/resolv.conf")) or "")


def parse_nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out


def points_at_local(root: str = "/") -> tuple[bool, str]:
    """Whether every nameserver in resolv.conf is the local resolver; and why not."""
    return judge(nameservers(root), os.path.exists(_p(root, RESOLVED_DROPIN)))


def judge(servers: list[str], resolved_forwards: bool,
          path: str = "/etc/resolv.conf") -> tuple[bool, str]:
    """Whether these nameservers (of ``path``) are all the local resolver; and why not.
    ``resolved_forwards``: systemd-resolved's stub forwards to it (our drop-in exists)."""
    if not servers:
        return False, f"{path} names no nameserver"
    for text in servers:
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return False, f"{path} names {text!r}, not an address"
        if not addr.is_loopback:
            return False, f"{path} names {text}, not the local resolver"
        if addr == RESOLVED_STUB and not resolved_forwards:
            return False, (f"{path} names systemd-resolved's stub 127.0.0.53, which does not "
                           "forward to the local resolver (no resolved.conf.d/nettrust.conf)")
    return True, f"{path} names the local resolver ({', '.join(servers)})"


def _resolv_link(root: str) -> str | None:
    try:
        return os.readlink(_p(root, "etc/resolv.conf"))
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NetTrustError(f"cannot read {path}: {exc.strerror}") from None

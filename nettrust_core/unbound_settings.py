"""Unbound settings the module cannot see in its answers, checked before it starts.

Some Unbound settings silently undo what the module guarantees: a module after ours rewrites
answers we already judged (respip, dns64, subnetcache, cachedb, ipsecmod), ``serve-expired``
hands out answers whose grants have ended, ``qname-minimisation`` caches A answers the module
never saw, ``cache-min-ttl`` above ``grants.min_ttl`` keeps
answers cached longer than their grants, ``username:`` drops the privileges the firewall writes
need.  :func:`problems` names each one and what to change; the module refuses to start on any,
``nettrust check --unbound <conf>`` reports the same list.

Values come from Unbound itself (``unbound-checkconf -o <option> <conf>``, which parses the
whole configuration with its includes and loads no module), so they are the effective ones.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from typing import TYPE_CHECKING

from .errors import NetTrustError
from .firewall.record_only import needs_net_admin
from .unbound_conf import MODULE_CONFIG, cache_max_ttl

if TYPE_CHECKING:
    from .config import Config

DEFAULT_UNBOUND_CONF = "/etc/unbound/unbound.conf"
#: What :func:`problems` needs; each is one ``unbound-checkconf -o`` call (about 5 ms).
OPTIONS = ("module-config", "serve-expired", "cache-min-ttl", "cache-max-ttl", "username",
           "control-enable", "control-interface", "qname-minimisation")
CAP_NET_ADMIN = 12
#: Module orders that work: ours first (it sees the validated answer and nothing rewrites it
#: after us), validator and iterator last.  ``respip`` may sit between: Unbound 1.17.1 refuses
#: RPZ without it, and there it rewrites answers *before* the module judges them.
ACCEPTED_MODULE_CONFIGS = (MODULE_CONFIG, "python respip validator iterator")


class SettingsError(NetTrustError):
    pass


def read_settings(conf: str, options=OPTIONS, *, checkconf: str | None = None,
                  run=subprocess.run) -> dict[str, list[str]]:
    """option -> the lines ``unbound-checkconf -o`` prints for it (a list for list options)."""
    tool = checkconf or shutil.which("unbound-checkconf") or "/usr/sbin/unbound-checkconf"
    out = {}
    for option in options:
        try:
            res = run([tool, "-o", option, conf], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SettingsError(f"cannot run {tool} to read Unbound's {option}: {exc}") from None
        if res.returncode != 0:
            why = (res.stderr or res.stdout).strip().splitlines()
            raise SettingsError(f"`unbound-checkconf -o {option} {conf}` failed: "
                                f"{why[-1] if why else 'exit ' + str(res.returncode)}")
        out[option] = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    return out


def _one(settings, option, default=""):
    values = settings.get(option) or []
    return values[0] if values else default


def problems(settings: dict[str, list[str]], config: Config) -> list[str]:
    """What in Unbound's effective settings breaks NetTrust's guarantees, each with the fix."""
    found = []
    modules = " ".join(_one(settings, "module-config").split())
    if "module-config" in settings and modules not in ACCEPTED_MODULE_CONFIGS:
        found.append(
            f'module-config is "{modules}": set module-config: "{MODULE_CONFIG}" (or "python '
            'respip validator iterator" for RPZ). The module must come first to see validated '
            "answers and be the last to touch them: respip, dns64, subnetcache, cachedb or "
            "ipsecmod before it would rewrite answers after NetTrust judged them.")
    if "serve-expired" in settings and _one(settings, "serve-expired", "no") != "no":
        found.append("serve-expired is on: set serve-expired: no. Expired answers would be served "
                     "after their grants ended (the client gets an address it cannot reach), or "
                     "be granted without a fresh check.")
    if "cache-min-ttl" in settings:
        floor = _int(_one(settings, "cache-min-ttl", "0"))
        if floor > int(config.grants.min_ttl):
            found.append(f"cache-min-ttl is {floor}: set cache-min-ttl: 0 (at most grants.min_ttl = "
                         f"{int(config.grants.min_ttl)}s). Answers would stay cached longer than "
                         "the grants their fetch made.")
    if "cache-max-ttl" in settings:
        ceiling = _int(_one(settings, "cache-max-ttl", "86400"))
        if ceiling > cache_max_ttl(config):
            found.append(f"cache-max-ttl is {ceiling}: set cache-max-ttl: {cache_max_ttl(config)} "
                         "(grants.max_ttl). Cached answers would outlive their grants.")
    if "qname-minimisation" in settings and _one(settings, "qname-minimisation", "no") != "no":
        found.append("qname-minimisation is on: set qname-minimisation: no. To resolve a name's "
                     "AAAA (and a deep name's parents) Unbound first asks their A and caches that "
                     "answer without the module seeing it: a later A query from the cache gets "
                     "an address nobody granted (measured on 1.17.1).")
    user = _one(settings, "username")
    if "username" in settings and user:
        found.append(f'username is "{user}": set username: "" and start Unbound as that user with '
                     "CAP_NET_ADMIN (conf/systemd drop-in). Unbound switches user before the "
                     "module starts and loses the capability the firewall writes need.")
    return found


def control_socket(settings: dict[str, list[str]]) -> str | None:
    """Unbound's local (unix) control socket, when remote control is on and has one."""
    if _one(settings, "control-enable", "no") != "yes":
        return None
    for iface in settings.get("control-interface") or []:
        if iface.startswith("/"):
            return iface
    return None


def conf_from_cmdline(argv: list[str]) -> str:
    """The configuration file a running Unbound was started with (``-c``), absolute."""
    conf = DEFAULT_UNBOUND_CONF
    for i, arg in enumerate(argv):
        if arg == "-c" and i + 1 < len(argv):
            conf = argv[i + 1]
        elif arg.startswith("-c") and len(arg) > 2:
            conf = arg[2:]
    if not os.path.isabs(conf):
        raise SettingsError(f"Unbound was started with a relative configuration path {conf!r}: "
                            "start it with an absolute -c path (Unbound changes directory before "
                            "the module starts, and a reload would read default settings)")
    return conf


def own_conf_path(proc="/proc/self/cmdline") -> str:
    with open(proc, "rb") as f:
        argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    return conf_from_cmdline(argv)


def privilege_problem(config: Config, euid: int, cap_eff: int) -> str | None:
    """Why this process, as it runs, cannot work: wrong user, or no CAP_NET_ADMIN.

    The ruleset lets only ``firewall.resolver_user`` reach DNS servers; an Unbound running as
    anyone else sends upstream queries that are all dropped and never answers.  Backends that
    write no kernel state (``record-only``: the grants are enforced elsewhere) build no ruleset
    and need neither; then only the lifecycle features that read the kernel need the capability.
    """
    fw = config.firewall
    if not needs_net_admin([*fw.backends, *(["namespaces"] if fw.namespaces else [])]):
        lc = config.lifecycle
        wants = [k for k, on in (("lifecycle.liveness", lc.liveness),
                                 ("lifecycle.unauthorized", lc.unauthorized),
                                 ("lifecycle.terminate_unauthorized", lc.terminate_unauthorized))
                 if on]
        if wants and not cap_eff & (1 << CAP_NET_ADMIN):
            return (f"firewall.backends = {list(fw.backends)} writes nothing to the kernel and "
                    f"needs no CAP_NET_ADMIN, but {', '.join(wants)} read the kernel's conntrack "
                    "and NFLOG, which does: set them false (nothing is filtered on this host for "
                    "them to see) or grant CAP_NET_ADMIN.")
        return None
    user = fw.resolver_user
    if user:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            return None               # ruleset_spec reports the unknown user with its line
        if euid != uid:
            try:
                actual = pwd.getpwuid(euid).pw_name
            except KeyError:
                actual = str(euid)
            return (f"Unbound runs as {actual!r} (uid {euid}) but firewall.resolver_user is "
                    f"{user!r} (uid {uid}): the ruleset lets only {user!r} reach DNS servers, so "
                    f"every upstream query would be dropped. Start Unbound as {user!r} with "
                    "CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (conf/systemd drop-in, or setpriv), "
                    f"or set firewall.resolver_user = {actual!r} in {config.path}.")
    if not cap_eff & (1 << CAP_NET_ADMIN):
        return ("Unbound holds no CAP_NET_ADMIN when the module starts, so it cannot write the "
                "firewall: if unbound.conf sets username:, Unbound dropped root before the module "
                'started; set username: "" and start it as the resolver user with CAP_NET_ADMIN '
                "(conf/systemd drop-in).")
    return None


def own_cap_eff(proc="/proc/self/status") -> int:
    with open(proc) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0

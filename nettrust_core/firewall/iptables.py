"""The iptables backends (``iptables-legacy``, ``iptables-nft``): ipset sets and chain rules.

For hosts that must stay on iptables.  Same contract and semantics as the nftables backend:

* **Control plane** (``ensure``): the sets by ``ipset restore`` (grant sets created with
  ``-exist``, so live grants survive; static sets refilled in a temporary set and swapped in),
  then the chains of :mod:`.iptables_rules` by ``iptables-restore --noflush`` and
  ``ip6tables-restore --noflush`` of the configured flavour: each family's chains are
  replaced in one table commit, the jump from OUTPUT (and FORWARD) inserted first once.
  Refuses to mix: if the *other* flavour holds our chains, or holds rules while this one holds
  none (the host uses the other), ensure raises with what to configure instead.
* **Answer path** (``grant``): hand-written ip_set netlink (:mod:`nettrust_core.netlink.ipset`,
  which says why and what was measured) on a persistent socket: one acked ``IPSET_CMD_ADD``
  per family carrying every address of the answer with its timeout (whole seconds, rounded
  up) and its name as the element comment.  ip_set has no transactions across messages: if the
  IPv6 message is refused after the IPv4 one was applied, the IPv4 addresses are deleted again
  and the grant fails (closed).  A missing set (ENOENT) rebuilds the ruleset once
  (``repairs``) and retries.
* **Never shortens**: ``lookup`` asks the kernel whether the element is present
  (``IPSET_CMD_TEST``, which reports no time) and answers the time left from this process's own
  record of what it wrote; an element present but unknown (another process, before adoption)
  is read from one listing of its set.  A flushed element is None: it is written again.
* **Restart adoption**: ``list_grants`` dumps the sets (ip_set reports the seconds left of
  each element; the timeout it was added with is not kept, so ``timeout`` = ``expires_in``).

Privileges: besides CAP_NET_ADMIN, iptables resolves ipset names over a raw socket
(CAP_NET_RAW), and iptables-legacy reads ``/proc/net/ip_tables_names`` (mode 0440) and takes
``/run/xtables.lock`` (CAP_DAC_OVERRIDE, or run Unbound as root).

The forward hook, the DNS block, DHCP/ND rules and the resolver exemption are those of the
nftables ruleset (see :mod:`.iptables_rules`).  ``status`` runs ``iptables-save`` twice (no set
counting unless asked); the periodic check calls it every ``grants.verify_interval``.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import FirewallError
from ..netlink import ipset as ips
from .base import Grant, GrantedElement, IPAddress, OnBatch, RulesetSpec, Status
from .iptables_rules import (all_grant_set_names, chain_name, chains, grant_set_names, ipset_input,
                             jumps, restore_input, static_set_names, validate)

log = logging.getLogger("nettrust.firewall")
FLAVOURS = ("legacy", "nft")
_JUMP = re.compile(r"^-A (OUTPUT|FORWARD) -j (\S+)$")


class IptablesBackend:
    """:class:`~nettrust_core.firewall.base.FirewallBackend` on iptables + ipset."""

    flavour = "legacy"

    def __init__(self, spec: RulesetSpec | None = None, *, instance: int = 0,
                 timeout: float = 5.0) -> None:
        self.spec = spec if spec is not None else RulesetSpec()
        validate(self.spec)
        if not isinstance(instance, int) or not 0 <= instance < self.spec.instances:
            raise self._error(f"instance {instance!r} is not one of 0..{self.spec.instances - 1}")
        self.instance = instance
        self.name = f"iptables-{self.flavour}"
        self.sets = grant_set_names(self.spec, instance)
        self.chain = chain_name(self.spec)
        self.repairs = 0
        self.errors = 0
        self._timeout = timeout
        self._sock: ips.IpsetSocket | None = None
        self._open_lock = threading.Lock()
        self._ctl_lock = threading.Lock()
        self._record: dict[IPAddress, float] = {}       # address -> monotonic deadline

    @classmethod
    def from_config(cls, spec: RulesetSpec, config: Any, instance: int = 0) -> IptablesBackend:
        return cls(spec, instance=instance)

    def _error(self, message: str, **fields) -> FirewallError:
        return FirewallError(message, table=self.spec.table, family=f"iptables-{self.flavour}",
                             **fields)

    def _socket(self) -> ips.IpsetSocket:
        with self._open_lock:
            if self._sock is None:
                self._sock = ips.IpsetSocket(self._timeout)
            return self._sock

    def close(self) -> None:
        with self._open_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    # -- tools -------------------------------------------------------------------------------
    def _tool(self, version: int, verb: str, flavour: str | None = None) -> str:
        name = f"{'ip' if version == 4 else 'ip6'}tables-{flavour or self.flavour}-{verb}"
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if path is None:
            raise self._error(f"{name} not found (apt-get install iptables)")
        return path

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            proc = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise self._error(f"cannot run {argv[0]}: {exc}") from None
        if proc.returncode != 0:
            err = (proc.stderr or "").strip()
            hint = ""
            if any(t in err for t in ("socket to ipset", "Permission denied", "must be root",
                                      "can't open lock file")):
                hint = (" -- the iptables backends need CAP_NET_RAW besides CAP_NET_ADMIN "
                        "(iptables-legacy also CAP_DAC_OVERRIDE), or Unbound running as root")
            raise self._error(f"{' '.join(argv)} failed: {err}{hint}")
        return proc.stdout

    def _save(self, version: int, flavour: str | None = None) -> str:
        return self._run([self._tool(version, "save", flavour), "-t", "filter"])

    # -- the answer path ---------------------------------------------------------------------
    def grant(self, grants: Sequence[Grant]) -> None:
        if not grants:
            return
        try:
            groups = self._encode(grants)
            try:
                self._write(groups)
            except FirewallError as exc:
                if exc.errno != errno_mod.ENOENT:
                    raise
                self.repairs += 1
                log.warning("ipset set missing on grant (%s); rebuilding the ruleset", exc)
                self.ensure()
                self._write(groups)
        except FirewallError:
            self.errors += 1
            raise
        now = time.monotonic()
        record = self._record
        for g in grants:
            record[g.address] = now + math.ceil(g.timeout)

    def _encode(self, grants: Sequence[Grant]) -> list[tuple[int, list[bytes], list[IPAddress]]]:
        by: dict[int, tuple[list[bytes], list[IPAddress]]] = {4: ([], []), 6: ([], [])}
        for g in grants:
            try:
                seconds = math.ceil(g.timeout)
            except (TypeError, ValueError, OverflowError):
                seconds = 0
            if seconds <= 0:
                raise self._error(f"grant timeout must be a positive number of seconds, not "
                                  f"{g.timeout!r}", address=str(g.address))
            datas, addrs = by[g.address.version]
            datas.append(ips.element_data(g.address.packed, seconds, g.comment))
            addrs.append(g.address)
        return [(v, d, a) for v, (d, a) in by.items() if d]

    def _write(self, groups: list[tuple[int, list[bytes], list[IPAddress]]]) -> None:
        sock = self._sock or self._socket()
        done: list[tuple[int, list[IPAddress]]] = []
        for version, datas, addrs in groups:
            try:
                sock.add(self.sets[version], version, datas)
            except FirewallError:
                for v, written in done:             # no half-granted answer
                    try:
                        sock.delete(self.sets[v], v, [a.packed for a in written])
                    except FirewallError as exc:
                        log.error("cannot roll back a refused ipset grant: %s", exc)
                raise
            done.append((version, addrs))

    def lookup(self, address: IPAddress) -> float | None:
        sock = self._sock or self._socket()
        if not sock.test(self.sets[address.version], address.packed):
            self._record.pop(address, None)
            return None
        deadline = self._record.get(address)
        if deadline is None:
            self._learn(address.version)
            deadline = self._record.get(address)
            if deadline is None:
                return None
        left = deadline - time.monotonic()
        return left if left > 0 else None

    def _learn(self, version: int) -> None:
        """Read one grant set into the record (its elements' seconds left)."""
        now = time.monotonic()

        def part(batch: list[ips.IpsetElement]) -> None:
            for e in batch:
                if e.timeout:
                    self._record[e.address] = now + e.timeout
        scanner = ips.IpsetSocket(self._timeout)
        try:
            scanner.scan(self.sets[version], part)
        finally:
            scanner.close()

    # -- reads -------------------------------------------------------------------------------
    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        out: list[GrantedElement] = []
        give: OnBatch = on_batch or out.extend
        sets = ([(self.instance, v, n) for v, n in self.sets.items()] if own_only
                else all_grant_set_names(self.spec))
        # ip_set reports whole seconds left, rounded down: adoption takes that (never believes
        # a grant longer than it is); people are shown when it ends at the latest (+1 s).
        slack = 0 if own_only else 1
        sock = ips.IpsetSocket(self._timeout)
        try:
            for instance, _v, name in sets:
                def part(batch: list[ips.IpsetElement], k: int = instance) -> None:
                    now = time.monotonic()
                    found = [GrantedElement(e.address, float(e.timeout + slack),
                                            float(e.timeout + slack), e.comment, k)
                             for e in batch if e.timeout]
                    if k == self.instance:
                        for g in found:
                            self._record.setdefault(g.address, now + g.expires_in)
                    give(found)
                try:
                    sock.scan(name, part)
                except FirewallError as exc:
                    if exc.errno == errno_mod.ENOENT:
                        raise self._error(f"ipset set {name} is missing", errno=exc.errno) from None
                    raise
        finally:
            sock.close()
        return out

    def _state(self, version: int) -> tuple[set[str], dict[tuple[str, str], int], list[str]]:
        """(our chains present, (built-in chain, our chain) -> jumps, rules of our main chain)."""
        text = self._save(version)
        ours = set(chains(self.spec, version)) | {self.chain, f"{self.chain}_FWD",
                                                  f"{self.chain}_LAN", f"{self.chain}_ND"}
        present = set()
        count: dict[tuple[str, str], int] = {}
        main: list[str] = []
        for line in text.splitlines():
            if line.startswith(":"):
                name = line[1:].split(" ", 1)[0]
                if name in ours:
                    present.add(name)
            m = _JUMP.match(line)
            if m and m.group(2) in ours:
                pair = (m.group(1), m.group(2))
                count[pair] = count.get(pair, 0) + 1
            if line.startswith(f"-A {self.chain} "):
                main.append(line)
        return present, count, main

    def status(self, *, count_elements: bool = True) -> Status:
        base: dict[str, Any] = {"table": self.spec.table, "family": f"iptables-{self.flavour}",
                                "repairs": self.repairs, "errors": self.errors}
        hooks: list[str] = []
        policy = "drop"
        present_all = True
        for version in (4, 6):
            present, count, main = self._state(version)
            want = jumps(self.spec)
            v_hooks = [h.lower() for h, target in want.items()
                       if count.get((h, target)) and target in present]
            if not v_hooks or not main:
                present_all = False
            if main and not re.fullmatch(rf"-A {self.chain} -j (REJECT|DROP)\b.*", main[-1]):
                policy = "accept"           # something after our last verdict: not closed
            hooks = v_hooks if version == 4 else [h for h in hooks if h in v_hooks]
        sets: dict[str, int | None] = {}
        if count_elements:
            for _k, _v, name in all_grant_set_names(self.spec):
                n = 0

                def part(batch, name=name):
                    nonlocal n
                    n += len(batch)
                try:
                    ips.IpsetSocket(self._timeout).scan(name, part)
                    sets[name] = n
                except FirewallError:
                    sets[name] = None
                    present_all = False
        else:
            sock = self._sock or self._socket()
            for version, name in self.sets.items():       # ENOENT when a set is missing
                try:
                    sock.test(name, b"\0" * (4 if version == 4 else 16))
                except FirewallError:
                    present_all = False
        if not present_all and not hooks:
            return Status(self.name, False, **base)
        return Status(self.name, present_all, hooks=tuple(hooks), priority=None,
                      policy=policy, action=self.spec.action, sets=sets, **base)

    # -- control plane -----------------------------------------------------------------------
    def _refuse_to_mix(self) -> None:
        other = "nft" if self.flavour == "legacy" else "legacy"
        try:
            texts = {v: self._save(v, other) for v in (4, 6)}
        except FirewallError:
            return                              # the other flavour is not usable here
        for v, text in texts.items():
            if f":{self.chain} " in text:
                raise self._error(
                    f"the {self.chain} chain exists in iptables-{other} ({'ip' if v == 4 else 'ip6'}"
                    f"tables-{other}-save): this host's NetTrust rules are there; configure the "
                    f'"iptables-{other}" backend, or remove them, never both')
        theirs = sum(1 for t in texts.values() for ln in t.splitlines() if ln.startswith("-A "))
        if theirs:
            mine = sum(1 for v in (4, 6) for ln in self._save(v).splitlines()
                       if ln.startswith("-A "))
            if not mine:
                raise self._error(
                    f"this host's iptables rules are in iptables-{other} ({theirs} rules) and "
                    f"none in iptables-{self.flavour}: configure the \"iptables-{other}\" backend "
                    "(mixing both makes the rules of one invisible to the other's tools)")

    def ensure(self) -> None:
        with self._ctl_lock:
            self._refuse_to_mix()
            ipset = shutil.which("ipset") or shutil.which("ipset", path="/usr/sbin:/sbin")
            if ipset is None:
                raise self._error("ipset not found (apt-get install ipset)")
            self._run([ipset, "restore"], ipset_input(self.spec))
            for version in (4, 6):
                present, count, _main = self._state(version)
                stale = tuple(sorted(present - set(chains(self.spec, version))))
                self._run([self._tool(version, "restore"), "--noflush"],
                          restore_input(self.spec, version, count, stale))

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        sock = self._socket()
        for version, name in self.sets.items():
            mine = [a.packed for a in addresses if a.version == version]
            if mine:
                sock.delete(name, version, mine)
        for a in addresses:
            self._record.pop(a, None)

    def flush_grants(self, own_only: bool = False) -> None:
        names = (list(self.sets.values()) if own_only
                 else [n for _k, _v, n in all_grant_set_names(self.spec)])
        ipset = shutil.which("ipset") or "/usr/sbin/ipset"
        for name in names:
            try:
                self._run([ipset, "flush", name])
            except FirewallError as exc:
                if "does not exist" not in str(exc):
                    raise
        self._record.clear()

    def remove(self) -> None:
        """Unhook and delete our chains, then destroy the sets (egress is open again)."""
        with self._ctl_lock:
            for version in (4, 6):
                present, count, _main = self._state(version)
                lines = ["*filter"]
                for (builtin, target), n in count.items():
                    lines += [f"-D {builtin} -j {target}"] * n
                order = sorted(present, key=lambda n: n.endswith(("_LAN", "_ND")))
                lines += [f"-F {n}" for n in order] + [f"-X {n}" for n in order]
                lines.append("COMMIT")
                self._run([self._tool(version, "restore"), "--noflush"], "\n".join(lines) + "\n")
            ipset = shutil.which("ipset") or "/usr/sbin/ipset"
            for name in [*(n for _k, _v, n in all_grant_set_names(self.spec)),
                         *static_set_names(self.spec).values()]:
                try:
                    self._run([ipset, "destroy", name])
                except FirewallError as exc:
                    if "does not exist" not in str(exc):
                        raise
            self._record.clear()


class IptablesLegacyBackend(IptablesBackend):
    flavour = "legacy"


class IptablesNftBackend(IptablesBackend):
    flavour = "nft"

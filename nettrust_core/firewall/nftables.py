"""The nftables backend: loads the ruleset of :mod:`.nftables_rules` and writes grants into its sets.

Two planes:

* The control plane (``ensure``) is one libnftables JSON transaction built as data (``nft -j -f -``
  when the Python binding is missing).  It never deletes the table or the grant sets: ``add`` of an
  existing table/set/counter is a no-op, the static sets and chains are flushed and refilled inside
  the same transaction, so the kernel switches from the old rules to the new ones at commit with no
  moment in between.  A base chain whose hook, type or priority differs from the spec is deleted
  and recreated in that same transaction (the kernel cannot change a hook's priority in place):
  the new chain is hooked while the transaction is prepared and the old one unhooked at commit,
  and a packet must pass every base chain on its hook, so the worst case is an instant of drop,
  never an open moment.  (The static sets are declared just before, see
  :func:`static_set_declarations`.)
* The answer path (``grant``) is a raw netlink batch on a persistent socket
  (:mod:`nettrust_core.netlink.nftables`, which says why it is hand-written): IPv4 and IPv6
  elements to their sets in one batch, acked.  The state reads (``list_grants``, ``status``)
  use a second socket, so a long dump never holds up an answer.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import FirewallError
from ..networks import V6_KEY, address_bytes
from ..netlink import nftables as nl, nftables_state as nft_state, wire
from .base import Grant, GrantedElement, IPAddress, OnBatch, RulesetSpec, Status
from .diagnostics import BaseChain
from .nftables_cgroup import resolver_cgroup_match
from .nftables_elements import grant_elements, set_of
from .nftables_gateway import all_client_sets, client_sets, strike_declarations
from .nftables_pairs import GatewayVerbs
from .nftables_rules import (COUNTER, FAMILY, HOOKS, STATIC_SETS, ChainState,
                             ruleset_commands, static_set_declarations)
from .nftables_sets import all_grant_sets, grant_sets, shard_totals
from .nftables_spec import validate_spec

log = logging.getLogger("nettrust.firewall")
NAME = "nftables"


def _granted(elements: list[nl.Element], version: int, instance: int) -> list[GrantedElement]:
    """Dumped elements of a grant set as GrantedElements (times in seconds)."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return [GrantedElement(make(e.key), (e.timeout_ms or 0) / 1000, (e.expiration_ms or 0) / 1000,
                           e.comment, instance) for e in elements]


# -- the backend ------------------------------------------------------------------------------------
class NftablesBackend(GatewayVerbs):
    """:class:`~nettrust_core.firewall.base.FirewallBackend` on nf_tables.

    ``repairs`` counts grants that found the ruleset missing and rebuilt it; ``errors`` counts
    grants that failed.  Thread-safe: Unbound's worker threads may call :meth:`grant` at once.
    ``instance`` is this resolver process's index among ``spec.instances``: its grants,
    lookups, adoption and revocations touch only its own sets (:func:`grant_sets`: several per
    IP version, an address's set chosen by :func:`grant_shard`); reads for people
    (``list_grants``, ``status``) and ``flush_grants`` cover every instance.
    """

    def __init__(self, spec: RulesetSpec | None = None, *, instance: int = 0,
                 timeout: float = 5.0) -> None:
        self.spec = spec if spec is not None else RulesetSpec()
        validate_spec(self.spec)
        if not isinstance(instance, int) or not 0 <= instance < self.spec.instances:
            raise self._error(f"instance {instance!r} is not one of 0..{self.spec.instances - 1} "
                              f"(firewall.instances = {self.spec.instances})")
        self.instance = instance
        self.grant_sets = grant_sets(self.spec, instance)
        self.client_sets = client_sets(instance)
        self._client_sets = self.client_sets if self.spec.per_client else None   # for the writes
        self._mac_version = 0 if self.spec.client_mac else -1   # a MAC client: either family
        self.repairs = 0
        self.errors = 0
        self._timeout = timeout
        self._hot: nl.NftablesSocket | None = None      # the answer path's socket
        self._ctl: nl.NftablesSocket | None = None      # dumps and control messages
        self._nft: Any = None                          # libnftables context, made on first ensure
        self._open_lock = threading.Lock()
        self._ctl_lock = threading.Lock()

    @classmethod
    def from_config(cls, spec: RulesetSpec, config: Any, instance: int = 0) -> NftablesBackend:
        """How :func:`nettrust_core.ruleset.make_backend` builds it (see :mod:`.registry`)."""
        return cls(spec, instance=instance)

    # -- sockets ------------------------------------------------------------------------------
    def _socket(self, which: str) -> nl.NftablesSocket:
        with self._open_lock:
            sock = getattr(self, which)
            if sock is None:
                sock = nl.NftablesSocket(self._timeout)
                setattr(self, which, sock)
            return sock

    def close(self) -> None:
        with self._open_lock:
            for which in ("_hot", "_ctl"):
                sock = getattr(self, which)
                if sock is not None:
                    sock.close()
                    setattr(self, which, None)
            self._nft = None

    def _error(self, message: str, **fields) -> FirewallError:
        return FirewallError(message, table=self.spec.table, family=FAMILY, **fields)

    # -- the answer path ----------------------------------------------------------------------
    def grant(self, grants: Sequence[Grant]) -> None:
        """Add or refresh ``grants`` (remaining life := timeout) in one acked netlink batch.

        If the kernel says the table or a set is missing, rebuild the ruleset once (counted in
        ``repairs``) and retry once; any other refusal raises FirewallError (counted in ``errors``).
        """
        if not grants:
            return
        try:
            groups = grant_elements(grants, self.grant_sets, self._client_sets, self._mac_version,
                                    self._error)
            sock = self._hot or self._socket("_hot")
            try:
                sock.write_elements(nl.NFT_MSG_NEWSETELEM, self.spec.table, groups)
                return
            except FirewallError as exc:
                if exc.errno != errno_mod.ENOENT:
                    raise
                self.repairs += 1
                log.warning("ruleset missing on grant (%s); rebuilding it", exc)
            self.ensure()
            sock.write_elements(nl.NFT_MSG_NEWSETELEM, self.spec.table, groups)
        except FirewallError:
            self.errors += 1
            raise

    # -- reads --------------------------------------------------------------------------------
    def list_grants(self, on_batch: OnBatch | None = None, *,
                    own_only: bool = False) -> list[GrantedElement]:
        """The live grants of every instance (``own_only``: this one's), from a netlink dump of
        each grant set; with ``on_batch``, handed over one dump part at a time (returns []).

        An address several instances granted appears once per instance.  Raises FirewallError
        (errno ENOENT) when the ruleset is absent.  Cost grows with the square of a set's size,
        in the kernel: a set dump restarts its walk from the first element for every 32 KiB
        part (about 1 s for 100k grants, 30-40 s for a million in one set; ``nft list set``
        takes as long).  Grants are not held up meanwhile: the dump runs on a socket of its own
        (closed afterwards, so ``on_batch`` may raise to abandon a long dump, a stopping
        resolver, without leaving its remains on a shared socket) and the kernel's dump takes
        no lock that writers need.
        """
        out: list[GrantedElement] = []
        give: OnBatch = on_batch or out.extend
        sets = ([(self.instance, v, n) for v, names in self.grant_sets.items() for n in names]
                if own_only else all_grant_sets(self.spec))
        sock = nl.NftablesSocket(self._timeout)
        try:
            for instance, v, name in sets:
                def part(batch: list[nl.Element], v: int = v, k: int = instance) -> None:
                    give(_granted(batch, v, k))
                sock.scan_elements(self.spec.table, name, part)
        finally:
            sock.close()
        return out

    def grant_columns(self) -> Iterator[tuple[int, list[int], list[float], list[str]]]:
        """This instance's grants for a restart's bulk read-back, one set at a time: its IP
        version and three columns -- address keys (:func:`~nettrust_core.networks.address_key`),
        seconds left, comments.  No object per grant (the address and GrantedElement objects of
        :meth:`list_grants` cost ~2.6 s per million); a closed generator closes its socket."""
        sock = nl.NftablesSocket(self._timeout)
        try:
            for v, names in self.grant_sets.items():
                offset = 0 if v == 4 else V6_KEY
                for name in names:
                    found: list[nl.Element] = []
                    sock.scan_elements(self.spec.table, name, found.extend)
                    if found:
                        keys, _timeouts, expirations, comments, _flags = zip(*found, strict=True)
                        yield (v, [int.from_bytes(k, "big") + offset for k in keys],
                               [(ms or 0) / 1000 for ms in expirations], list(comments))
        finally:
            sock.close()

    def _set_of(self, version: int, key: bytes) -> str:
        """This instance's set for the address packed as ``key`` (:func:`grant_set_of`, from the
        names made once, as the writes choose it)."""
        return set_of(self.grant_sets[version], key)

    def lookup(self, address: IPAddress) -> float | None:
        """Seconds left on this instance's grant of ``address``, or None: one GETSETELEM."""
        sock = self._hot or self._socket("_hot")
        key = address_bytes(address)
        e = sock.get_element(self.spec.table, self._set_of(address.version, key), key)
        if e is None or not e.expiration_ms:
            return None
        return e.expiration_ms / 1000

    def _table_flags(self) -> int | None:
        """The table's flags, or None when it does not exist."""
        return nft_state.table_flags(self._socket("_ctl"), self.spec.table)

    def _chains(self) -> dict[str, ChainState]:
        """The chains of our table (a GETCHAIN dump covers every table of the family)."""
        return {c.name: ChainState(c.hook, c.priority, None if c.policy is None else
                                   ("accept" if c.policy == 1 else "drop"), c.type)
                for c in nft_state.chains(self._socket("_ctl"), wire.NFPROTO_INET)
                if c.table == self.spec.table}

    def base_chains(self) -> list[BaseChain]:
        """Every base chain of every table and family (ours and others'), for the priority report."""
        return [BaseChain(c.family, c.table, c.name, wire.HOOK_NAMES.get(c.hook, str(c.hook)),
                          c.priority or 0, c.type or "filter",
                          "accept" if c.policy in (None, 1) else "drop")
                for c in nft_state.chains(self._socket("_ctl")) if c.hook is not None]

    def _set_size(self, name: str) -> int | None:
        """Elements in a set (interval ends not counted), None when the set is absent."""
        try:
            elems = self._socket("_ctl").dump_elements(self.spec.table, name)
        except FirewallError as exc:
            if exc.errno == errno_mod.ENOENT:
                return None
            raise
        return sum(1 for e in elems if not e.flags & nl.NFT_SET_ELEM_INTERVAL_END)

    def status(self, *, count_elements: bool = True) -> Status:
        """What the kernel has: presence, hooks, priority, policy, action, set sizes, counters.

        Counting elements dumps every set; with a million grants that takes the kernel tens of
        seconds (its set dumps restart from the first element for every 32 KiB part), so callers
        polling (the periodic check, metrics) pass ``count_elements=False``.
        """
        spec = self.spec
        base: dict[str, Any] = {"table": spec.table, "family": FAMILY,
                                "repairs": self.repairs, "errors": self.errors}
        flags = self._table_flags()
        if flags is None:
            return Status(NAME, False, **base)
        chains = {n: c for n, c in self._chains().items() if n in HOOKS and c.hook == HOOKS[n]}
        priority = policy = action = None
        if chains:
            first = next(iter(chains.values()))
            priority, policy = first.priority, first.policy
            exprs = nft_state.expression_names(self._socket("_ctl"), spec.table, next(iter(chains)))
            action = "reject" if "reject" in exprs else "drop"
        sets = (shard_totals(spec, {name: self._set_size(name) for name in (
                    *(n for _k, _v, n in all_grant_sets(spec)),
                    *(n for _k, _v, n in all_client_sets(spec)), *STATIC_SETS.values())})
                if count_elements else {})
        counter = nft_state.counter(self._socket("_ctl"), spec.table, COUNTER)
        return Status(NAME, True, dormant=bool(flags & nl.NFT_TABLE_F_DORMANT),
                      hooks=tuple(chains), chains={n: c._asdict() for n, c in chains.items()},
                      priority=priority, policy=policy, action=action, sets=sets,
                      counters={} if counter is None else {COUNTER: counter}, **base)

    # -- control plane ------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create or repair the ruleset in one transaction; live grants and drop policy stay.

        Reads the table's chains first (to decide which base chains must be recreated); if the
        transaction fails because the table changed meanwhile, reads and tries once more.
        A missing ``resolver_cgroup`` still loads the whole ruleset, with nobody exempt (the
        resolver's DNS is dropped), then raises FirewallError saying so: fail closed, loudly.
        """
        with self._ctl_lock:
            cgroup_match = cgroup_error = None
            if self.spec.resolver_cgroup and self.spec.resolver_uid is not None:
                try:
                    cgroup_match = resolver_cgroup_match(self.spec)
                except FirewallError as exc:    # fail closed: the ruleset, nobody exempt
                    cgroup_error = exc
            self._nft_run(static_set_declarations(self.spec, cgroup_match)
                          + strike_declarations(self.spec))
            for attempt in (1, 2):
                cmds = ruleset_commands(self.spec, self._chains())
                try:
                    self._nft_run(json.dumps({"nftables": cmds}), json_input=True)
                    break
                except FirewallError as exc:
                    if attempt == 2:
                        raise
                    log.info("ruleset transaction failed (%s); rereading and retrying", exc)
            flags = self._table_flags()
            if flags and flags & nl.NFT_TABLE_F_DORMANT:
                self._wake_table(flags)
            if cgroup_error is not None:
                raise cgroup_error

    def _wake_table(self, flags: int) -> None:
        """A dormant table filters nothing: clear the flag (nft's JSON cannot say this)."""
        body = (wire.attr(nl.NFTA_TABLE_NAME, wire.strz(self.spec.table))
                + wire.attr(nl.NFTA_TABLE_FLAGS, wire.be32(flags & ~nl.NFT_TABLE_F_DORMANT)))
        fails = self._socket("_ctl").transact([(nl.nft_type(nl.NFT_MSG_NEWTABLE), 0, wire.NFPROTO_INET, body)])
        if fails:
            raise self._error(f"cannot wake the dormant table: {fails[0]}",
                              errno=fails[0].errno)
        log.warning("table inet %s was dormant; woke it up", self.spec.table)

    def _nft_run(self, payload: str, json_input: bool = False) -> None:
        """Run one nft transaction (JSON or nft syntax): libnftables, else ``nft [-j] -f -``."""
        if self._nft is None:
            try:
                import nftables  # python3-nftables (Debian); optional
            except ImportError:
                self._nft = False
            else:
                self._nft = nftables.Nftables()
        if self._nft:
            self._nft.set_json_output(json_input)       # JSON output makes it read JSON input
            rc, _out, err = self._nft.cmd(payload)
        else:
            argv = [shutil.which("nft") or "/usr/sbin/nft", *(["-j"] if json_input else []), "-f", "-"]
            try:
                proc = subprocess.run(argv, input=payload, text=True, capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as exc:
                raise self._error(f"cannot run nft: {exc}") from None
            rc, err = proc.returncode, proc.stderr
        if rc != 0:
            raise self._error(f"nft refused the ruleset: {(err or '').strip() or f'exit {rc}'}")

    def revoke(self, addresses: Sequence[IPAddress]) -> None:
        """Remove grants now, in one batch; elements already gone are ignored.

        Uses DESTROYSETELEM (kernel 6.3+), which unlike DELSETELEM does not fail the whole
        batch over an element that expired meanwhile.  An address leaves its own set and the
        instance's first one, where a version before the sets were sharded wrote every grant.
        """
        by_set: dict[str, list[IPAddress]] = {}
        for a in addresses:
            own, first = self._set_of(a.version, a.packed), self.grant_sets[a.version][0]
            for name in {own, first}:
                by_set.setdefault(name, []).append(a)
        groups = [(name, [nl.element(a.packed) for a in mine], mine) for name, mine in by_set.items()]
        if groups:
            self._socket("_ctl").write_elements(nl.NFT_MSG_DESTROYSETELEM, self.spec.table, groups)

    def flush_grants(self, own_only: bool = False) -> None:
        """Empty the grant sets in one transaction; the chains (and drop policy) stay.

        Every instance's sets, or with ``own_only`` just this instance's (a resolver process
        that stops must not revoke what the others granted).  Nothing to do when the ruleset
        is absent.
        """
        names = [n for k, _v, n in (*all_grant_sets(self.spec), *all_client_sets(self.spec))
                 if not own_only or k == self.instance]
        reqs = [(nl.nft_type(nl.NFT_MSG_DELSETELEM), 0, wire.NFPROTO_INET,
                 nl.setelem_head(self.spec.table, name)) for name in names]
        fails = self._socket("_ctl").transact(reqs)
        if fails and not (fails[0].errno == errno_mod.ENOENT and self._table_flags() is None):
            f = fails[0]
            raise self._error(f"cannot flush grants: {f}",
                              errno=f.errno)

    def remove(self) -> None:
        """Delete the table (egress is open again); an absent table is not an error."""
        body = wire.attr(nl.NFTA_TABLE_NAME, wire.strz(self.spec.table))
        fails = self._socket("_ctl").transact([(nl.nft_type(nl.NFT_MSG_DELTABLE), 0, wire.NFPROTO_INET, body)])
        if fails and fails[0].errno != errno_mod.ENOENT:
            f = fails[0]
            raise self._error(f"cannot delete the table: {f}",
                              errno=f.errno)

"""Policy: which names may be asked, which answered addresses may be granted, and why.

Two questions, both pure functions of the config:

* :meth:`Policy.check_name` — before a query goes upstream: is this name allowed at all?
  Denylist mode: names matching ``deny`` are blocked unless ``allow`` excepts them.
  Allowlist mode: only names matching ``allow`` pass, and ``deny`` carves exceptions out of them.
* :meth:`Policy.judge` — when the answer is back: may its addresses be granted?  Every name of the
  CNAME chain must pass the name check; bogus DNSSEC never grants; ``require_dnssec`` zones grant
  only when secure; an upstream sinkhole (0.0.0.0, ::, configured) means "blocked"; denied
  networks, never-grantable ranges (multicast, broadcast, reserved…) and rebinding targets are
  refused address by address; an IPv6 address embedding an IPv4 one (NAT64, 6to4, Teredo…) is
  judged as the IPv4 address it reaches (see nettrust_core.networks).

Names also match the configured lists (``[[policy.lists]]``, :mod:`nettrust_core.lists`): deny
lists extend ``deny``, allow lists extend ``allow``; the rule of such a verdict names the list,
its file and line.  The canary names (:mod:`nettrust_core.lists.bypass`) are blocked first, in
either mode, unless ``policy.canary_names`` is off.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TYPE_CHECKING

from .answer import ChainTooLong, Answer, Security, Source
import ipaddress

from .lists.bypass import CANARY_NAMES, CANARY_RULE
from .lists.index import ListIndex
from .networks import (LOCAL, LOOPBACK, NEVER, SINKHOLES, AddressClasses, IPAddress, NetworkSet,
                       address_key)

if TYPE_CHECKING:
    from .config import Config


class Outcome(str, enum.Enum):
    GRANTED = "granted"            # at least one address granted
    BLOCKED = "blocked"            # the name (or a link of its chain) is blocked, or upstream sinkholed it
    NOT_GRANTED = "not_granted"    # addresses were answered but none may be granted
    NO_ADDRESS = "no_address"      # nothing to grant: NXDOMAIN, NODATA, PTR, TXT…


@dataclass(frozen=True, slots=True)
class NameCheck:
    allowed: bool
    reason: str
    rule: str | None = None
    name: str | None = None

    def __init__(self, allowed: bool, reason: str, rule: str | None = None,
                 name: str | None = None) -> None:
        """Native when compiled: see :class:`~nettrust_core.answer.Record`."""
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    rule: str | None = None
    chain: tuple[str, ...] = ()
    #: (address, record TTL) that may be granted.
    grants: tuple[tuple[IPAddress, int], ...] = ()
    #: (address, why not) for every answered address that is not granted.
    refused: tuple[tuple[IPAddress, str], ...] = ()
    #: The module must replace the answer with the configured blocked answer.
    replace_answer: bool = False

    def __init__(self, outcome: Outcome, reason: str, rule: str | None = None,
                 chain: tuple[str, ...] = (), grants: tuple[tuple[IPAddress, int], ...] = (),
                 refused: tuple[tuple[IPAddress, str], ...] = (),
                 replace_answer: bool = False) -> None:
        """Native when compiled: see :class:`~nettrust_core.answer.Record`."""
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "chain", chain)
        object.__setattr__(self, "grants", grants)
        object.__setattr__(self, "refused", refused)
        object.__setattr__(self, "replace_answer", replace_answer)


#: Verdicts on names kept between a query's NEW and its answer (more than ever in flight).
DECIDED_NAMES: Final = 4096


class Policy:
    def __init__(self, config: Config, lists: ListIndex | None = None) -> None:
        p = config.policy
        #: The lists' index; the lists watcher replaces it whole (one reference assignment).
        self.lists = lists if lists is not None else ListIndex.empty()
        self.canaries = CANARY_NAMES if getattr(p, "canary_names", False) else frozenset()
        self.allowlist = config.mode == "allowlist"
        self.allow = p.allow_set
        self.deny = p.deny_set
        self.require_dnssec = p.require_dnssec_set
        self._dnssec_zones = bool(self.require_dnssec.zones)
        self.local_zones = p.local_zones_set
        self.rebinding_guard = p.rebinding_guard
        self.rebinding_allow = p.rebinding_allow_set
        self.deny_networks = NetworkSet(p.deny_networks)
        #: name -> (the list index, its verdict): see check_name.
        self._decided: dict[str, tuple[ListIndex, NameCheck]] = {}
        # By their tracker keys (ints): an address object hashes through Python code.
        self.sinkholes = frozenset(address_key(a) for a in SINKHOLES | set(config.upstream.sinkhole_addresses))
        self.classes = AddressClasses(getattr(p, "nat64_prefixes", ()))
        r = config.reachable
        #: Already open through the static sets: granting them would only add churn.
        self.always = NetworkSet(LOOPBACK + tuple(r.effective_networks)
                                 + tuple(ipaddress.ip_network(h) for h in r.hosts))

    # -- names -----------------------------------------------------------------------------
    def name_allowed(self, name: str) -> bool:
        """:meth:`check_name`'s verdict alone (the adapter's question at NEW)."""
        return self.check_name(name).allowed

    def check_name(self, name: str) -> NameCheck:
        """The verdict on ``name``, decided once per query: the question is checked at NEW and
        again (with its CNAME targets) when the answer arrives, so the last verdicts are kept,
        each with the list index it was decided under (a swapped index decides afresh)."""
        lists = self.lists                   # read once: the watcher may swap it meanwhile
        known = self._decided.get(name)
        if known is not None and known[0] is lists:
            return known[1]
        check = self._check_name(name, lists)
        decided = self._decided
        if len(decided) >= DECIDED_NAMES:
            decided.clear()                  # amortised O(1); the in-flight names come back
        decided[name] = (lists, check)
        return check

    def _check_name(self, name: str, lists: ListIndex) -> NameCheck:
        if name in self.canaries:
            return NameCheck(False, "canary name", CANARY_RULE, name)
        if self.allowlist:
            rule = self.allow.matches(name)
            if rule is None and lists.allow.size:
                found = lists.match_allow(name)
                rule = found.rule if found is not None else None
            if rule is None:
                return NameCheck(False, "not in allowlist", None, name)
            deny = self.deny.matches(name)
            if deny is None and lists.deny.size:
                found = lists.match_deny(name)
                deny = found.rule if found is not None else None
            if deny is not None:
                return NameCheck(False, "denied", deny, name)
            return NameCheck(True, "allowed", rule, name)
        deny = self.deny.matches(name)             # written out: this runs for every name
        if deny is None and lists.deny.size:
            found = lists.match_deny(name)
            deny = found.rule if found is not None else None
        if deny is None:
            return NameCheck(True, "not denied", None, name)
        allow = self.allow.matches(name)
        if allow is None and lists.allow.size:
            found = lists.match_allow(name)
            allow = found.rule if found is not None else None
        if allow is not None:
            return NameCheck(True, "allowed (exception)", allow, name)
        return NameCheck(False, "denied", deny, name)

    # -- answers ---------------------------------------------------------------------------
    def judge(self, answer: Answer) -> Verdict:
        try:
            chain = answer.chain()
        except ChainTooLong as exc:
            return Verdict(Outcome.NOT_GRANTED, str(exc), replace_answer=False)
        first_rule = None
        for name in chain:
            check = self.check_name(name)
            if name is chain[0]:
                first_rule = check.rule          # the allow rule that admitted the name, if any
            if not check.allowed:
                reason = check.reason if name == answer.qname else f"CNAME target {name} {check.reason}"
                return Verdict(Outcome.BLOCKED, reason, check.rule, chain, replace_answer=True)

        addresses = answer.addresses(chain[-1])
        if not addresses:
            return Verdict(Outcome.NO_ADDRESS, "no address in answer", None, chain)

        sinkholes = self.sinkholes
        for addr, _ in addresses:
            if address_key(addr) in sinkholes:
                return Verdict(Outcome.BLOCKED, "sinkhole answer from upstream", None, chain,
                               refused=tuple((a, "sinkhole") for a, _ in addresses))

        if answer.security == Security.BOGUS:
            return _refuse_all(addresses, chain, "DNSSEC bogus")
        if answer.source is not Source.LOCAL:
            zone = self._dnssec_zone(chain)
            if zone is not None and answer.security != Security.SECURE:
                return _refuse_all(addresses, chain,
                                   f"DNSSEC required under {zone}, answer is {answer.security.name.lower()}",
                                   rule=zone)

        grants, refused = [], []
        for addr, ttl in _longest_ttl_each(addresses):
            why = self._refuse_address(addr, chain, answer.source)
            if why is not None:
                refused.append((addr, why))
            elif self.always.match(addr) is None:
                grants.append((addr, ttl))
        if not grants and not refused:
            return Verdict(Outcome.NO_ADDRESS, "always reachable", None, chain)
        if not grants:
            return Verdict(Outcome.NOT_GRANTED, refused[0][1], None, chain, refused=tuple(refused))
        return Verdict(Outcome.GRANTED, "answered", first_rule, chain, tuple(grants),
                       tuple(refused))

    def _dnssec_zone(self, chain: tuple[str, ...]) -> str | None:
        if not self._dnssec_zones:
            return None
        for name in chain:
            zone = self.require_dnssec.matches(name)
            if zone is not None:
                return zone
        return None

    def _refuse_address(self, addr: IPAddress, chain: tuple[str, ...], source: Source) -> str | None:
        net = self.deny_networks.match(addr)
        if net is not None:
            return f"denied network {net}"
        kind, why = self.classes.classify(addr)
        if kind is NEVER:
            return f"never granted: {why}"
        if self.deny_networks:
            for inner in self.classes.embedded(addr):
                net = self.deny_networks.match(inner)
                if net is not None:
                    return f"denied network {net} (reached through {addr})"
        if kind is LOCAL and self.rebinding_guard and source is not Source.LOCAL \
                and not self._may_rebind(chain):
            return f"rebinding guard: public name answered {why}"
        return None

    def _may_rebind(self, chain: tuple[str, ...]) -> bool:
        final = chain[-1]
        return (self.local_zones.matches(final) is not None
                or self.rebinding_allow.matches(final) is not None
                or self.rebinding_allow.matches(chain[0]) is not None)


def _longest_ttl_each(addresses):
    """One (address, TTL) per address, the longest: an answer naming an address twice with
    different TTLs must not write the shorter one after the longer in the same batch (the
    kernel keeps the last timeout written, so that would shorten the grant)."""
    if len(addresses) < 2:
        return addresses
    best: dict = {}
    for addr, ttl in addresses:
        if ttl > best.get(addr, -1):
            best[addr] = ttl
    return list(best.items()) if len(best) != len(addresses) or any(
        best[a] != t for a, t in addresses) else addresses


def _refuse_all(addresses, chain, reason: str, rule: str | None = None) -> Verdict:
    return Verdict(Outcome.NOT_GRANTED, reason, rule, chain,
                   refused=tuple((a, reason) for a, _ in addresses))

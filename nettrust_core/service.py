"""What the Unbound adapter drives: config, logging, backend and authorizer, wired once.

The adapter calls :meth:`Service.start` from ``init_standard`` and :meth:`Service.stop` from
``deinit``; between them it only translates answers and calls :meth:`authorize`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .answer import PTR, Answer
from .authorizer import Authorizer, Decision
from .cache_invalidation import NoInvalidation, UnboundControlInvalidator
from .config import load_config
from .errors import ConfigError
from .fleet.master import fleet_for
from .lifecycle.supervisor import Lifecycle
from .lists import ListWatcher, loader_for
from .lists.bypass import is_canary
from .lists.enforce import revoke_newly_denied
from .lists.watcher import publish
from .local_names import LocalNames
from .policy import NameCheck
from .report import Reporter
from .resolv_guard import ResolvGuard
from .responses import BlockedResponse, blocked_response
from .reverse import Confirmer, resolver_lookup
from .ruleset import instance_from_env, make_backend
from .unbound_conf import cache_max_ttl
from .unbound_totals import UnboundTotals
from .unbound_settings import control_socket, privilege_problem, problems, read_settings
from .worker import Worker

if TYPE_CHECKING:
    from .config import Config
    from .firewall.base import FirewallBackend
    from .lifecycle.conntrack import Conntrack

DEFAULT_CONFIG = "/etc/nettrust/nettrust.toml"
log = logging.getLogger("nettrust")


def config_path() -> str:
    return os.environ.get("NETTRUST_CONFIG") or DEFAULT_CONFIG


class Service:
    """``backend`` and ``conntrack`` default to the kernel's; tests inject fakes there."""

    def __init__(self, config: Config, backend: FirewallBackend | None = None, *,
                 conntrack: Conntrack | None = None) -> None:
        self.config = config
        #: Which of the firewall.instances resolver processes this is ($NETTRUST_INSTANCE).
        self.instance = instance_from_env(config)
        self.backend = backend if backend is not None else make_backend(config, self.instance)
        #: The one channel to the agent (decisions, events, counters); inert when stats are off.
        self.reporter = Reporter(config.stats.report_socket if config.stats.enabled else None)
        #: Removes names from Unbound's cache when grants are revoked early (eviction, caps,
        #: flush); it learns Unbound's control socket in start(), does nothing until then.
        self.invalidator = _Invalidator()
        self.authorizer = Authorizer(config, self.backend, reporter=self.reporter,
                                     invalidator=self.invalidator)
        #: [[policy.lists]]: read in start() (a deny list must hold from the first answer),
        #: then kept current by a watcher thread until stop().
        self.lists: ListWatcher | None = None
        #: Liveness renewals, refused-attempt events, counters: threads between start and stop.
        self.lifecycle = Lifecycle(config, self.authorizer, self.reporter, conntrack=conntrack)
        #: [fleet]: the master's publisher and hold, the shared tracker (None: standalone).
        self.fleet = fleet_for(config, self.authorizer)
        self.blocked_kind = config.policy.blocked_answer
        #: Names the administrator declared in Unbound's local-data (read in start()): only
        #: their local answers are Source.LOCAL; RPZ and auth-zone answers are judged in full.
        self.local_names = LocalNames()
        #: ptr.confirm: PTR answers go to this thread, which grants what forward DNS confirms.
        self.confirmer: Confirmer | None = None
        if config.ptr.confirm:
            self.confirmer = Confirmer(self.authorizer, resolver_lookup(config.ptr.resolver),
                                       max_names=config.ptr.max_names)
        # What the adapter calls on every query and answer, bound once: compiled methods where
        # nothing else is to be done (an interpreted call fewer each, measured with
        # bench/answer_path.py --callgrind).
        #: The name check alone (nothing counted or reported): an allowed name needs nothing
        #: more at query time, so the adapter reads the client only for a blocked one.
        self.name_allowed = self.authorizer.policy.name_allowed
        #: Judge and grant an answer (``Authorizer.authorize``), and with ptr.confirm hand PTR
        #: answers to the confirmer too.
        self.authorize_answer = self.authorize if self.confirmer is not None else self.authorizer.authorize
        #: Gateway mode: grants per client, cache hits included (the adapter's callback).
        self.per_client: bool = self.authorizer.per_client
        #: [resolv_conf] watch: alerts (and reverts) when the host stops using this resolver.
        self.resolv_guard = (ResolvGuard(config.resolv_conf, reporter=self.reporter,
                                         counters=self.authorizer.counters)
                             if config.resolv_conf.watch else None)

    @classmethod
    def from_file(cls, path: str | None = None) -> "Service":
        return cls(load_config(path or config_path()))

    def start(self, *, unbound_cache_max_ttl: int | None = None, unbound_conf: str | None = None,
              module_config: str | None = None, euid: int | None = None,
              cap_eff: int | None = None) -> None:
        """Check that this Unbound can do its job, then build the ruleset; live grants are
        adopted in the background (answers are exact meanwhile: see nettrust_core.lifecycle.adoption).

        The adapter passes what it knows of the running Unbound: its effective cache-max-ttl
        and module-config, its configuration file (read again with ``unbound-checkconf -o``
        for the settings pythonmod does not expose), its effective uid and capabilities.
        Any problem refuses the start with a message that says what to change.
        """
        file = self.config.path
        if euid is not None:
            why = privilege_problem(self.config, euid, cap_eff if cap_eff is not None else ~0)
            if why:
                raise ConfigError(why, key="firewall.resolver_user", file=file)
        if module_config is not None:
            found = problems({"module-config": [module_config]}, self.config)
            if found:
                raise ConfigError(found[0], file=file)
        if unbound_conf is not None:
            settings = read_settings(unbound_conf)
            found = problems(settings, self.config)
            if found:
                raise ConfigError(f"{unbound_conf}: " + " ".join(found), file=file)
            self.local_names = LocalNames.from_conf_file(unbound_conf)
            path = control_socket(settings)
            if path:
                self.invalidator.use(UnboundControlInvalidator(path))
                log.info("cache invalidation via %s", path)
                if self.reporter.enabled:
                    self.lifecycle.unbound_totals = UnboundTotals(path)
            else:
                log.warning("%s has no local control socket (remote-control: control-enable: yes, "
                            "control-interface: /run/...): answers whose grants are revoked early "
                            "stay in Unbound's cache until their TTL ends", unbound_conf)
        limit = cache_max_ttl(self.config)
        if unbound_cache_max_ttl is not None and unbound_cache_max_ttl > limit:
            raise ConfigError(
                f"Unbound's cache-max-ttl is {unbound_cache_max_ttl}s but grants last at most "
                f"{limit}s (+grace): cached answers would outlive their grants. Set cache-max-ttl: "
                f"{limit} (the include from `nettrust unbound-conf` does).",
                file=self.config.path, key="grants.max_ttl")
        self.lists = self._load_lists()
        self.invalidator.start()
        if self.fleet is not None:
            self.fleet.start()
        self.authorizer.start()
        self.lifecycle.start()
        if self.lists is not None:
            self.lists.start()
        if self.confirmer is not None:
            self.confirmer.start()
        if self.resolv_guard is not None:
            self.resolv_guard.start()

    def _load_lists(self) -> ListWatcher | None:
        loader = loader_for(self.config)
        if not loader.specs:
            return None
        policy, counters = self.authorizer.policy, self.authorizer.counters
        index, reports = loader.load()
        policy.lists = index
        publish(reports, counters, index)
        log.info("lists loaded: %d entries from %d file(s)", len(index), len(reports))

        def swap(new) -> None:
            policy.lists = new                     # one reference: atomic for the answer path
            revoke_newly_denied(self.authorizer)
            self.lifecycle.policy_changed()        # connections the new lists no longer allow

        return ListWatcher(loader, swap, counters, self.config.policy.lists_check_interval)

    def stop(self) -> None:
        """Unbound's ``deinit``: stop and join every background thread, then leave the firewall
        as ``firewall.on_exit`` says."""
        try:
            if self.confirmer is not None:
                self.confirmer.stop()
            if self.resolv_guard is not None:
                self.resolv_guard.stop()
            if self.lists is not None:
                self.lists.stop()
            self.lifecycle.stop()
            self.authorizer.stop()
            if self.fleet is not None:
                self.fleet.stop()           # after the last answer: the queues drain
        finally:
            self.invalidator.stop()
            self.reporter.close()
            running = [w.name for w in self.workers() if w.alive]
            if running:
                log.error("background threads still running after stop: %s", ", ".join(running))

    def workers(self) -> list[Worker]:
        """The background threads of this resolver process (started or not)."""
        out = self.lifecycle.workers()
        if self.authorizer.adoption is not None:
            out.append(self.authorizer.adoption)
        if isinstance(self.invalidator.target, Worker):
            out.append(self.invalidator.target)
        if self.lists is not None:
            out.append(self.lists)
        if self.confirmer is not None:
            out.append(self.confirmer)
        if self.resolv_guard is not None:
            out.append(self.resolv_guard)
        if self.fleet is not None:
            out += self.fleet.workers()
        return out

    def check_query(self, qname: str, client: str | None = None, qtype: int = 0) -> NameCheck:
        return self.authorizer.check_query(qname, client, qtype)

    def blocked_response(self, qname: str, qtype: int) -> BlockedResponse:
        # Canary names must be NXDOMAIN: an address answer would not switch a browser's DoH off.
        kind = "nxdomain" if is_canary(qname) else self.blocked_kind
        return blocked_response(kind, qname, qtype)

    def authorize(self, answer: Answer, clients=None) -> Decision:
        decision = self.authorizer.authorize(answer, clients)
        if answer.qtype == PTR and self.confirmer is not None:
            self.confirmer.submit(answer)          # a queue put: never waits
        return decision

    def offence(self, client: str | None, why: str) -> None:
        """A blocked or invalid query of ``client`` (gateway strikes; nothing when off)."""
        if self.authorizer.strikes is not None:
            self.authorizer.strikes.offence(client, why)

    def hit_known(self, key: tuple, now: int) -> bool:
        return self.authorizer.gateway.hit_known(key, now)

    def hit_done(self, key: tuple) -> None:
        self.authorizer.gateway.hit_done(key)

    def cache_hit_granted(self, client: str, addresses) -> bool:
        return self.authorizer.cache_hit_granted(client, addresses)


class _Invalidator:
    """The Service's one invalidator: forwards to the real one once start() knows Unbound's
    control socket (a :class:`NoInvalidation` until then, and for tools without a resolver)."""

    def __init__(self) -> None:
        self.target = NoInvalidation()

    def use(self, target) -> None:
        self.target = target

    def invalidate(self, names) -> None:
        self.target.invalidate(names)

    def start(self) -> None:
        self.target.start()

    def stop(self) -> None:
        self.target.stop()

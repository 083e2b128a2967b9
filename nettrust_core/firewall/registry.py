"""Firewall backends by name, imported only when asked for.

``firewall.backends`` names them; :func:`backend_class` imports the one named and nothing else
(a host without python3-nftables can still run a configuration that does not use it).  An
unknown name, or one whose module cannot be imported here, fails loudly with the valid names:
a requested backend never silently becomes another.

A backend class provides ``from_config(spec, config, instance) -> FirewallBackend`` (the
:class:`~.base.RulesetSpec` is made from the configuration once, for every backend).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, cast

from ..errors import FirewallError
from .base import FirewallBackend, RulesetSpec

#: name -> "module:Class" (module relative to this package).  ``recording`` is the fake of
#: :mod:`.recording`, for integration tests (it programs nothing); ``record-only``
#: (:mod:`.record_only`) programs nothing either, for real: its grants are enforced elsewhere.
BACKENDS: Mapping[str, str] = {
    "nftables": "nftables:NftablesBackend",
    "recording": "recording:RecordingBackend",
    "record-only": "record_only:RecordOnlyBackend",
    "namespaces": "namespaces:NamespacesBackend",
    "iptables-legacy": "iptables:IptablesLegacyBackend",
    "iptables-nft": "iptables:IptablesNftBackend",
    "ebpf": "ebpf:EbpfBackend",
}


class BackendClass(Protocol):
    """What a registered class provides: how to build it from the configuration."""

    def from_config(self, spec: RulesetSpec, config: Any, instance: int = 0) -> FirewallBackend:
        ...


class UnknownBackend(FirewallError):
    """No backend of that name, or it cannot be loaded on this host."""


def names(registry: Mapping[str, str] = BACKENDS) -> tuple[str, ...]:
    return tuple(registry)


def backend_class(name: str, registry: Mapping[str, str] = BACKENDS) -> BackendClass:
    """The class registered as ``name``, imported now; raises :class:`UnknownBackend`."""
    valid = ", ".join(registry)
    target = registry.get(name)
    if target is None:
        raise UnknownBackend(f"unknown firewall backend {name!r}; valid: {valid}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(f".{module_name}", __package__)
        return cast(BackendClass, getattr(module, attr))
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"firewall backend {name!r} is not available on this host "
                             f"({type(exc).__name__}: {exc}); valid names: {valid} -- install "
                             f"what it needs or configure another") from None

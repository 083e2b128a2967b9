"""The versioned configuration document a master publishes and followers fetch.

It carries what followers enforce from the master's configuration: the mode and name policy,
the networks never granted, the always-reachable hosts and networks, and a digest of the lists
(``[[policy.lists]]``: names, paths, sizes and modification times, so a changed list is a new
version without shipping the list).  Stored as one JSON value::

    {"version": 3, "digest": "<sha256 of body>", "body": {...}}

A master publishes at start (and ``nettrust fleet publish-config`` at any time): a body equal
to the stored one keeps the version; a different one gets version + 1 and is announced on the
stream.  A follower refuses a document it cannot validate (:class:`BadDocument`) and keeps the
last good one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config.model import MODES
from ..config.values import address, network
from ..errors import NetTrustError
from ..firewall.base import IPAddress, IPNetwork
from ..patterns import normalize_pattern
from .entries import announcement

if TYPE_CHECKING:
    from ..config import Config
    from .keys import Keys

#: Largest document accepted (bytes).
MAX_DOCUMENT = 4 << 20


class BadDocument(NetTrustError):
    """A configuration document that does not validate."""


@dataclass(frozen=True)
class Document:
    version: int
    digest: str
    mode: str
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    deny_networks: tuple[IPNetwork, ...]
    reachable_hosts: tuple[IPAddress, ...]
    reachable_networks: tuple[IPNetwork, ...]
    lists_digest: str

    def denies(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self.deny_networks)


def _lists_digest(config: Config) -> str:
    h = hashlib.sha256()
    for spec in config.policy.lists:
        try:
            st = os.stat(spec.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{spec.name}\0{spec.path}\0{spec.format}\0{spec.action}\0{stamp}\n".encode())
    return h.hexdigest()


def body_of(config: Config) -> dict[str, Any]:
    p, r = config.policy, config.reachable
    return {"mode": config.mode, "allow": list(p.allow), "deny": list(p.deny),
            "deny_networks": [str(n) for n in p.deny_networks],
            "reachable": {"hosts": [str(a) for a in r.hosts],
                          "networks": [str(n) for n in r.networks]},
            "lists_digest": _lists_digest(config)}


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def publish(client: Any, keys: Keys, config: Config) -> int:
    """Store this configuration's document; its version (unchanged when the body is)."""
    body = body_of(config)
    digest = _digest(body)
    import redis
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.config)
                raw = pipe.get(keys.config)
                version = 0
                if raw:
                    try:
                        old = json.loads(raw)
                        version = int(old.get("version", 0))
                        if old.get("digest") == digest:
                            pipe.unwatch()
                            return version
                    except (ValueError, AttributeError, TypeError):
                        pass                    # a broken document is replaced
                version += 1
                pipe.multi()
                pipe.set(keys.config, json.dumps({"version": version, "digest": digest,
                                                  "body": body}, sort_keys=True))
                pipe.xadd(keys.stream, announcement(version))
                pipe.execute()
                return version
            except redis.WatchError:
                continue


def _list(body: dict, key: str, convert) -> tuple:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadDocument(f"{key} is not a list of strings")
    try:
        return tuple(convert(v) for v in value)
    except ValueError as exc:
        raise BadDocument(f"{key}: {exc}") from None


def validate(raw: bytes | str | None) -> Document:
    """The document in ``raw``, or :class:`BadDocument` saying why not."""
    if raw is None:
        raise BadDocument("no configuration document published yet")
    if len(raw) > MAX_DOCUMENT:
        raise BadDocument(f"document of {len(raw)} bytes is larger than {MAX_DOCUMENT}")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BadDocument(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict):
        raise BadDocument("not a configuration document (no body)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadDocument(f"version {version!r} is not a positive integer")
    body = doc["body"]
    if doc.get("digest") != _digest(body):
        raise BadDocument("digest does not match the body")
    if body.get("mode") not in MODES:
        raise BadDocument(f"mode {body.get('mode')!r} is not one of {', '.join(MODES)}")
    reachable = body.get("reachable", {})
    if not isinstance(reachable, dict):
        raise BadDocument("reachable is not a table")
    lists_digest = body.get("lists_digest", "")
    if not isinstance(lists_digest, str):
        raise BadDocument("lists_digest is not a string")
    return Document(version, doc["digest"], body["mode"], _list(body, "allow", normalize_pattern),
                    _list(body, "deny", normalize_pattern),
                    _list(body, "deny_networks", network), _list(reachable, "hosts", address),
                    _list(reachable, "networks", network), lists_digest)

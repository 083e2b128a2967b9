"""One stream entry: an answer's grants (``k = g``) or a config announcement (``k = c``).

Fields are short ASCII strings.  A grant entry::

    k=g  a="198.51.100.7 2001:db8::7"  e="1765000000.250 1765000000.250"
    n=<name>  c=<client>  o=<origin master>  s=<sequence of that master>  h=<follower to ack>
    t=<wall clock when the master wrote it>

Whatever is read back is checked (:func:`decode`): an entry that does not parse is refused
with :class:`BadEntry` (the follower counts and skips it), never half-applied.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from ..errors import NetTrustError
from ..firewall.base import IPAddress

#: At most this many addresses per entry (one answer's grants are far fewer).
MAX_ADDRESSES = 1024


class BadEntry(NetTrustError):
    """A stream entry that cannot be applied."""


@dataclass(frozen=True, slots=True)
class GrantEntry:
    addresses: tuple[IPAddress, ...]
    expires: tuple[float, ...]          # wall clock, one per address
    name: str = ""
    client: str = ""
    origin: str = ""
    seq: int = 0
    ack_by: str = ""                    # the follower the origin waits for ("" nobody)
    sent: float = 0.0


@dataclass(frozen=True, slots=True)
class ConfigAnnouncement:
    version: int


def encode(entry: GrantEntry) -> dict[str, str]:
    return {"k": "g", "a": " ".join(map(str, entry.addresses)),
            "e": " ".join(f"{t:.3f}" for t in entry.expires), "n": entry.name,
            "c": entry.client, "o": entry.origin, "s": str(entry.seq), "h": entry.ack_by,
            "t": f"{entry.sent:.6f}"}


def announcement(version: int) -> dict[str, str]:
    return {"k": "c", "v": str(version)}


def _text(fields: dict, key: str) -> str:
    value = fields.get(key.encode(), fields.get(key, b""))
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise BadEntry(f"field {key!r} is not ASCII") from None
    return str(value)


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadEntry(f"{what} {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise BadEntry(f"{what} is not finite")
    return value


def decode(fields: dict) -> GrantEntry | ConfigAnnouncement:
    kind = _text(fields, "k")
    if kind == "c":
        try:
            return ConfigAnnouncement(int(_text(fields, "v")))
        except ValueError:
            raise BadEntry("config announcement without a version") from None
    if kind != "g":
        raise BadEntry(f"unknown entry kind {kind[:10]!r}")
    texts = _text(fields, "a").split()
    times = _text(fields, "e").split()
    if not texts or len(texts) != len(times) or len(texts) > MAX_ADDRESSES:
        raise BadEntry(f"{len(texts)} addresses, {len(times)} expiries")
    try:
        addresses = tuple(ipaddress.ip_address(a) for a in texts)
    except ValueError as exc:
        raise BadEntry(str(exc)) from None
    try:
        seq = int(_text(fields, "s") or 0)
    except ValueError:
        raise BadEntry("sequence is not an integer") from None
    return GrantEntry(addresses, tuple(_float(t, "expiry") for t in times),
                      _text(fields, "n")[:255], _text(fields, "c")[:64], _text(fields, "o")[:64],
                      seq, _text(fields, "h")[:64], _float(_text(fields, "t") or "0", "time"))

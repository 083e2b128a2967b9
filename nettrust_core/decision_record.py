"""The decision record in a fixed binary layout: what the answer path sends the agent per answer.

JSON costs the answer path ~11 µs per record (the dictionary, the encoder, two float reprs);
this layout ~3.5 µs (measured side by side, same process).  The agent turns it back into the
very dictionary the JSON record would have given (:func:`decode`), so everything behind the
socket is unchanged; every other record (events, counters, a query blocked at NEW) stays JSON.
A record this layout cannot hold (a string over 64 KiB, an unknown outcome) is sent as JSON.

Layout (little endian): the magic ``b"\\x00D1"`` (JSON never starts with a NUL byte), then
``ts`` (f64), ``qtype`` (u16), ``rcode``, ``outcome``, ``security``, ``source`` (u8 each, the
last three indexes into the tables below), ``written`` (u16), ``write_s`` (f64); then the
strings ``client``, ``qname``, ``reason``, ``rule``, ``error`` (u16 length + UTF-8, length
0xFFFF: None); the chain (u8 count, then strings); the grants (u16 count, then per grant u8
address length 4 or 16, the address, the timeout f64).

The record's cost on the answer path (``bench/answer_path.py --callgrind``, one-address answers,
statistics on minus off): 21,700 instructions with the addresses' bytes read through
``ipaddress``'s properties, the strings encoded with an error handler (a codec lookup each) and
the source's text found through its enum's hash (a Python frame); 16,200 reading them as here.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING, Final, Sequence

from .errors import NetTrustError
from .networks import address_bytes

if TYPE_CHECKING:
    from .firewall.base import Grant

MAGIC: Final = b"\x00D1"
OUTCOMES = ("granted", "blocked", "not_granted", "no_address")
SECURITIES = {0: "unchecked", 1: "bogus", 2: "indeterminate", 3: "insecure", 5: "secure"}
SOURCES = ("resolved", "cache", "local")
_OUTCOME_INDEX = {v: i for i, v in enumerate(OUTCOMES)}
_SOURCE_INDEX = {v: i for i, v in enumerate(SOURCES)}

_HEAD = struct.Struct("<3sdHBBBBHd")
_LEN = struct.Struct("<H")
_F64 = struct.Struct("<d")
_GRANT = {4: struct.Struct("<B4sd"), 16: struct.Struct("<B16sd")}
_NONE: Final = b"\xff\xff"
_MAX_STR: Final = 0xFFFE
#: Encoded strings that repeat from record to record (clients, reasons, rules), by their text.
_SEEN: dict[str, bytes] = {}
_SEEN_MAX: Final = 4096


class RecordError(NetTrustError, ValueError):
    """A binary decision record that is malformed, or a value the layout cannot hold."""


def _text(value: str | None) -> bytes:
    if value is None:
        return _NONE
    try:
        data = value.encode()       # strict UTF-8: no codec lookup (an error handler costs one)
    except UnicodeEncodeError:      # a lone surrogate: sent replaced, as JSON would fail to
        data = value.encode("utf-8", "replace")
    if len(data) > _MAX_STR:
        raise RecordError("string too long for the binary decision record")
    return _LEN.pack(len(data)) + data


def _repeated(value: str | None) -> bytes:
    """:func:`_text` of a value met again and again: one dictionary look-up once seen."""
    if value is None:
        return _NONE
    data = _SEEN.get(value)
    if data is None:
        data = _text(value)
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[value] = data
    return data


def encode(*, ts: float, client: str | None, qname: str, qtype: int, rcode: int, outcome: str,
           reason: str, rule: str | None, security: int, source: str, chain: Sequence[str],
           grants: Sequence[Grant], written: int, write_s: float,
           error: str | None) -> bytes | None:
    """The record, or None when this layout cannot hold it (send it as JSON then).

    ``security``: Unbound's number (:class:`nettrust_core.answer.Security`); ``grants``: their
    addresses and timeouts in seconds are recorded.
    """
    try:
        name = _text(qname)
        parts = [_HEAD.pack(MAGIC, ts, qtype, rcode, _OUTCOME_INDEX[outcome],
                            security if security in SECURITIES else 255,
                            _SOURCE_INDEX[source], written, write_s),
                 _repeated(client), name, _repeated(reason), _repeated(rule), _text(error)]
        if len(chain) == 1 and chain[0] == qname:       # no CNAME: the chain is the name
            parts.append(b"\x01" + name)
        else:
            parts.append(bytes((len(chain),)))
            parts.extend([_text(link) for link in chain])
        parts.append(_LEN.pack(len(grants)))
        for g in grants:
            packed = address_bytes(g.address)
            parts.append(_GRANT[len(packed)].pack(len(packed), packed, g.timeout))
    except (KeyError, ValueError, TypeError, OverflowError, AttributeError, struct.error):
        return None
    return b"".join(parts)


def decode(data: bytes) -> dict:
    """The dictionary the JSON form of this record would give.  RecordError when malformed."""
    if not data.startswith(MAGIC):
        raise RecordError("not a binary decision record")
    try:
        (_magic, ts, qtype, rcode, outcome, security, source, written,
         write_s) = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size

        def text() -> str | None:
            nonlocal pos
            (n,) = _LEN.unpack_from(data, pos)
            pos += 2
            if n == 0xFFFF:
                return None
            if pos + n > len(data):
                raise RecordError("truncated string")
            value = data[pos:pos + n].decode("utf-8", "replace")
            pos += n
            return value

        client, qname, reason, rule, error = text(), text(), text(), text(), text()
        links = data[pos]
        pos += 1
        chain = [text() for _ in range(links)]
        (count,) = _LEN.unpack_from(data, pos)
        pos += 2
        grants = []
        for _ in range(count):
            size = data[pos]
            if size not in (4, 16) or pos + 1 + size + 8 > len(data):
                raise RecordError("bad grant")
            address = ipaddress.ip_address(data[pos + 1:pos + 1 + size])
            (timeout,) = _F64.unpack_from(data, pos + 1 + size)
            grants.append([str(address), timeout])
            pos += 1 + size + 8
        if pos != len(data):
            raise RecordError(f"{len(data) - pos} bytes after the record")
        return {"t": "decision", "client": client, "qname": qname, "qtype": qtype, "rcode": rcode,
                "outcome": OUTCOMES[outcome], "reason": reason, "rule": rule,
                "security": SECURITIES.get(security, "bogus"), "source": SOURCES[source],
                "chain": chain, "grants": grants, "written": written, "write_s": write_s,
                "error": error, "ts": ts}
    except (struct.error, IndexError) as exc:
        raise RecordError(f"malformed binary decision record: {exc}") from None

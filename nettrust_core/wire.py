"""Domain names from DNS wire bytes, exactly, into the text form the policy matches.

Unbound's own text conversion (``dnameAsStr``, ``qname_str``) is lossy: it turns a 255-byte
name's last label into ``&`` and bytes that are not letters, digits or ``-`` into ``?``, so a
name under a denied zone could be read as some other name.  The adapter therefore decodes every
name it hands the core (query name, owners, CNAME/DNAME targets) from the wire bytes Unbound
holds (``qinfo.qname``, ``rk.dname``, rdata) with :func:`decode_name`.

A name is accepted only when its text form is exact and unambiguous: every label 1..63 bytes of
letters, digits, ``-`` and ``_`` (what a pattern can name; letters are lower-cased), the whole
name at most 255 bytes on the wire, no compression pointer, nothing after the root label.
Anything else (a label holding a dot, a space, a byte above 0x7f, a truncated or over-long
name) raises :class:`WireNameError`, and the adapter fails the query closed (SERVFAIL).
"""

from __future__ import annotations

from typing import Final

import re

from .errors import NetTrustError

#: RFC 1035: a name is at most 255 octets on the wire, a label at most 63.
MAX_WIRE_NAME: Final = 255
MAX_LABEL: Final = 63

_LABEL_BYTES = re.compile(rb"[a-z0-9_-]+")


class WireNameError(NetTrustError, ValueError):
    """A wire-format name that is malformed or has no exact text form here."""


def decode_name(wire: object) -> str:
    """``b"\\x03www\\x07example\\x03com\\x00"`` -> ``"www.example.com"`` (root: ``""``).

    ``wire`` must hold exactly one uncompressed name, ending with the root label; anything else
    (not bytes: annotated ``object`` so the compiled module refuses it the same way) raises.

    On the answer path: the labels are cut from the lower-cased wire (length bytes are at most
    63, below any letter, so lower-casing leaves them alone) and checked with one match over the
    joined name; a name that fails is decoded again by :func:`_decode_name_checked`, whose
    error says which label is wrong.
    """
    if not isinstance(wire, bytes):
        return _decode_name_checked(wire)
    end = len(wire)
    if end == 0 or end > MAX_WIRE_NAME:
        return _decode_name_checked(wire)
    low = wire.lower()
    labels = []
    pos = 0
    while pos < end:
        length = low[pos]
        if length == 0 or length > MAX_LABEL:
            break
        start = pos + 1
        pos = start + length
        labels.append(low[start:pos])
    text = b".".join(labels)
    if (pos + 1 == end and low[pos] == 0 and _NAME_BYTES.fullmatch(text)
            and text.count(b".") == len(labels) - (1 if labels else 0)):
        return text.decode("ascii")
    return _decode_name_checked(wire)


#: A whole name's allowed bytes (each label's are :data:`_LABEL_BYTES`; dots only between them).
_NAME_BYTES = re.compile(rb"[a-z0-9_.-]*")


def _decode_name_checked(wire: object) -> str:
    """:func:`decode_name` label by label, raising the error that names what is wrong."""
    if not isinstance(wire, (bytes, bytearray, memoryview)):
        raise WireNameError(f"a wire name must be bytes, not {type(wire).__name__}")
    wire = bytes(wire)
    end = len(wire)
    if end == 0:
        raise WireNameError("empty wire name (no root label)")
    if end > MAX_WIRE_NAME:
        raise WireNameError(f"wire name of {end} bytes (at most {MAX_WIRE_NAME})")
    labels = []
    pos = 0
    while True:
        if pos >= end:
            raise WireNameError("truncated wire name (no root label)")
        length = wire[pos]
        if length == 0:
            break
        if length > MAX_LABEL:
            # 0xC0.. is a compression pointer, 0x40..0xBF extended label types: neither belongs
            # in the uncompressed names Unbound stores.
            raise WireNameError(f"label length byte {length:#04x} at offset {pos}")
        start = pos + 1
        pos = start + length
        if pos > end:
            raise WireNameError(f"truncated label at offset {start - 1}")
        label = wire[start:pos].lower()
        if not _LABEL_BYTES.fullmatch(label):
            raise WireNameError(f"label {wire[start:pos]!r} has bytes a name pattern cannot match")
        labels.append(label)
    if pos + 1 != end:
        raise WireNameError(f"{end - pos - 1} bytes after the root label")
    return b".".join(labels).decode("ascii")


def decode_rdata_name(rr_data: bytes) -> str:
    """The name in a CNAME/DNAME/PTR record as Unbound stores it: a 2-byte big-endian rdlength,
    then the name; the length must agree with the bytes present."""
    if len(rr_data) < 3:
        raise WireNameError(f"rdata of {len(rr_data)} bytes holds no name")
    rdlength = int.from_bytes(rr_data[:2], "big")
    if rdlength != len(rr_data) - 2:
        raise WireNameError(f"rdlength {rdlength} but {len(rr_data) - 2} rdata bytes")
    return decode_name(rr_data[2:])


def encode_name(name: str) -> bytes:
    """The inverse of :func:`decode_name` for names in canonical text form (tests, control)."""
    if name in ("", "."):
        return b"\x00"
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= MAX_LABEL:
            raise WireNameError(f"label {label!r} of {len(raw)} bytes")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_WIRE_NAME:
        raise WireNameError(f"{name!r} is {len(out)} bytes on the wire (at most {MAX_WIRE_NAME})")
    return bytes(out)

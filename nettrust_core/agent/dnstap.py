"""Just enough dnstap protobuf and DNS wire format to turn a client response into values.

Hand-written rather than a protobuf/dnspython dependency: the agent decodes one frame per
client query (cache hits included), and these few fields decode in microseconds.  Hostile or
truncated input raises :class:`DecodeError`; the caller counts and drops the frame.

dnstap schema: https://github.com/dnstap/dnstap.pb/blob/master/dnstap.proto
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..errors import NetTrustError

# dnstap.Message.Type values
CLIENT_QUERY, CLIENT_RESPONSE = 5, 6
DNSTAP_MESSAGE = 1
A, CNAME, DNAME, AAAA = 1, 5, 39, 28
_MAX_POINTERS = 64


class DecodeError(NetTrustError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The parts of a DNS response the statistics need; names normalized (lower case, no dot)."""

    qname: str
    qtype: int
    rcode: int
    #: (owner, type, ttl, data) of the answer section's A, AAAA, CNAME and DNAME records.
    records: tuple[tuple[str, int, int, str], ...]

    @property
    def addresses(self) -> list[str]:
        return [r[3] for r in self.records if r[1] in (A, AAAA)]

    @property
    def min_ttl(self) -> int | None:
        return min((r[2] for r in self.records), default=None)


@dataclass(slots=True)             # not frozen: a frozen init costs microseconds per frame
class TapMessage:
    kind: int
    client: str | None
    client_port: int | None
    query_time: float | None
    response_time: float | None
    query: bytes | None
    response: bytes | None


# -- protobuf -----------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos] if pos < len(buf) else 0x80
    if b < 0x80:
        return b, pos + 1
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, int | bytes]:
    """{field number: value} of one protobuf message; length-delimited values as bytes,
    fixed ones as ints.  Inlined single-byte keys and lengths: this runs once per query."""
    out: dict[int, int | bytes] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 2:
            length = buf[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(buf, pos)
            if pos + length > end:
                raise DecodeError("field overruns the message")
            out[key >> 3] = buf[pos:pos + length]
            pos += length
        elif wire == 0:
            value, pos = _varint(buf, pos)
            out[key >> 3] = value
        elif wire == 5:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            out[key >> 3] = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            out[key >> 3] = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        else:
            raise DecodeError(f"unsupported wire type {wire}")
    return out


def decode_frame(frame: bytes) -> TapMessage | None:
    """The dnstap Message in a Frame Streams data frame (None if it carries none)."""
    message = _fields(frame).get(14)
    if not isinstance(message, bytes):
        return None
    f = _fields(message)
    addr = f.get(4)
    client = None
    if isinstance(addr, bytes):
        if len(addr) == 4:
            client = socket.inet_ntop(socket.AF_INET, addr)
        elif len(addr) == 16:
            client = socket.inet_ntop(socket.AF_INET6, addr)
    return TapMessage(
        kind=_int(f.get(1)) or 0, client=client, client_port=_int(f.get(6)),
        query_time=_time(f.get(8), f.get(9)), response_time=_time(f.get(12), f.get(13)),
        query=_bytes(f.get(10)), response=_bytes(f.get(14)))


def _int(value) -> int | None:
    """A field's value when it has the expected scalar wire type (hostile frames may not)."""
    return value if isinstance(value, int) else None


def _bytes(value) -> bytes | None:
    return value if isinstance(value, bytes) else None


def _time(sec, nsec) -> float | None:
    if not isinstance(sec, int):
        return None
    return sec + (_int(nsec) or 0) / 1e9


# -- DNS wire format ----------------------------------------------------------------------------

def _name(msg: bytes, pos: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``pos``; returns it and the position after it."""
    labels: list[str] = []
    end = None
    jumps = 0
    while True:
        if pos >= len(msg):
            raise DecodeError("name runs past the message")
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DecodeError("truncated pointer")
            jumps += 1
            if jumps > _MAX_POINTERS:
                raise DecodeError("compression loop")
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            continue
        if n & 0xC0:
            raise DecodeError("unsupported label type")
        label = msg[pos + 1:pos + 1 + n]
        if len(label) != n:
            raise DecodeError("truncated label")
        labels.append(label.decode("ascii", "backslashreplace").lower())
        pos += 1 + n
    return ".".join(labels), (end if end is not None else pos)


_parsed: dict[bytes, DnsAnswer] = {}
_PARSED_MAX = 4096


def parse_response(msg: bytes) -> DnsAnswer:
    """The response's question, rcode and answers; identical responses (a name served from
    cache many times a second: only the ID differs) are parsed once."""
    key = msg[2:]
    found = _parsed.get(key)
    if found is None:
        found = _parse(msg)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[key] = found
    return found


def _parse(msg: bytes) -> DnsAnswer:
    if len(msg) < 12:
        raise DecodeError("short DNS message")
    flags, qdcount, ancount = struct.unpack_from(">HHH", msg, 2)
    if qdcount < 1:
        raise DecodeError("no question")
    qname, pos = _name(msg, 12)
    if pos + 4 > len(msg):
        raise DecodeError("truncated question")
    qtype = struct.unpack_from(">H", msg, pos)[0]
    pos += 4
    for _ in range(qdcount - 1):          # never seen in practice; skip politely
        pos = _name(msg, pos)[1] + 4
    records = []
    for _ in range(ancount):
        owner, pos = _name(msg, pos)
        if pos + 10 > len(msg):
            raise DecodeError("truncated record")
        rtype, _cls, ttl, rdlen = struct.unpack_from(">HHIH", msg, pos)
        pos += 10
        rdata_at, pos = pos, pos + rdlen
        if pos > len(msg):
            raise DecodeError("rdata overruns the message")
        if rtype == A and rdlen == 4:
            data = socket.inet_ntop(socket.AF_INET, msg[rdata_at:pos])
        elif rtype == AAAA and rdlen == 16:
            data = socket.inet_ntop(socket.AF_INET6, msg[rdata_at:pos])
        elif rtype in (CNAME, DNAME):
            data = _name(msg, rdata_at)[0]
        else:
            continue
        records.append((owner, rtype, ttl, data))
    return DnsAnswer(qname, qtype, flags & 0xF, tuple(records))

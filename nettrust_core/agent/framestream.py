"""Frame Streams (the transport under dnstap), receiving side, bidirectional handshake.

Unbound connects to our Unix socket and speaks first::

    Unbound → READY (content type)   agent → ACCEPT (content type)
    Unbound → START                  … data frames …
    Unbound → STOP                   agent → FINISH

Every frame is a 32-bit big-endian length and that many bytes.  A length of 0 escapes a control
frame: its own length, a 32-bit control type and fields (type 1 = content type, a string).
Spec: https://farsightsec.github.io/fstrm/ (protocol section).
"""

from __future__ import annotations

import socket
import struct

from ..errors import NetTrustError

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5
FIELD_CONTENT_TYPE = 1
#: A dnstap frame is one DNS message plus a few fields; anything bigger is hostile.
MAX_FRAME = 256 * 1024

_U32 = struct.Struct(">I")


class ProtocolError(NetTrustError):
    """The peer broke the Frame Streams protocol; the connection is closed."""


def control_frame(ctype: int, content_type: bytes | None = CONTENT_TYPE) -> bytes:
    body = _U32.pack(ctype)
    if content_type is not None:
        body += _U32.pack(FIELD_CONTENT_TYPE) + _U32.pack(len(content_type)) + content_type
    return _U32.pack(0) + _U32.pack(len(body)) + body


def parse_control(body: bytes) -> tuple[int, list[bytes]]:
    """(control type, content types) of a control frame's body."""
    if len(body) < 4:
        raise ProtocolError("short control frame")
    ctype = _U32.unpack_from(body)[0]
    types, pos = [], 4
    while pos < len(body):
        if pos + 8 > len(body):
            raise ProtocolError("truncated control field")
        ftype, flen = struct.unpack_from(">II", body, pos)
        pos += 8
        if pos + flen > len(body):
            raise ProtocolError("control field overruns the frame")
        if ftype == FIELD_CONTENT_TYPE:
            types.append(body[pos:pos + flen])
        pos += flen
    return ctype, types


class FrameReader:
    """Frames from one connected stream socket, after the handshake (see :meth:`handshake`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self.finished = False

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _frame(self) -> tuple[bool, bytes] | None:
        """(is_control, body), or None at end of stream."""
        if not self._fill(4):
            return None
        length = _U32.unpack(self._take(4))[0]
        control = length == 0
        if control:
            if not self._fill(4):
                return None
            length = _U32.unpack(self._take(4))[0]
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes is too large")
        if not self._fill(length):
            return None
        return control, self._take(length)

    def handshake(self) -> None:
        """READY → ACCEPT, then wait for START; refuses a stream that is not dnstap."""
        frame = self._frame()
        if frame is None or not frame[0]:
            raise ProtocolError("expected a READY control frame")
        ctype, types = parse_control(frame[1])
        if ctype != READY:
            raise ProtocolError(f"expected READY, got control type {ctype}")
        if types and CONTENT_TYPE not in types:
            raise ProtocolError(f"content types {types!r} do not include {CONTENT_TYPE!r}")
        self.sock.sendall(control_frame(ACCEPT))
        frame = self._frame()
        if frame is None or not frame[0] or parse_control(frame[1])[0] != START:
            raise ProtocolError("expected a START control frame")

    def frames(self):
        """Yield data frames until STOP (answered with FINISH) or the peer closes."""
        while True:
            frame = self._frame()
            if frame is None:
                return
            control, body = frame
            if not control:
                yield body
                continue
            if parse_control(body)[0] == STOP:
                self.finished = True
                try:
                    self.sock.sendall(control_frame(FINISH, None))
                except OSError:
                    pass
                return

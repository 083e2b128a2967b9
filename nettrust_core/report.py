"""Reports from the resolver process to the NetTrust agent, never blocking the answer path.

The Unbound process (the module, the authorizer and its background threads) tells the agent
what happened — decisions, events, counter snapshots — as one JSON object per message on a
Unix SOCK_SEQPACKET connection.  A send never waits: when the agent is not running, is slow or
the socket buffer is full, the record is dropped and counted in :attr:`Reporter.dropped`; a lost
connection is retried at most once per :data:`RECONNECT_EVERY` seconds, from a send.  The agent
keeps the statistics, serves the metrics and runs the alerts; DNS never depends on it.

Why not SOCK_DGRAM: an unconnected Unix datagram socket may hold only
``net.unix.max_dgram_qlen`` messages (10 by default) before senders get EAGAIN, so a burst of
answers lost decision records even with an idle agent.  A connected SEQPACKET socket keeps the
message boundaries and is limited by its buffer size (hundreds of records) instead.

Record shapes (``"t"`` names the type; ``ts`` is the Unix time; every other field is optional):

- ``{"t": "decision", "ts", "client", "qname", "qtype", "rcode", "outcome", "reason", "rule",
  "security", "source", "chain": [...], "grants": [[address, timeout], ...], "written", "error"}``
  — the answer path sends it in the fixed binary layout of :mod:`nettrust_core.decision_record`
  (a third of JSON's cost), which the agent decodes into this same dictionary.
- ``{"t": "event", "ts", "kind", ...}`` — ``kind`` names the event (``unauthorized``,
  ``backend_error``, ``renewal`` …); the other fields depend on it.
- ``{"t": "counters", "ts", "pid", "values": {name: number}, "levels": {name: number}}`` —
  one resolver process's counts since it started and its current levels (live grants, names
  holding grants …); the agent turns them into metrics labelled with the sender's pid (as the
  kernel reports the peer) and drops them when the process disconnects.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

#: Where the agent listens unless ``stats.report_socket`` says otherwise.
DEFAULT_SOCKET = "/run/nettrust/agent.sock"
#: Largest message sent; a bigger record is dropped (and counted) rather than split.
MAX_DATAGRAM = 60_000
#: Seconds between attempts to (re)connect to the agent.
RECONNECT_EVERY = 1.0
#: Send buffer asked for (the kernel caps it at net.core.wmem_max).
SNDBUF = 1 << 20

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


class Reporter:
    """Non-blocking, best-effort sender of records to the agent (thread-safe)."""

    def __init__(self, path: str | None = DEFAULT_SOCKET) -> None:
        self.path = path
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._enabled = bool(path)
        self._closed = False
        self._next_connect = 0.0

    @property
    def enabled(self) -> bool:
        return self._enabled and not self._closed

    def _connect(self) -> socket.socket | None:
        """A connected socket, or None (then at most one attempt per RECONNECT_EVERY)."""
        now = time.monotonic()
        if now < self._next_connect or self._closed or not self.path:
            return None
        self._next_connect = now + RECONNECT_EVERY
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        self._sock = sock
        return sock

    def send(self, record: dict) -> bool:
        """Send ``record`` (``ts`` is added when missing); False when it was dropped."""
        if not self._enabled:
            return False
        record.setdefault("ts", time.time())
        try:
            data = _dumps(record).encode("utf-8")
        except (ValueError, TypeError):
            data = b""
        return self.send_encoded(data)

    def send_encoded(self, data: bytes) -> bool:
        """Send one record already encoded (JSON, or a binary decision record:
        :mod:`nettrust_core.decision_record`); False when it was dropped."""
        if not self._enabled:
            return False
        with self._lock:
            try:
                if not data or len(data) > MAX_DATAGRAM:
                    raise ValueError("record unencodable or too large")
                sock = self._sock or self._connect()
                if sock is None:
                    raise ConnectionRefusedError("agent not connected")
                try:
                    sock.send(data)
                except (BlockingIOError, InterruptedError):
                    raise       # agent busy: this record only
                except OSError:
                    self._sock = None        # agent gone: reconnect later
                    sock.close()
                    raise
            except (OSError, ValueError, TypeError):
                # Agent absent, busy or gone, or the record unencodable: drop, never wait.
                self.dropped += 1
                return False
            self.sent += 1
        return True

    def event(self, kind: str, **fields: object) -> bool:
        fields["t"] = "event"
        fields["kind"] = kind
        return self.send(fields)

    def counters(self, values: dict[str, float], levels: dict[str, float] | None = None) -> bool:
        """``values`` count since this process started; ``levels`` are current values."""
        record: dict = {"t": "counters", "pid": os.getpid(), "values": values}
        if levels is not None:
            record["levels"] = levels
        return self.send(record)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

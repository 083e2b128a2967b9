"""Reports from the resolver process to the NetTrust agent, never blocking the answer path.

The Unbound process (the module, the authorizer and its background threads) tells the agent
what happened — decisions, events, counter snapshots — as one JSON object per datagram on a
Unix datagram socket.  A send never waits: when the agent is not running, is slow or its socket
buffer is full, the record is dropped and counted in :attr:`Reporter.dropped`.  The agent keeps
the statistics, serves the metrics and runs the alerts; DNS never depends on it.

Record shapes (``"t"`` names the type; ``ts`` is the Unix time; every other field is optional):

- ``{"t": "decision", "ts", "client", "qname", "qtype", "rcode", "outcome", "reason", "rule",
  "security", "source", "chain": [...], "grants": [[address, timeout], ...], "written", "error"}``
- ``{"t": "event", "ts", "kind", ...}`` — ``kind`` names the event (``unauthorized``,
  ``backend_error``, ``renewal`` …); the other fields depend on it.
- ``{"t": "counters", "ts", "pid", "values": {name: number}}`` — cumulative counters of one
  resolver process; the agent turns them into metrics.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

#: Where the agent listens unless ``stats.report_socket`` says otherwise.
DEFAULT_SOCKET = "/run/nettrust/agent.sock"
#: Largest datagram sent; a bigger record is dropped (and counted) rather than split.
MAX_DATAGRAM = 60_000

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


class Reporter:
    """Non-blocking, best-effort sender of records to the agent (thread-safe)."""

    def __init__(self, path: str | None = DEFAULT_SOCKET) -> None:
        self.path = path
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            self._sock = sock

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, record: dict) -> bool:
        """Send ``record`` (``ts`` is added when missing); False when it was dropped."""
        sock = self._sock
        if sock is None:
            return False
        record.setdefault("ts", time.time())
        try:
            data = _dumps(record).encode("utf-8")
            if len(data) > MAX_DATAGRAM:
                raise ValueError("record too large")
            sock.sendto(data, self.path)
        except (OSError, ValueError, TypeError):
            # Agent absent (ENOENT/ECONNREFUSED), busy (EAGAIN) or record unencodable: drop.
            with self._lock:
                self.dropped += 1
            return False
        with self._lock:
            self.sent += 1
        return True

    def event(self, kind: str, **fields) -> bool:
        fields["t"] = "event"
        fields["kind"] = kind
        return self.send(fields)

    def counters(self, values: dict[str, float]) -> bool:
        return self.send({"t": "counters", "pid": os.getpid(), "values": values})

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

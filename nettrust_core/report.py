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
  (a third of JSON's cost), which the agent decodes into this same dictionary.  Decision
  records travel in batches (:meth:`Reporter.send_batched`): one message holds those of up to
  :data:`BATCH_DELAY` seconds or :data:`BATCH_BYTES` bytes, so a busy resolver makes one send
  per ~150 answers instead of one each (a SEQPACKET send costs its sender ~1.8 µs of CPU,
  kernel included; batched, ~0.05 µs per record).  :func:`read_message` reads any message.
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
import struct
import threading
import time

from . import decision_record
from .worker import Worker

#: Where the agent listens unless ``stats.report_socket`` says otherwise.
DEFAULT_SOCKET = "/run/nettrust/agent.sock"
#: Largest message sent; a bigger record is dropped (and counted) rather than split.
MAX_DATAGRAM = 60_000
#: Seconds between attempts to (re)connect to the agent.
RECONNECT_EVERY = 1.0
#: Send buffer asked for (the kernel caps it at net.core.wmem_max).
SNDBUF = 1 << 20
#: A batch of decision records is sent once it holds this many bytes ...
BATCH_BYTES = 16_384
#: ... or its first record waited this many seconds (the agent joins a decision with Unbound's
#: dnstap response for up to a second: nettrust_core.agent.collector).
BATCH_DELAY = 0.05
#: A message holding several records: this magic, then per record its length (u16) and itself.
BATCH_MAGIC = b"\x00B1"
_LEN = struct.Struct("<H")

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
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        #: Sends a batch no answer filled in time; its thread starts with the first batch.
        self._flusher = _Flusher(self)

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
        :mod:`nettrust_core.decision_record`) after the batch waiting; False when it was
        dropped."""
        if not self._enabled:
            return False
        with self._lock:
            self._flush_locked()
            return self._send_locked(data, 1)

    def send_batched(self, data: bytes) -> None:
        """Queue one binary decision record: sent with the records after it, in one message,
        once :data:`BATCH_BYTES` wait or the first of them waited :data:`BATCH_DELAY` seconds
        (by the answer that fills the batch, else by the flusher thread)."""
        if not self._enabled:
            return
        size = len(data) + _LEN.size
        with self._lock:
            if self._closed:            # the resolver is stopping: counted, as every drop
                self.dropped += 1
                return
            if self._batch_bytes + size > MAX_DATAGRAM - len(BATCH_MAGIC):
                self._flush_locked()
            self._batch.append(data)
            self._batch_bytes += size
            if self._batch_bytes >= BATCH_BYTES:
                self._flush_locked()
                return
            if len(self._batch) > 1:
                return
        self._wake_flusher()

    def flush(self) -> None:
        """Send the batch waiting now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch, self._batch_bytes = [], 0
        if len(batch) == 1:
            self._send_locked(batch[0], 1)
            return
        parts = [BATCH_MAGIC]
        for data in batch:
            parts += (_LEN.pack(len(data)), data)
        self._send_locked(b"".join(parts), len(batch))

    def _send_locked(self, data: bytes, records: int) -> bool:
        """One message holding ``records`` records, sent or dropped (and counted) at once."""
        try:
            if not data or len(data) > MAX_DATAGRAM:
                raise ValueError("record unencodable or too large")
            sock = self._sock or self._connect()
            if sock is None:
                raise ConnectionRefusedError("agent not connected")
            try:
                sock.send(data)
            except (BlockingIOError, InterruptedError):
                raise       # agent busy: this message only
            except OSError:
                self._sock = None        # agent gone: reconnect later
                sock.close()
                raise
        except (OSError, ValueError, TypeError):
            # Agent absent, busy or gone, or the record unencodable: drop, never wait.
            self.dropped += records
            return False
        self.sent += records
        return True

    def _wake_flusher(self) -> None:
        if not self._flusher.alive:
            with self._lock:
                if not self._closed:
                    self._flusher.start()
        self._flusher.wake()

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
            if self._enabled and not self._closed:
                self._flush_locked()
            self._closed = True
            sock, self._sock = self._sock, None
        # Inside Unbound no thread may outlive the module's deinit (Service.stop closes us).
        self._flusher.stop(timeout=2.0)
        if sock is not None:
            sock.close()


class _Flusher(Worker):
    """Sleeps until a batch starts, sends it :data:`BATCH_DELAY` later (if no answer filled it
    first); no wake-ups while no record waits, and it ends at once when stopped."""

    name = "nettrust-report-flush"

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter
        self.due = threading.Event()

    def wake(self) -> None:
        self.due.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.due.wait()
            self.stopping.wait(BATCH_DELAY)
            self.due.clear()
            self.reporter.flush()


def read_message(data: bytes) -> list[dict]:
    """The records in one message from :class:`Reporter`: a batch of binary decision records,
    one binary decision record, or one JSON object.  ValueError when malformed (a batch is
    refused whole)."""
    if data.startswith(BATCH_MAGIC):
        records, pos = [], len(BATCH_MAGIC)
        while pos < len(data):
            if pos + _LEN.size > len(data):
                raise decision_record.RecordError("truncated batch")
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + n > len(data):
                raise decision_record.RecordError("truncated batch")
            records.append(decision_record.decode(data[pos:pos + n]))
            pos += n
        return records
    if data[:1] == b"\0":
        return [decision_record.decode(data)]
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError("a report record must be a JSON object")
    return [record]

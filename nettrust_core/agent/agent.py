"""The agent process: receive, join, count, store, alert.  ``nettrust agent`` runs one.

Threads: one accepting Unbound's dnstap connections (and one per connection: several Unbound
processes may stream at once), one reading the module's report datagrams, the store's writer,
the alert notifier, and the metrics HTTP server.  Receiving never waits on disk or the network:
records go to bounded queues that drop and count.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import stat
import struct
import threading
import time
from typing import TYPE_CHECKING

from ..report import read_message
from ..errors import InvalidValue
from .alerts import Alerts
from .collector import Collector
from .dnstap import CLIENT_RESPONSE, DecodeError, decode_frame, parse_response
from .framestream import FrameReader, ProtocolError
from .metrics import Metrics
from .store import StatsStore

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("nettrust.agent")

TICK = 0.2


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        st = config.stats
        self.metrics = Metrics(dropped=lambda: dict(self.store.dropped))
        self.alerts = Alerts(config.alerts, record_event=self._alert_event, metrics=self.metrics)
        self.store = StatsStore(st.database, flush_interval=st.flush_interval,
                                queue_size=st.queue_size, retention=st.retention,
                                retention_rows=st.retention_rows,
                                on_new_domain=self.alerts.new_domain,
                                on_event=lambda kind: self.metrics.events.labels(kind).inc())
        self.collector = Collector(emit_query=self._query, direct=not st.cache_hits)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._conns: list[socket.socket] = []
        self._http = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        st = self.config.stats
        self.store.open()
        report = self._bind(st.report_socket, socket.SOCK_SEQPACKET)
        tap = self._bind(st.dnstap_socket, socket.SOCK_STREAM)
        self.store.start()
        self.alerts.start()
        m = self.config.metrics
        if m.enabled:
            self._http = self.metrics.serve(m.address, m.port)
        self._spawn(self._accept, report, self._read_reports, name="nettrust-reports")
        self._spawn(self._accept, tap, self._read_dnstap, name="nettrust-dnstap")
        self._spawn(self._tick, name="nettrust-join")
        log.info("agent ready: database %s, reports %s, dnstap %s, metrics %s", st.database,
                 st.report_socket, st.dnstap_socket,
                 f"{m.address}:{m.port}" if m.enabled else "off")

    def stop(self) -> None:
        self._stop.set()
        for s in self._sockets:
            s.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)      # wakes a reader blocked in recv
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        for path in (self.config.stats.report_socket, self.config.stats.dnstap_socket):
            _unlink_socket(path)
        self.collector.join_delay = -1.0
        self.collector.tick()
        self.alerts.stop()
        self.store.stop()
        if self._http is not None:
            server, _thread = self._http
            server.shutdown()
            server.server_close()

    def run(self) -> None:
        """Start, wait for SIGTERM or SIGINT, stop."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()
            log.info("agent stopped")

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            self.collector.tick()

    def _spawn(self, target, *args, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _bind(self, path: str, kind: int) -> socket.socket:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        _unlink_socket(path)
        sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        sock.bind(path)
        sock.listen(64)
        sock.settimeout(TICK)
        self._sockets.append(sock)
        _allow_resolver(path, self.config.firewall.resolver_user)
        return sock

    # -- receivers -------------------------------------------------------------------------
    def _accept(self, listener: socket.socket, handler) -> None:
        """One thread per connection: each Unbound process connects once per stream."""
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(TICK)
            self._conns = [c for c in self._conns if c.fileno() != -1] + [conn]
            self._spawn(handler, conn, name=f"{threading.current_thread().name}-conn")

    def _read_reports(self, conn: socket.socket) -> None:
        """Records from one resolver process, per SEQPACKET message a JSON object, a binary
        decision record or a batch of them (:func:`nettrust_core.report.read_message`).

        Its counters are labelled with the pid the kernel gives for the peer (SO_PEERCRED),
        and dropped when the connection ends: a process that exited (a restarted resolver, a
        one-shot tool that loaded the module) leaves no series behind."""
        pid = _peer_pid(conn)
        try:
            with conn:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    try:
                        records = read_message(data)
                    except ValueError as exc:
                        self.metrics.bad_records.labels("report").inc()
                        log.debug("bad report message dropped: %s", exc)
                        continue
                    self.metrics.records.labels("report").inc(len(records))
                    for record in records:
                        try:
                            self.report(record, pid=pid)
                        except (ValueError, TypeError, KeyError, AttributeError) as exc:
                            self.metrics.bad_records.labels("report").inc()
                            log.debug("bad report record dropped: %s", exc)
        finally:
            if pid is not None:
                self.metrics.forget(pid)

    def _read_dnstap(self, conn: socket.socket) -> None:
        """Client responses from Unbound's dnstap stream, at most ``stats.responses_per_second``
        of them decoded and stored per second.  Past that the agent stops reading to the end of
        the second (one ``responses_sampled`` event): Unbound's dnstap queue fills and it drops
        the rest of that second's frames there, unwritten.  A busy resolver's cache hits (140,000
        a second in the benchmark, ~10 µs each here) would otherwise keep a core busy, a core
        Unbound needs; reading and only counting them (0.2 µs each) still made Unbound's I/O
        thread write every frame (hit rate 0.65× statistics off, against 0.83× pausing).  The
        exact totals come from Unbound itself (:mod:`nettrust_core.unbound_totals`)."""
        conn.settimeout(None)
        reader = FrameReader(conn)
        per_second = self.config.stats.responses_per_second
        second, used = 0, 0
        try:
            reader.handshake()
            log.info("dnstap stream connected")
            for frame in reader.frames():
                if per_second:
                    now = time.monotonic()
                    if int(now) != second:
                        second, used = int(now), 0
                    used += 1
                    if used > per_second:
                        self._sampled(per_second)
                        self._stop.wait(max(0.0, second + 1.0 - time.monotonic()))
                        continue
                self.metrics.records.labels("dnstap").inc()
                try:
                    self.tap(frame)
                except (DecodeError, ValueError) as exc:
                    self.metrics.bad_records.labels("dnstap").inc()
                    log.debug("bad dnstap frame dropped: %s", exc)
                if self._stop.is_set():
                    break
        except (ProtocolError, OSError) as exc:
            log.warning("dnstap stream closed: %s", exc)
        finally:
            conn.close()

    def _sampled(self, detailed: int) -> None:
        self.metrics.sampled_seconds.inc()
        self.report({"t": "event", "kind": "responses_sampled", "ts": time.time(),
                     "detailed": detailed})

    # -- records ---------------------------------------------------------------------------
    def tap(self, frame: bytes) -> None:
        msg = decode_frame(frame)
        if msg is None or msg.kind != CLIENT_RESPONSE or msg.response is None:
            return
        ts = msg.response_time or time.time()
        self.collector.response(msg.client, ts, parse_response(msg.response))

    def report(self, record: dict, pid: int | None = None) -> None:
        """One record from a resolver process (``pid``: the sender, as the kernel says)."""
        kind = record.get("t")
        if kind == "decision":
            record.setdefault("ts", time.time())
            self.metrics.decision(record)
            self.collector.decision(record)
            for address, timeout in record.get("grants") or ():
                self.store.put("grant", {"ts": record["ts"], "address": str(address),
                                         "timeout": float(timeout), "qname": record["qname"],
                                         "client": record.get("client"),
                                         "chain": record.get("chain"), "rule": record.get("rule"),
                                         "written": record.get("written")})
            if record.get("error"):
                self.alerts.backend_error(str(record["error"]))
        elif kind == "event":
            record.setdefault("subject", record.get("destination") or record.get("who")
                              or record.get("address") or record.get("client"))
            self.metrics.events.labels(str(record.get("kind"))).inc()
            self.store.put("event", record)
            self.alerts.event(record)
        elif kind == "counters":
            self.metrics.counters(pid if pid is not None else record.get("pid"),
                                  record.get("values") or {}, record.get("levels"))
        else:
            raise InvalidValue(f"unknown record type {kind!r}")

    def _query(self, record: dict) -> None:
        self.metrics.query(record["outcome"], record["qtype"], record["source"] == "cache",
                           record["ttl"], record["count"])
        self.alerts.query(record)
        self.store.put("query", record)

    def _alert_event(self, event: dict) -> None:
        self.metrics.events.labels(str(event.get("kind"))).inc()
        self.store.put("event", event)


def _peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket (None when unknown)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = struct.unpack("3i", creds)[0]
    return pid or None


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _allow_resolver(path: str, user: str | None) -> None:
    """Only the resolver's user (and root) may write to the agent's sockets."""
    os.chmod(path, 0o660)
    if user and os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            os.chmod(path, 0o666)   # no such user: whoever runs Unbound must reach us
            log.warning("resolver user %r does not exist; %s is writable by everyone", user, path)
            return
        os.chown(path, entry.pw_uid, entry.pw_gid)

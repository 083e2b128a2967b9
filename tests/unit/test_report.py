"""The resolver side of the agent channel: never blocks, keeps bursts, reconnects."""

import json
import socket
import time

from nettrust_core import report
from nettrust_core.report import Reporter


def listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(path))
    s.listen(4)
    return s


def test_a_burst_larger_than_max_dgram_qlen_arrives_whole(tmp_path):
    """Unconnected datagrams stop at net.unix.max_dgram_qlen (10); this channel must not."""
    path = tmp_path / "agent.sock"
    srv = listener(path)
    r = Reporter(str(path))
    for i in range(300):
        assert r.send({"t": "event", "kind": "burst", "i": i})
    conn, _ = srv.accept()
    got = [json.loads(conn.recv(65536))["i"] for _ in range(300)]
    assert got == list(range(300)) and r.dropped == 0


def test_absent_agent_drops_and_counts_without_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RECONNECT_EVERY", 0.05)
    path = tmp_path / "agent.sock"
    r = Reporter(str(path))
    started = time.monotonic()
    assert not any(r.send({"t": "event", "kind": "x"}) for _ in range(1000))
    assert time.monotonic() - started < 1.0
    assert r.dropped == 1000
    srv = listener(path)                         # the agent starts later
    time.sleep(0.06)
    assert r.send({"t": "event", "kind": "late"})
    conn, _ = srv.accept()
    assert json.loads(conn.recv(65536))["kind"] == "late"
    conn.close()                                 # the agent goes away again
    srv.close()
    results = [r.send({"t": "event", "kind": "gone"}) for _ in range(3)]
    assert results[-1] is False


def test_disabled_and_unencodable_records():
    assert not Reporter(None).enabled
    assert Reporter(None).send({"t": "event"}) is False
    r = Reporter("/nonexistent/agent.sock")
    assert r.send({"t": "event", "blob": "x" * 70_000}) is False and r.dropped == 1

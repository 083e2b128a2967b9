"""The resolver side of the agent channel: never blocks, keeps bursts, reconnects."""

import json
import socket
import time

import pytest

from nettrust_core import decision_record, report
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


def _decision(i: int) -> bytes:
    data = decision_record.encode(
        ts=float(i), client="192.0.2.1", qname=f"n{i}.test", qtype=1, rcode=0, outcome="granted",
        reason="answered", rule=None, security=3, source="resolved", chain=(f"n{i}.test",),
        grants=[], written=0, write_s=0.0, error=None)
    assert data is not None
    return data


def test_decision_records_share_messages_and_none_waits_longer_than_the_batch_delay(tmp_path):
    """A burst of answers makes a few messages, not one each; the last records, with no answer
    after them to fill the batch, still reach the agent within BATCH_DELAY (the flusher)."""
    path = tmp_path / "agent.sock"
    srv = listener(path)
    r = Reporter(str(path))
    for i in range(1000):
        r.send_batched(_decision(i))
    conn, _ = srv.accept()
    conn.settimeout(2)
    got, messages = [], 0
    while len(got) < 1000:
        got += [rec["qname"] for rec in report.read_message(conn.recv(65536))]
        messages += 1
    assert got == [f"n{i}.test" for i in range(1000)]
    assert messages <= 1000 * len(_decision(999)) // report.BATCH_BYTES + 2
    assert r.sent == 1000 and r.dropped == 0
    started = time.monotonic()
    r.send_batched(_decision(1000))
    assert [rec["qname"] for rec in report.read_message(conn.recv(65536))] == ["n1000.test"]
    assert time.monotonic() - started < report.BATCH_DELAY + 0.5
    r.close()


def test_close_ends_the_flusher_thread_at_once(tmp_path):
    """Inside Unbound no thread may outlive the module's deinit (Service.stop closes the
    reporter): close() must not return while the flusher still runs, nor wait out its delay."""
    path = tmp_path / "agent.sock"
    srv = listener(path)
    r = Reporter(str(path))
    r.send_batched(_decision(1))
    flusher = r._flusher
    assert flusher is not None and flusher.alive
    started = time.monotonic()
    r.close()
    assert not flusher.alive and time.monotonic() - started < report.BATCH_DELAY
    conn, _ = srv.accept()
    conn.settimeout(2)
    assert [rec["qname"] for rec in report.read_message(conn.recv(65536))] == ["n1.test"]
    r.send_batched(_decision(2))                 # after close: dropped and counted, no thread
    assert r.dropped == 1 and r._flusher is flusher


def test_an_event_after_decisions_arrives_after_them_and_close_sends_what_waits(tmp_path):
    path = tmp_path / "agent.sock"
    srv = listener(path)
    r = Reporter(str(path))
    r.send_batched(_decision(1))
    r.send_batched(_decision(2))
    assert r.event("renewal", name="x.test")
    r.send_batched(_decision(3))
    r.close()
    conn, _ = srv.accept()
    conn.settimeout(2)
    seen = []
    for _ in range(3):
        seen += [rec.get("qname") or rec["kind"] for rec in report.read_message(conn.recv(65536))]
    assert seen == ["n1.test", "n2.test", "renewal", "n3.test"]


def test_a_batch_never_outgrows_a_message_and_a_broken_batch_is_refused_whole(tmp_path):
    path = tmp_path / "agent.sock"
    srv = listener(path)
    r = Reporter(str(path))
    big = decision_record.encode(
        ts=1.0, client=None, qname="big.test", qtype=1, rcode=0, outcome="blocked",
        reason="x" * 50_000, rule=None, security=3, source="resolved", chain=(), grants=[],
        written=0, write_s=0.0, error=None)
    assert big is not None
    for _ in range(3):
        r.send_batched(big)
    r.close()
    conn, _ = srv.accept()
    conn.settimeout(2)
    assert [len(report.read_message(conn.recv(65536))) for _ in range(3)] == [1, 1, 1]
    assert r.sent == 3 and r.dropped == 0
    batch = report.BATCH_MAGIC + b"".join(len(d).to_bytes(2, "little") + d
                                          for d in (_decision(1), _decision(2)))
    assert len(report.read_message(batch)) == 2
    for broken in (batch[:-1], batch + b"\x05"):
        with pytest.raises(ValueError):
            report.read_message(broken)
    with pytest.raises(ValueError):
        report.read_message(b"[1, 2]")

"""The binary decision record: what the agent decodes is exactly what the JSON record said.

The authorizer sends real records over a real SEQPACKET socket (the agent's kind); each is
decoded as the agent does and compared with the JSON form the same decision had before the
binary layout (built here the way the authorizer built it).
"""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest

from nettrust_core import decision_record
from nettrust_core.answer import A, AAAA, CNAME, Answer, Record, Security
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import parse_config
from nettrust_core.firewall.base import Grant
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core import report
from nettrust_core.report import Reporter, _dumps, read_message


def _json_form(answer: Answer, decision) -> dict:
    """The record as the authorizer sent it in JSON (before the binary layout)."""
    v = decision.verdict
    record = {"t": "decision", "client": answer.client, "qname": answer.qname,
              "qtype": answer.qtype, "rcode": answer.rcode, "outcome": v.outcome.value,
              "reason": v.reason, "rule": v.rule, "security": answer.security.name.lower(),
              "source": answer.source.value, "chain": v.chain,
              "grants": [(str(g.address), g.timeout) for g in decision.grants],
              "written": decision.written, "error": decision.error}
    return json.loads(_dumps(record))


@pytest.fixture
def channel(tmp_path):
    path = tmp_path / "agent.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(str(path))
    srv.listen(1)
    reporter = Reporter(str(path))
    auth = Authorizer(parse_config('[policy]\ndeny = ["bad.test"]\n'), RecordingBackend(),
                      reporter=reporter)
    yield auth, srv
    reporter.close()
    srv.close()


ANSWERS = [
    Answer("www.fw.test", A, 0, Security.INSECURE,
           (Record("www.fw.test", CNAME, 300, "cdn.fw.test"),
            Record("cdn.fw.test", A, 60, ipaddress.ip_address("198.51.100.7")),
            Record("cdn.fw.test", A, 60, ipaddress.ip_address("198.51.100.8"))), "192.0.2.10"),
    Answer("v6.fw.test", AAAA, 0, Security.SECURE,
           (Record("v6.fw.test", AAAA, 30, ipaddress.ip_address("2001:db8::5")),), None),
    Answer("bad.test", A, 0, Security.INSECURE,
           (Record("bad.test", A, 60, ipaddress.ip_address("198.51.100.9")),), "192.0.2.11"),
    Answer("bogus.fw.test", A, 0, Security.BOGUS,
           (Record("bogus.fw.test", A, 60, ipaddress.ip_address("198.51.100.10")),), "192.0.2.12"),
    Answer("nx.fw.test", A, 3, Security.INSECURE, (), "192.0.2.13"),
    Answer("ünï.fw.test", A, 0, Security.INSECURE,
           (Record("ünï.fw.test", A, 60, ipaddress.ip_address("198.51.100.11")),), "192.0.2.14"),
]


def test_the_agent_decodes_what_the_json_record_said(channel):
    auth, srv = channel
    decisions = [auth.authorize(a) for a in ANSWERS]
    conn, _ = srv.accept()
    conn.settimeout(2)
    data = conn.recv(65536)                     # the flusher sends the batch BATCH_DELAY later
    assert data.startswith(report.BATCH_MAGIC)
    outcomes = set()
    for answer, decision, got in zip(ANSWERS, decisions, read_message(data), strict=True):
        want = _json_form(answer, decision)
        assert got.pop("ts") > 0 and isinstance(got.pop("write_s"), float)
        assert got == want
        outcomes.add(got["outcome"])
    assert outcomes == {"granted", "blocked", "not_granted", "no_address"}   # every kind sent
    conn.close()


def test_a_record_the_layout_cannot_hold_goes_as_json():
    base = dict(ts=1.0, client="192.0.2.1", qname="a.test", qtype=1, rcode=0, outcome="granted",
                reason="answered", rule=None, security=3, source="resolved", chain=("a.test",),
                grants=[Grant(ipaddress.ip_address("0.0.0.0"), 60.0)], written=1, write_s=0.0,
                error=None)
    assert decision_record.encode(**base) is not None
    assert decision_record.encode(**{**base, "reason": "x" * 70_000}) is None
    assert decision_record.encode(**{**base, "outcome": "surprise"}) is None
    assert decision_record.encode(**{**base, "grants": [Grant("0.0.0.0", 60.0)]}) is None


def test_a_name_no_utf8_can_hold_is_sent_replaced_not_lost():
    """A lone surrogate (text decoded with surrogateescape) cannot be strict UTF-8; the record
    still goes, with the character replaced, as the layout has always sent it."""
    data = decision_record.encode(
        ts=1.0, client=None, qname="a\udcff.test", qtype=1, rcode=0, outcome="no_address",
        reason="nothing", rule=None, security=3, source="resolved", chain=(), grants=[],
        written=0, write_s=0.0, error=None)
    assert data is not None and decision_record.decode(data)["qname"] == "a?.test"


def test_malformed_binary_records_are_refused():
    data = decision_record.encode(
        ts=1.0, client=None, qname="a.test", qtype=1, rcode=0, outcome="granted",
        reason="answered", rule=None, security=3, source="resolved", chain=("a.test",),
        grants=[Grant(ipaddress.ip_address("::"), 60.0)], written=1, write_s=0.0, error=None)
    assert data is not None
    assert decision_record.decode(data)["grants"] == [["::", 60.0]]
    for bad in (data[:-1], data + b"\0", data[:10], b"\0D1", b'{"t": "decision"}'):
        with pytest.raises(ValueError):
            decision_record.decode(bad)

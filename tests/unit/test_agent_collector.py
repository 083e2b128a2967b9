"""Joining dnstap responses with decision records: cache hits, resolved answers, order."""

from nettrust_core.agent.collector import Collector
from nettrust_core.agent.dnstap import DnsAnswer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def answer(qname="www.example", qtype=1, addresses=("198.51.100.1",)):
    return DnsAnswer(qname, qtype, 0, tuple((qname, 1, 300, a) for a in addresses))


def decision(qname="www.example", client="192.0.2.1", qtype=1, outcome="granted"):
    return {"t": "decision", "client": client, "qname": qname, "qtype": qtype,
            "outcome": outcome, "reason": "allowed", "source": "resolved",
            "chain": [qname], "grants": [["198.51.100.1", 310.0]]}


def make():
    out, clock = [], Clock()
    return Collector(emit_query=out.append, clock=clock), out, clock


def test_decision_first_then_response_is_resolved_at_once():
    c, out, _ = make()
    c.decision(decision())
    c.response("192.0.2.1", 5.0, answer())
    assert [(r["source"], r["outcome"], r["ts"]) for r in out] == [("resolved", "granted", 5.0)]


def test_response_first_waits_for_its_decision():
    c, out, clock = make()
    c.response("192.0.2.1", 5.0, answer())
    assert c.tick() == 0 and not out
    clock.now += 0.5
    c.decision(decision())
    assert out[0]["source"] == "resolved"


def test_lone_response_is_a_cache_hit_with_the_last_verdict():
    c, out, clock = make()
    c.decision(decision())
    c.response("192.0.2.1", 1.0, answer())
    c.response("192.0.2.1", 2.0, answer())
    c.response("192.0.2.9", 3.0, answer())        # another client, same name
    clock.now += 1.1
    assert c.tick() == 2
    assert [(r["client"], r["source"], r["outcome"]) for r in out] == [
        ("192.0.2.1", "resolved", "granted"), ("192.0.2.1", "cache", "granted"),
        ("192.0.2.9", "cache", "granted")]


def test_unknown_cache_hit_and_late_dnstap_frames():
    c, out, clock = make()
    c.response("192.0.2.1", 1.0, answer("never.example"))
    clock.now += 2
    c.tick()
    assert out[0]["outcome"] == "unknown" and out[0]["source"] == "cache"
    # Unbound batches dnstap frames: a response up to seconds after its decision still joins.
    c.decision(decision("late.example"))
    clock.now += 3
    c.tick()
    c.response("192.0.2.1", 2.0, answer("late.example"))
    assert out[-1]["source"] == "resolved"


def test_decision_whose_response_never_comes_is_recorded_alone():
    """Its response was dropped or only counted (stats.responses_per_second): the query was
    still answered, so it is recorded from the decision, once; a later response is a hit."""
    c, out, clock = make()
    c.decision(decision("lost.example"))
    clock.now += 4
    assert c.tick() == 0 and not out
    clock.now += 6
    assert c.tick() == 1
    assert [(r["qname"], r["source"], r["count"]) for r in out] == [("lost.example", "resolved", 1)]
    c.response("192.0.2.1", 1.0, answer("lost.example"))
    clock.now += 2
    c.tick()
    assert [r["source"] for r in out] == ["resolved", "cache"]


def test_prefetch_decision_without_client_only_labels_later_hits():
    c, out, clock = make()
    c.decision(decision(client=None, outcome="not_granted"))
    c.response("192.0.2.1", 1.0, answer())
    clock.now += 2
    c.tick()
    assert (out[0]["source"], out[0]["outcome"]) == ("cache", "not_granted")


def test_identical_cache_hits_in_one_second_share_one_counted_record():
    c, out, clock = make()
    c.decision(decision())
    for i in range(5):
        c.response("192.0.2.1", 7.0 + i / 10, answer())
    c.response("192.0.2.1", 8.5, answer())
    clock.now += 2
    c.tick()
    assert [(r["source"], r["count"]) for r in out] == [("resolved", 1), ("cache", 4),
                                                        ("cache", 1)]


def test_without_dnstap_each_decision_is_its_query_record():
    out, clock = [], Clock()
    c = Collector(emit_query=out.append, clock=clock, direct=True)
    c.decision(decision())
    c.decision(decision("x.blocked.example", outcome="blocked"))
    assert [(r["qname"], r["source"], r["outcome"], r["addresses"]) for r in out] == [
        ("www.example", "resolved", "granted", ["198.51.100.1"]),
        ("x.blocked.example", "resolved", "blocked", ["198.51.100.1"])]

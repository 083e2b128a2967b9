"""The background threads' one base, and the resolver's Service with a fake conntrack injected
(no Unbound, no kernel: the RecordingBackend stands in for nftables).  The same scenario against
real nftables and a real TCP server is tests/integration/test_lifecycle.py's."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import dns.message

from nettrust_core.answer import Answer, Security, Source
from nettrust_core.config import parse_config
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.lifecycle.status import format_lifecycle, lifecycle_status
from nettrust_core.netlink.conntrack import ConntrackError
from nettrust_core.service import Service
from nettrust_core.worker import Worker


class Looping(Worker):
    name = "nettrust-test-loop"

    def __init__(self, counters=None):
        super().__init__(counters)
        self.rounds = 0

    def run(self):
        while not self.stopping.wait(0.01):
            self.rounds += 1


class Dying(Worker):
    name = "nettrust-test-dies"

    def run(self):
        raise RuntimeError("a bug")


def test_stop_ends_and_joins_the_thread():
    w = Looping()
    w.start()
    assert w.alive
    w.stop(2)
    assert not w.alive and w.died is None
    assert not any(t.name == w.name for t in threading.enumerate())


def test_a_thread_that_dies_is_logged_and_counted(caplog):
    counters = Counter()
    w = Dying(counters)
    with caplog.at_level(logging.ERROR, logger="nettrust.worker"):
        w.start()
        assert w.join(2)
    assert counters["thread_deaths"] == 1 and w.died == "RuntimeError: a bug"
    assert "nettrust-test-dies died" in caplog.text and "a bug" in caplog.text
    healthy = Counter()
    ok = Looping(healthy)                        # the control: a thread that lives is not counted
    ok.start()
    ok.stop(2)
    assert healthy["thread_deaths"] == 0 and ok.rounds >= 0


class FakeUnavailableConntrack:
    """A fake, named as such: every query fails as on a kernel without nf_conntrack."""

    REASON = "conntrack is not available (fake)"

    def __init__(self):
        self.queries = 0

    def live_destinations(self):
        self.queries += 1
        raise ConntrackError(self.REASON)

    def probe(self):
        self.queries += 1
        return self.REASON

    def close(self):
        pass


class ChainsBackend(RecordingBackend):
    def base_chains(self):
        return []


def a_answer(name: str, address: str, ttl: int = 60) -> Answer:
    text = "\n".join(["id 1", "opcode QUERY", "rcode NOERROR", "flags QR RD RA", ";QUESTION",
                      f"{name} IN A", ";ANSWER", f"{name} {ttl} IN A {address}"])
    return Answer.from_dns_message(dns.message.from_text(text), Security.INSECURE,
                                   source=Source.RESOLVED)


def test_service_with_unavailable_conntrack_says_so_and_keeps_granting(caplog):
    config = parse_config("[lifecycle]\nunauthorized = false\n")
    fake, backend = FakeUnavailableConntrack(), ChainsBackend()
    service = Service(config, backend, conntrack=fake)
    with caplog.at_level(logging.WARNING, logger="nettrust"):
        service.start()
        try:
            decision = service.authorize(a_answer("www.example", "198.51.100.9"))
            st = lifecycle_status(config, backend, conntrack=fake)
            running = {w.name for w in service.workers() if w.alive}
        finally:
            service.stop()
    assert decision.error is None and decision.written == 1
    assert [str(g.address) for b in backend.batches for g in b] == ["198.51.100.9"]
    text = "\n".join(format_lifecycle(st, config.firewall.table))
    assert "conntrack: UNAVAILABLE (conntrack is not available (fake))" in text
    assert "DNS and grants keep working" in text
    assert "conntrack unavailable" in caplog.text and fake.queries >= 2
    assert service.lifecycle.liveness.available is False
    assert "nettrust-lifecycle" in running
    assert "nettrust-adoption" in {w.name for w in service.workers()}
    assert [w.name for w in service.workers() if w.alive] == []


def test_service_uses_the_kernels_conntrack_unless_one_is_injected():
    from nettrust_core.lifecycle.conntrack import Conntrack
    config = parse_config("[lifecycle]\nunauthorized = false\n")
    assert isinstance(Service(config, RecordingBackend()).lifecycle.conntrack, Conntrack)
    off = parse_config("[lifecycle]\nliveness = false\nunauthorized = false\n")
    service = Service(off, RecordingBackend(), conntrack=FakeUnavailableConntrack())
    assert service.lifecycle.conntrack is None

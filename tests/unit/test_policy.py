"""Policy and authorizer on captured answers: what is granted, for how long, and why not."""


import dns.message
import pytest

from nettrust_core.answer import Answer, Security, Source, ChainTooLong, Record, A, CNAME
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import parse_config
from nettrust_core.errors import FirewallError
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.policy import Outcome

BASE = """
[policy]
deny = ["**.blocked.fw.test", "ads.example"]
deny_networks = ["192.0.2.0/24"]
require_dnssec = ["sec.test"]
local_zones = ["lan"]
[grants]
min_ttl = "30s"
max_ttl = "1h"
grace = "10s"
"""


def answer(text, security=Security.INSECURE, source=Source.RESOLVED):
    return Answer.from_dns_message(dns.message.from_text(text), security, source=source)


def msg(qname, qtype, *rrs, rcode="NOERROR"):
    lines = ["id 1", "opcode QUERY", f"rcode {rcode}", "flags QR RD RA", ";QUESTION",
             f"{qname} IN {qtype}", ";ANSWER", *rrs]
    return "\n".join(lines)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def auth():
    backend = RecordingBackend()
    a = Authorizer(parse_config(BASE), backend, clock=Clock())
    a.start()
    return a


def ips(batch):
    return sorted(str(g.address) for g in batch)


def test_plain_answer_is_granted_with_clamped_ttl_plus_grace(auth):
    d = auth.authorize(answer(msg("www.fw.test.", "A", "www.fw.test. 5 IN A 198.51.100.10",
                                  "www.fw.test. 5 IN A 198.51.100.11")))
    assert d.verdict.outcome is Outcome.GRANTED
    assert ips(auth.backend.batches[0]) == ["198.51.100.10", "198.51.100.11"]
    assert {g.timeout for g in auth.backend.batches[0]} == {40.0}     # clamp(5, 30, 3600) + 10
    assert auth.backend.batches[0][0].comment == "www.fw.test"


def test_ttl_above_max_is_clamped(auth):
    auth.authorize(answer(msg("big.fw.test.", "AAAA", "big.fw.test. 86400 IN AAAA 2001:db8::1")))
    assert auth.backend.batches[0][0].timeout == 3610.0


def test_cname_chain_grants_final_addresses_and_names_both_ends(auth):
    d = auth.authorize(answer(msg("c1.fw.test.", "A", "c1.fw.test. 300 IN CNAME c2.fw.test.",
                                  "c2.fw.test. 300 IN CNAME www.fw.test.",
                                  "www.fw.test. 300 IN A 198.51.100.10")))
    assert d.verdict.chain == ("c1.fw.test", "c2.fw.test", "www.fw.test")
    assert ips(auth.backend.batches[0]) == ["198.51.100.10"]
    assert auth.backend.batches[0][0].comment == "c1.fw.test>www.fw.test"


def test_cname_to_denied_name_is_blocked_and_replaced(auth):
    d = auth.authorize(answer(msg("alias.fw.test.", "A", "alias.fw.test. 300 IN CNAME www.blocked.fw.test.",
                                  "www.blocked.fw.test. 300 IN A 198.51.100.66")))
    assert d.verdict.outcome is Outcome.BLOCKED and d.verdict.replace_answer
    assert d.verdict.rule == "**.blocked.fw.test"
    assert auth.backend.batches == []


def test_records_of_names_outside_the_chain_are_never_granted(auth):
    d = auth.authorize(answer(msg("evil.fw.test.", "A", "evil.fw.test. 300 IN A 198.51.100.1",
                                  "bank.example. 300 IN A 198.51.100.99")))
    assert ips(auth.backend.batches[0]) == ["198.51.100.1"]
    assert d.verdict.outcome is Outcome.GRANTED


def test_bogus_never_grants_even_with_data(auth):
    d = auth.authorize(answer(msg("www.bad.test.", "A", "www.bad.test. 300 IN A 198.51.100.30"),
                              Security.BOGUS))
    assert d.verdict.outcome is Outcome.NOT_GRANTED and "bogus" in d.verdict.reason
    assert auth.backend.batches == []


@pytest.mark.parametrize("security,granted", [(Security.SECURE, True), (Security.INSECURE, False),
                                              (Security.INDETERMINATE, False)])
def test_require_dnssec_grants_only_secure(auth, security, granted):
    auth.authorize(answer(msg("www.ins.sec.test.", "A", "www.ins.sec.test. 300 IN A 198.51.100.40"), security))
    assert bool(auth.backend.batches) is granted


def test_sinkhole_answer_is_blocked_even_when_mixed(auth):
    d = auth.authorize(answer(msg("mixed.fw.test.", "A", "mixed.fw.test. 300 IN A 198.51.100.77",
                                  "mixed.fw.test. 300 IN A 0.0.0.0")))
    assert d.verdict.outcome is Outcome.BLOCKED and not d.verdict.replace_answer
    d = auth.authorize(answer(msg("sink.fw.test.", "AAAA", "sink.fw.test. 300 IN AAAA ::")))
    assert d.verdict.outcome is Outcome.BLOCKED
    assert auth.backend.batches == []


@pytest.mark.parametrize("addr", ["10.1.2.3", "127.0.0.5", "192.168.1.1", "169.254.1.1", "100.64.0.1"])
def test_rebinding_guard_refuses_private_answers_for_public_names(auth, addr):
    d = auth.authorize(answer(msg("rebind.fw.test.", "A", f"rebind.fw.test. 300 IN A {addr}")))
    assert d.verdict.outcome is Outcome.NOT_GRANTED and "rebinding" in d.verdict.reason
    assert auth.backend.batches == []


@pytest.mark.parametrize("addr", ["fd00::1:2:3", "::1", "fe80::1", "::ffff:10.0.0.1"])
def test_rebinding_guard_ipv6(auth, addr):
    d = auth.authorize(answer(msg("rebind.fw.test.", "AAAA", f"rebind.fw.test. 300 IN AAAA {addr}")))
    assert d.verdict.outcome is Outcome.NOT_GRANTED


def test_always_reachable_addresses_are_not_granted_again():
    a = Authorizer(parse_config('[reachable]\nhosts = ["198.51.100.9"]\nprivate = true\n'), RecordingBackend())
    d = a.authorize(answer(msg("localhost.", "A", "localhost. 300 IN A 127.0.0.1"), source=Source.LOCAL))
    assert d.verdict.outcome is Outcome.NO_ADDRESS
    d = a.authorize(answer(msg("x.fw.test.", "A", "x.fw.test. 300 IN A 198.51.100.9",
                               "x.fw.test. 300 IN A 10.0.0.1", "x.fw.test. 300 IN A 198.51.100.8")))
    assert ips(a.backend.batches[0]) == ["198.51.100.8"]


def test_local_zone_may_answer_private(auth):
    auth.authorize(answer(msg("nas.lan.", "A", "nas.lan. 300 IN A 192.168.1.20")))
    assert ips(auth.backend.batches[0]) == ["192.168.1.20"]


def test_denied_network_refused_rest_granted(auth):
    d = auth.authorize(answer(msg("x.fw.test.", "A", "x.fw.test. 300 IN A 192.0.2.7",
                                  "x.fw.test. 300 IN A 198.51.100.7")))
    assert ips(auth.backend.batches[0]) == ["198.51.100.7"]
    assert [str(a) for a, _ in d.verdict.refused] == ["192.0.2.7"]


def test_shorter_later_answer_never_shortens_a_grant(auth):
    clock = auth.clock
    auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 3600 IN A 198.51.100.5")))
    clock.now += 5
    d = auth.authorize(answer(msg("b.fw.test.", "A", "b.fw.test. 30 IN A 198.51.100.5")))
    assert len(auth.backend.batches) == 1 and d.written == 0
    clock.now += 3600
    auth.authorize(answer(msg("b.fw.test.", "A", "b.fw.test. 30 IN A 198.51.100.5")))
    assert len(auth.backend.batches) == 2


def test_later_longer_answer_extends(auth):
    auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 30 IN A 198.51.100.5")))
    auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 600 IN A 198.51.100.5")))
    assert [b[0].timeout for b in auth.backend.batches] == [40.0, 610.0]


def test_backend_failure_fails_closed_and_counts(auth):
    auth.backend.fail_with = FirewallError("boom", table="nettrust")
    d = auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 30 IN A 198.51.100.5")))
    assert d.error and "boom" in d.error
    assert auth.counters["backend_errors"] == 1
    # nothing recorded, so the next good answer is written
    auth.backend.fail_with = None
    assert auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 30 IN A 198.51.100.5"))).written == 1


def test_nxdomain_and_ptr_grant_nothing(auth):
    assert auth.authorize(answer(msg("nx.fw.test.", "A", rcode="NXDOMAIN"))).verdict.outcome is Outcome.NO_ADDRESS
    d = auth.authorize(answer(msg("10.100.51.198.in-addr.arpa.", "PTR",
                                  "10.100.51.198.in-addr.arpa. 300 IN PTR www.fw.test.")))
    assert d.verdict.outcome is Outcome.NO_ADDRESS and auth.backend.batches == []


def test_cname_loop_and_overlong_chain():
    loop = Answer("a", A, 0, Security.INSECURE, (Record("a", CNAME, 1, "b"), Record("b", CNAME, 1, "a")))
    assert loop.chain() == ("a", "b")
    long = Answer("n0", A, 0, Security.INSECURE, tuple(Record(f"n{i}", CNAME, 1, f"n{i+1}") for i in range(20)))
    with pytest.raises(ChainTooLong):
        long.chain()


def test_malformed_address_is_skipped():
    a = Answer("a", A, 0, Security.INSECURE, (Record("a", A, 1, "not-an-ip"), Record("a", A, 1, "2001:db8::1"),
                                               Record("a", A, 1, "198.51.100.1")))
    assert [str(x) for x, _ in a.addresses()] == ["198.51.100.1"]


def test_allowlist_mode():
    a = Authorizer(parse_config('[general]\nmode = "allowlist"\n[policy]\nallow = ["*.fw.test"]\n'
                                'deny = ["bad.fw.test"]\n'), RecordingBackend())
    assert a.check_query("www.fw.test").allowed
    assert not a.check_query("fw.test").allowed           # *.x is not the apex
    assert not a.check_query("a.b.fw.test").allowed       # nor deeper
    assert not a.check_query("bad.fw.test").allowed       # deny carves out
    assert not a.check_query("example.com").allowed
    d = a.authorize(answer(msg("www.fw.test.", "A", "www.fw.test. 300 IN CNAME cdn.example.",
                               "cdn.example. 300 IN A 198.51.100.3")))
    assert d.verdict.outcome is Outcome.BLOCKED and "cdn.example" in d.verdict.reason


def test_denylist_allow_is_an_exception(auth):
    a = Authorizer(parse_config('[policy]\ndeny = ["**.example"]\nallow = ["ok.example"]\n'), RecordingBackend())
    assert not a.check_query("x.example").allowed
    assert a.check_query("ok.example").allowed
    assert a.check_query("example").allowed


def test_restart_adopts_kernel_grants_and_does_not_shorten(auth):
    auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 3600 IN A 198.51.100.5")))
    fresh = Authorizer(auth.config, auth.backend, clock=Clock())
    fresh.start()
    assert fresh.adoption.wait(5) and fresh.adoption.adopted == 1 and fresh.tracker.complete
    assert fresh.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 30 IN A 198.51.100.5"))).written == 0


def test_answer_before_adoption_completes_asks_the_kernel_and_does_not_shorten(auth):
    auth.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 3600 IN A 198.51.100.5")))
    fresh = Authorizer(auth.config, auth.backend, clock=Clock())
    fresh.tracker.complete = False          # as while a restart's adoption still reads the sets
    assert fresh.authorize(answer(msg("a.fw.test.", "A", "a.fw.test. 30 IN A 198.51.100.5"))).written == 0
    assert fresh.authorize(answer(msg("b.fw.test.", "A", "b.fw.test. 30 IN A 198.51.100.6"))).written == 1
    assert fresh.counters["adoption_lookups"] == 2


def test_an_address_answered_twice_is_granted_once_with_the_longer_ttl(auth):
    """Found by the property suite: a later, shorter duplicate in the same batch would be the
    timeout the kernel keeps."""
    records = (Record("dup.fw.test", A, 300, "198.51.100.10"),
               Record("dup.fw.test", A, 60, "198.51.100.10"))
    d = auth.authorize(Answer("dup.fw.test", A, 0, Security.INSECURE, records))
    assert [(str(g.address), g.timeout) for g in d.grants] == [("198.51.100.10", 310.0)]

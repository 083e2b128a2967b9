"""The backend contract without a kernel: the registry (unknown and unavailable names), the
fan-out over several backends (every grant everywhere, fail closed with a rollback, counted per
backend, least time left on lookups), Status, and the optional Diagnostics protocol.

Every backend here is the recording fake (``nettrust_core.firewall.recording``), named as such;
the kernel's side is in tests/integration/test_backends.py."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from nettrust_core.answer import AAAA, A, Answer, Record, Security
from nettrust_core.authorizer import Authorizer
from nettrust_core.lifecycle.verify import RulesetCheck
from nettrust_core.config import ConfigError, parse_config
from nettrust_core.errors import FirewallError
from nettrust_core.firewall import registry
from nettrust_core.firewall.base import FirewallBackend, Grant, GrantedElement, Status
from nettrust_core.firewall.diagnostics import BaseChain, Diagnostics
from nettrust_core.firewall.fanout import FanOut, GrantRefused
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.ruleset import make_backend

ip = ipaddress.ip_address


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def answer(qname: str, *addrs, ttl: int = 300) -> Answer:
    recs = tuple(Record(qname, A if ip(a).version == 4 else AAAA, ttl, ip(a)) for a in addrs)
    return Answer(qname, A, 0, Security.INSECURE, recs, client="192.0.2.10")


def two(fail_second: bool = False) -> tuple[RecordingBackend, RecordingBackend, FanOut]:
    a, b = RecordingBackend(), RecordingBackend(fail_grants=fail_second)
    return a, b, FanOut([("first", a), ("second", b)])


# -- the registry ------------------------------------------------------------------------------
def test_registry_imports_the_backend_named():
    from nettrust_core.firewall.nftables import NftablesBackend
    assert registry.backend_class("nftables") is NftablesBackend
    assert registry.backend_class("recording") is RecordingBackend


def test_an_unknown_name_fails_listing_the_valid_ones():
    with pytest.raises(registry.UnknownBackend) as info:
        registry.backend_class("iptables")
    assert "'iptables'" in str(info.value) and "nftables, recording" in str(info.value)


def test_an_unavailable_backend_fails_loudly_and_never_becomes_another():
    # a registered backend whose module cannot be imported on this host (as nftables would be
    # without its Python binding), and one whose class is missing
    table = {"nftables": "nftables:NftablesBackend", "ebpf": "no_such_module:Backend",
             "broken": "recording:NoSuchClass"}
    for name, why in (("ebpf", "ModuleNotFoundError"), ("broken", "AttributeError")):
        with pytest.raises(registry.UnknownBackend) as info:
            registry.backend_class(name, table)
        text = str(info.value)
        assert f"{name!r} is not available" in text and why in text
        assert "valid names: nftables, ebpf, broken" in text
    assert registry.backend_class("nftables", table).__name__ == "NftablesBackend"   # control


def test_make_backend_builds_each_configured_backend_in_order(tmp_path):
    config = parse_config('[firewall]\nbackends = ["nftables", "recording"]\n'
                          f'[recording]\njournal = "{tmp_path}/j"\n')
    fan = make_backend(config)
    assert fan.names == ("nftables", "recording")
    assert type(fan.backends[0][1]).__name__ == "NftablesBackend"
    assert fan.backends[1][1].journal == f"{tmp_path}/j"
    fan.close()


def test_make_backend_names_the_key_when_a_backend_is_unavailable(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "recording", "no_such_module:X")
    config = parse_config('[firewall]\nbackends = ["nftables",\n  "recording"]\n', "t.toml")
    with pytest.raises(ConfigError) as info:
        make_backend(config)
    assert (info.value.key, info.value.line) == ("firewall.backends[1]", 3)
    assert "not available" in info.value.message


def test_the_old_single_backend_key_says_what_to_write():
    with pytest.raises(ConfigError) as info:
        parse_config('[firewall]\nbackend = "nftables"\n')
    assert 'backends = ["nftables"]' in str(info.value)


# -- the fan-out -------------------------------------------------------------------------------
def test_a_grant_reaches_every_backend():
    a, b, fan = two()
    fan.grant([Grant(ip("198.51.100.1"), 60, "x.example")])
    assert a.batches == b.batches == [[Grant(ip("198.51.100.1"), 60, "x.example")]]


def test_a_refusal_rolls_back_raises_naming_the_backend_and_is_counted():
    a, b, fan = two(fail_second=True)
    a.grant([Grant(ip("198.51.100.9"), 600, "older.example")])      # live before
    with pytest.raises(GrantRefused) as info:
        fan.grant([Grant(ip("198.51.100.1"), 60, "x"), Grant(ip("198.51.100.9"), 60, "x")])
    exc = info.value
    assert isinstance(exc, FirewallError) and exc.backend == "second"
    assert set(exc.revoked) == {ip("198.51.100.1"), ip("198.51.100.9")}
    assert a.list_grants() == [] and b.list_grants() == []       # nobody keeps it
    assert fan.failures == {"second": 1}
    b.fail_grants = False                                         # control: it works again
    fan.grant([Grant(ip("198.51.100.1"), 60, "x")])
    assert len(a.list_grants()) == len(b.list_grants()) == 1 and fan.failures == {"second": 1}


def test_the_first_backend_refusing_writes_nothing_anywhere():
    a, b = RecordingBackend(fail_grants=True), RecordingBackend()
    fan = FanOut([("first", a), ("second", b)])
    with pytest.raises(GrantRefused) as info:
        fan.grant([Grant(ip("198.51.100.1"), 60, "x")])
    assert info.value.revoked == () and b.batches == [] and fan.failures == {"first": 1}


def test_a_kernel_errno_survives_the_fan_out():
    # the authorizer evicts and retries on ENFILE (a full set): it must still see it
    _a, b, fan = two()
    b.fail_with = FirewallError("set full", errno=23)
    with pytest.raises(GrantRefused) as info:
        fan.grant([Grant(ip("198.51.100.1"), 60, "x")])
    assert info.value.errno == 23


def test_a_single_backend_raises_its_own_error_unchanged_and_counted():
    only = RecordingBackend(fail_with=FirewallError("nope", errno=2))
    fan = FanOut([("nftables", only)])
    with pytest.raises(FirewallError) as info:
        fan.grant([Grant(ip("198.51.100.1"), 60, "x")])
    assert type(info.value) is FirewallError and info.value.errno == 2
    assert fan.failures == {"nftables": 1}


def test_lookup_is_the_least_time_left_and_none_when_any_backend_lacks_it():
    a, b, fan = two()
    a.grant([Grant(ip("198.51.100.1"), 300, "x")])
    assert fan.lookup(ip("198.51.100.1")) is None                 # b lacks it: write again
    b.grant([Grant(ip("198.51.100.1"), 60, "x")])
    assert fan.lookup(ip("198.51.100.1")) == 60
    assert fan.lookup(ip("198.51.100.2")) is None


def test_adoption_listing_believes_a_grant_only_as_far_as_every_backend_holds_it():
    a, b, fan = two()
    a.grant([Grant(ip("198.51.100.1"), 300, "x"), Grant(ip("198.51.100.2"), 300, "y")])
    b.grant([Grant(ip("198.51.100.1"), 60, "x")])
    batches: list[list[GrantedElement]] = []
    assert fan.list_grants(batches.append, own_only=True) == []
    assert [(str(g.address), g.expires_in) for batch in batches for g in batch] == [
        ("198.51.100.1", 60)]
    assert len(fan.list_grants()) == 2                             # people's view: the first's


def test_revoke_flush_remove_try_every_backend_then_raise_the_first_error():
    class Refusing(RecordingBackend):
        def revoke(self, addresses):
            raise FirewallError("cannot")
    a, b = Refusing(), RecordingBackend()
    fan = FanOut([("a", a), ("b", b)])
    b.grant([Grant(ip("198.51.100.1"), 60, "x")])
    with pytest.raises(FirewallError, match="cannot"):
        fan.revoke([ip("198.51.100.1")])
    assert b.list_grants() == []                                   # b was still revoked


def test_duplicate_or_no_backends_are_refused():
    with pytest.raises(FirewallError, match="twice"):
        FanOut([("a", RecordingBackend()), ("a", RecordingBackend())])
    with pytest.raises(FirewallError, match="no firewall backend"):
        FanOut([])


# -- Status --------------------------------------------------------------------------------------
def test_status_is_typed_and_holds_for_every_member():
    a, b, fan = two(fail_second=True)
    fan.ensure()
    with pytest.raises(GrantRefused):
        fan.grant([Grant(ip("198.51.100.1"), 60, "x")])
    st = fan.status()
    assert isinstance(st, Status) and st.present and st.policy == "drop"
    assert [(m.backend, m.errors) for m in st.members] == [("recording", 0), ("recording", 1)]
    assert st.errors == 1 and st.to_dict()["hooks"] == ["output"]
    b.remove()                                                    # one member absent
    st = fan.status()
    assert st.present is False and [m.present for m in st.members] == [True, False]
    d = st.to_dict()
    assert json.loads(json.dumps(d))["members"][1]["present"] is False
    assert d["hooks"] == [] and "members" not in a.status().to_dict()      # not every one has it


def test_a_single_backend_status_is_its_own():
    only = RecordingBackend()
    only.ensure()
    st = FanOut([("recording", only)]).status(count_elements=False)
    assert st.members == () and st.sets == {} and st.present


def test_the_authorizer_checks_the_ruleset_through_status():
    fan = FanOut([("a", RecordingBackend()), ("b", RecordingBackend())])
    auth = Authorizer(parse_config(""), fan, clock=Clock())
    auth.start()
    auth.adoption.wait(5)
    check = RulesetCheck(auth)
    assert check.verify() is None                                 # control
    fan.backends[1][1].remove()
    assert "missing" in check.verify()                            # one member gone: rebuilt
    assert all(b.present for _n, b in fan.backends)


# -- the answer path through the fan-out ---------------------------------------------------------
def test_a_refused_grant_fails_the_answer_closed_and_counts_the_backend():
    a, b, fan = two(fail_second=True)
    auth = Authorizer(parse_config(""), fan, clock=Clock())
    auth.start()
    auth.adoption.wait(5)
    d = auth.authorize(answer("x.example", "198.51.100.1"))
    assert d.error and "'second'" in d.error and d.written == 0
    assert auth.counters["backend_errors"] == 1 and auth.counters["backend_errors_second"] == 1
    assert a.list_grants() == []                                  # rolled back
    b.fail_grants = False                                         # control: granted next time,
    d = auth.authorize(answer("x.example", "198.51.100.1"))       # the tracker forgot it
    assert d.error is None and d.written == 1
    assert len(a.list_grants()) == len(b.list_grants()) == 1


# -- the protocols ---------------------------------------------------------------------------------
def test_backends_declare_diagnostics_or_not():
    from nettrust_core.firewall.nftables import NftablesBackend
    assert issubclass(NftablesBackend, Diagnostics)
    assert not isinstance(RecordingBackend(), Diagnostics)

    class Listing(RecordingBackend):
        def base_chains(self):
            return [BaseChain("inet", "t", "output", "output", 0, "filter", "drop")]
    fan = FanOut([("a", Listing()), ("b", RecordingBackend()), ("c", Listing())])
    assert fan.base_chains() == Listing().base_chains()            # each chain once
    with pytest.raises(FirewallError, match="lists base chains"):
        FanOut([("b", RecordingBackend())]).base_chains()


def test_the_recording_fake_is_a_backend_and_journals(tmp_path):
    journal = tmp_path / "j.jsonl"
    fake: FirewallBackend = RecordingBackend(journal=str(journal))
    fake.ensure()
    fake.grant([Grant(ip("2001:db8::1"), 40.0, "x.example")])
    fake.revoke([ip("2001:db8::1")])
    lines = [json.loads(ln) for ln in journal.read_text().splitlines()]
    assert [ln["verb"] for ln in lines] == ["ensure", "grant", "revoke"]
    assert lines[1]["grants"] == [["2001:db8::1", 40.0, "x.example"]]


# -- cost on the answer path ----------------------------------------------------------------------
def test_one_backend_adds_no_measurable_cost_to_a_grant():
    class Null(RecordingBackend):
        def grant(self, grants):
            pass
    direct, g = Null(), [Grant(ip("198.51.100.1"), 60, "x")]
    fan = FanOut([("null", direct)])

    def best(call, n=20000):
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                call(g)
            runs.append((time.perf_counter() - t) / n)
        return min(runs)
    extra = best(fan.grant) - best(direct.grant)
    # a kernel write costs ~10-20 µs (bench/fw_write.py); the fan-out adds one Python call
    assert extra < 1e-6, f"{extra * 1e9:.0f} ns per grant"

"""Grant lifecycle without a kernel: codecs on hand-built messages, caps, liveness decisions,
strikes, chain warnings and exit modes (the RecordingBackend stands in for nftables)."""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections import Counter

import dns.message
import pytest

from nettrust_core.answer import Answer, Security, Source
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import parse_config
from nettrust_core.errors import FirewallError, NetTrustError
from nettrust_core.firewall.base import Grant
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.firewall.diagnostics import BaseChain
from nettrust_core.lifecycle import chains
from nettrust_core.netlink.conntrack import ConntrackError
from nettrust_core.netlink import conntrack as ct, nflog, wire as nl
from nettrust_core.lifecycle.liveness import Liveness
from nettrust_core.lifecycle.unauthorized import UnauthorizedWatcher

ip = ipaddress.ip_address


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def message(mtype: int, body: bytes) -> nl.Message:
    """A received netlink message around ``body`` (nfgenmsg included), as the kernel sends it."""
    data = nl.nlmsg(mtype, 0, 1, 0, body)
    return nl.messages(data)[0]


def ct_entry(dst: bytes, proto: int, tcp_state: int | None = None) -> nl.Message:
    ip_attr = nl.attr(ct.CTA_IP_V4_DST if len(dst) == 4 else ct.CTA_IP_V6_DST, dst)
    tup = nl.nested(ct.CTA_TUPLE_ORIG, nl.nested(ct.CTA_TUPLE_IP, ip_attr),
                    nl.nested(ct.CTA_TUPLE_PROTO, nl.attr(ct.CTA_PROTO_NUM, bytes((proto,)))))
    body = tup + nl.attr(ct.CTA_MARK, nl.be32(0x40000000))
    if tcp_state is not None:
        body += nl.nested(ct.CTA_PROTOINFO, nl.nested(
            ct.CTA_PROTOINFO_TCP, nl.attr(ct.CTA_PROTOINFO_TCP_STATE, bytes((tcp_state,)))))
    return message(ct.NFNL_SUBSYS_CTNETLINK << 8 | 0, body)


# -- conntrack codec ---------------------------------------------------------------------------
@pytest.mark.parametrize("dst,proto,state,live", [
    ("198.51.100.9", 6, 3, True), ("198.51.100.9", 6, 7, False), ("2001:db8::9", 6, 1, True),
    ("2001:db8::9", 17, None, True), ("198.51.100.9", 6, 8, False)])
def test_conntrack_entry_gives_original_destination_and_liveness(dst, proto, state, live):
    assert ct.parse_entry(ct_entry(ip(dst).packed, proto, state)) == (ip(dst).packed, live)


def test_conntrack_dump_request_carries_mark_and_mask_big_endian():
    body = ct.dump_request_body(0x40000000, 0x40000000)
    a = nl.attrs(body, 0, len(body))
    assert nl.attr_be32(body, a[ct.CTA_MARK]) == 0x40000000
    assert body[a[ct.CTA_MARK_MASK][0]:a[ct.CTA_MARK_MASK][1]] == b"\x40\0\0\0"


@pytest.mark.parametrize("cut", [3, 9, 21, 30])
def test_truncated_conntrack_entry_raises_a_nettrust_error_never_anything_else(cut):
    m = ct_entry(ip("198.51.100.9").packed, 6, 3)
    broken = nl.Message(m.type, m.flags, m.seq, m.data[:m.start + cut], m.start, m.start + cut)
    try:
        ct.parse_entry(broken)
    except NetTrustError:
        pass


# -- NFLOG codec -------------------------------------------------------------------------------
def nflog_packet(payload: bytes, uid: int | None = 1000, hook: int = 3) -> nl.Message:
    body = nl.attr(nflog.NFULA_PACKET_HDR, struct.pack("!HBx", 0x0800, hook))
    body += nl.attr(nflog.NFULA_PREFIX, b"nettrust\0")
    if uid is not None:
        body += nl.attr(nflog.NFULA_UID, nl.be32(uid)) + nl.attr(nflog.NFULA_GID, nl.be32(uid))
    body += nl.attr(nflog.NFULA_PAYLOAD, payload)
    return message(nflog.NFNL_SUBSYS_ULOG << 8 | nflog.NFULNL_MSG_PACKET, body)


def ipv4_tcp(src: str, dst: str, dport: int) -> bytes:
    header = bytes((0x45, 0)) + struct.pack("!HHHBBH", 60, 1, 0, 64, 6, 0) + ip(src).packed + ip(dst).packed
    return header + struct.pack("!HH", 40000, dport) + b"\0" * 16


def ipv6_udp(src: str, dst: str, dport: int) -> bytes:
    header = bytes((0x60, 0, 0, 0)) + struct.pack("!HBB", 8, 17, 64) + ip(src).packed + ip(dst).packed
    return header + struct.pack("!HHHH", 5353, dport, 8, 0)


def test_nflog_packet_decodes_destination_port_user_and_hook():
    a = nflog.parse_packet(nflog_packet(ipv4_tcp("192.0.2.2", "198.18.40.40", 8080)))
    assert a == nflog.Attempt("192.0.2.2", "198.18.40.40", "tcp", 8080, "output", "nettrust", 1000, 1000)
    b = nflog.parse_packet(nflog_packet(ipv6_udp("2001:db8::2", "2001:db8:118::1", 443), uid=None, hook=2))
    assert (b.destination, b.protocol, b.port, b.hook, b.uid) == ("2001:db8:118::1", "udp", 443, "forward", None)


@pytest.mark.parametrize("payload", [b"", b"\x45", b"\x60" + b"\0" * 20, b"\x75" + b"\0" * 40])
def test_nflog_unreadable_payload_is_skipped(payload):
    assert nflog.parse_packet(nflog_packet(payload)) is None


def test_nflog_bind_messages_name_the_group_big_endian():
    bind, mode = bind_msgs = nflog.bind_messages(20052)
    for m in bind_msgs:
        assert struct.unpack_from("!H", m, 18)[0] == 20052
    assert len(mode) % 4 == 0


# -- caps --------------------------------------------------------------------------------------
def test_per_name_cap_refuses_new_addresses_until_old_ones_lapse():
    clock = Clock()
    auth = authorizer("max_per_name = 2\n", clock)                  # grants last 30 s + 10 s
    granted = lambda *addrs: [str(g.address) for g in auth.authorize(
        a_answer("cdn.example", *addrs, ttl=30)).grants]
    assert granted("198.51.100.1", "198.51.100.2", "198.51.100.3") == ["198.51.100.1", "198.51.100.2"]
    clock.now += 10
    assert granted("198.51.100.1") == ["198.51.100.1"]                # held: refreshed
    clock.now += 10
    assert granted("198.51.100.3") == []                              # both still live
    clock.now += 21                                                   # .2 lapsed at 40 s
    assert granted("198.51.100.3") == ["198.51.100.3"]
    assert auth.counters["refused_per_name_cap"] == 2


def test_name_bookkeeping_is_bounded_by_the_granted_addresses():
    clock = Clock()
    auth = authorizer("max_per_name = 1\nmax_per_set = 100\n", clock)
    for i in range(1000):
        clock.now += 0.1
        auth.authorize(a_answer(f"n{i}.example", str(ipaddress.IPv4Address(0xC6120000 + i))))
    assert len(auth.tracker.per_name) <= 100
    assert len(auth.tracker.per_domain) <= 100
    assert len(auth.tracker._meta) == len(auth.tracker) <= 100


def authorizer(text: str = "", clock=None):
    config = parse_config('[grants]\nmin_ttl = "30s"\ngrace = "10s"\n' + text)
    return Authorizer(config, RecordingBackend(), clock=clock or Clock())


def a_answer(name: str, *addresses: str, ttl: int = 60) -> Answer:
    rrs = [f"{name} {ttl} IN A {a}" for a in addresses]
    text = "\n".join(["id 1", "opcode QUERY", "rcode NOERROR", "flags QR RD RA", ";QUESTION",
                      f"{name} IN A", ";ANSWER", *rrs])
    return Answer.from_dns_message(dns.message.from_text(text), Security.INSECURE, source=Source.RESOLVED)


def test_answer_beyond_the_per_name_cap_grants_only_up_to_it():
    auth = authorizer("max_per_name = 2\n")
    d = auth.authorize(a_answer("cdn.example", "198.51.100.1", "198.51.100.2", "198.51.100.3"))
    assert [str(g.address) for g in d.grants] == ["198.51.100.1", "198.51.100.2"]
    assert auth.counters["refused_per_name_cap"] == 1


def test_full_set_evicts_the_grants_nearest_to_expiry_and_stays_bounded():
    clock = Clock()
    auth = authorizer("max_per_set = 100\n", clock)
    for i in range(300):
        clock.now += 0.1
        auth.authorize(a_answer(f"n{i}.example", str(ipaddress.IPv4Address(0xC6120000 + i))))
    assert auth.tracker.count(4) <= 95
    assert len(auth.backend.list_grants()) <= 100
    assert auth.counters["evicted"] >= 200
    first_evicted = auth.backend.revoked[0]
    assert first_evicted == ipaddress.IPv4Address(0xC6120000)          # the oldest went first


# -- liveness ----------------------------------------------------------------------------------
class StubConntrack:
    """Stands in for the kernel's conntrack table (unit tests only)."""

    def __init__(self, live=None, error=None):
        self.live, self.error, self.calls = live or {}, error, 0

    def live_destinations(self):
        self.calls += 1
        if self.error:
            raise ConntrackError(self.error)
        return self.live


def liveness(auth, stub, max_lifetime=3600.0):
    return Liveness(auth, stub, Counter(), interval=10.0, max_lifetime=max_lifetime, grace=10.0)


def test_due_grant_with_live_connection_is_renewed_without_comment_others_lapse():
    clock = Clock()
    auth = authorizer(clock=clock)
    auth.authorize(a_answer("live.example", "198.51.100.1", "198.51.100.2", ttl=30))   # 40 s
    clock.now += 25                                       # 15 s left: due before the next check
    stub = StubConntrack({ip("198.51.100.1"): 2})
    lv = liveness(auth, stub)
    assert lv.check() == 1
    renewed = auth.backend.batches[-1]
    assert renewed == [Grant(ip("198.51.100.1"), 30.0, "")]
    assert auth.tracker.expires_in(ip("198.51.100.1")) == 30.0
    assert auth.tracker.expires_in(ip("198.51.100.2")) == 15.0
    assert lv.live_hosts == 1 and auth.counters["renewals"] == 1


def test_nothing_due_means_no_conntrack_query():
    auth = authorizer()
    auth.authorize(a_answer("x.example", "198.51.100.1", ttl=3600))
    stub = StubConntrack()
    liveness(auth, stub).check()
    assert stub.calls == 0


def test_renewals_stop_at_max_lifetime_after_the_last_answer():
    clock = Clock()
    auth = authorizer(clock=clock)
    auth.authorize(a_answer("x.example", "198.51.100.1", ttl=30))
    clock.now += 35
    lv = liveness(auth, StubConntrack({ip("198.51.100.1"): 1}), max_lifetime=30.0)
    assert lv.check() == 0
    assert lv.counters["renewals_refused_max_lifetime"] == 1


def test_conntrack_error_means_liveness_unknown_grants_lapse_error_counted():
    clock = Clock()
    auth = authorizer(clock=clock)
    auth.authorize(a_answer("x.example", "198.51.100.1", ttl=30))
    clock.now += 35
    lv = liveness(auth, StubConntrack(error="netlink says no"))
    assert lv.check() == 0 and lv.check() == 0
    assert lv.available is False and "netlink says no" in lv.error
    assert lv.counters["conntrack_errors"] == 2
    clock.now += 10
    assert auth.tracker.expires_in(ip("198.51.100.1")) is None


# -- unauthorized attempts and strikes ---------------------------------------------------------
class Sink:
    def __init__(self):
        self.events = []

    def event(self, kind, **fields):
        self.events.append((kind, fields))


def test_attempts_are_reported_and_strikes_counted_per_user():
    sink, counters = Sink(), Counter()
    w = UnauthorizedWatcher(1, sink, counters, strikes=3)
    attempt = nflog.Attempt("192.0.2.2", "198.18.1.1", "tcp", 443, "output", "nettrust", 0, 0)
    for t in (0.0, 1.0, 2.0, 100.0):
        w.handle(attempt, now=t)
    kinds = [k for k, _ in sink.events]
    assert kinds.count("unauthorized") == 4 and kinds.count("strike") == 1
    assert sink.events[0][1]["user"] == "root" and sink.events[0][1]["port"] == 443
    assert counters["unauthorized_tcp"] == 4 and counters["strikes"] == 1


# -- chain priority ----------------------------------------------------------------------------
def test_chain_warnings_name_nat_before_us_and_equal_priority_only():
    cs = [BaseChain("inet", "nettrust", "output", "output", 0, "filter", "drop"),
          BaseChain("ip", "docker", "OUTPUT", "output", -100, "nat", "accept"),
          BaseChain("ip", "ufw", "out", "output", 0, "filter", "accept"),
          BaseChain("inet", "early", "out", "output", -300, "filter", "accept"),
          BaseChain("ip", "fw", "input", "input", -500, "filter", "accept")]
    w = chains.warnings(cs, "nettrust", ("output",), 0, ["filter"])
    assert len(w) == 3
    assert "docker OUTPUT" in w[0] and "runs before" in w[0]
    assert "ufw out" in w[1] and "not defined" in w[1]
    assert "legacy iptables" in w[2]
    assert [c.table for c in chains.relevant(cs, ("output",))] == ["early", "docker", "nettrust", "ufw"]
    # the lifecycle describes a chain as the firewall's own type prints it, from either shape
    assert chains.describe(cs[1]) == str(cs[1]) == chains.describe(cs[1]._asdict())


# -- exit modes --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,present,grants", [("keep", True, 1), ("drop-grants", True, 0),
                                                 ("remove", False, 0)])
def test_exit_modes(mode, present, grants):
    auth = authorizer(f'[firewall]\non_exit = "{mode}"\n')
    auth.backend.present = True
    auth.authorize(a_answer("x.example", "198.51.100.1"))
    auth.stop()
    assert auth.backend.present is present
    assert len(auth.backend.list_grants()) == grants


class FullOnceBackend(RecordingBackend):
    """Refuses the next grant the way a full kernel set does (ENFILE), once."""

    full = False

    def grant(self, grants):
        if self.full:
            self.full = False
            raise FirewallError("nf_tables refused the set update: set full", errno=errno.ENFILE)
        super().grant(grants)


def test_kernel_set_full_evicts_then_writes_once_more_and_the_answer_is_granted():
    config = parse_config('[grants]\nmin_ttl = "30s"\nmax_per_set = 100\n')
    auth = Authorizer(config, FullOnceBackend(), clock=Clock())
    for i in range(10):
        auth.authorize(a_answer(f"n{i}.example", f"198.51.100.{i + 1}"))
    auth.backend.full = True
    d = auth.authorize(a_answer("late.example", "198.51.100.200"))
    assert d.error is None and d.written == 1
    assert auth.counters["set_full"] == 1 and auth.counters["evicted"] >= 5
    assert ip("198.51.100.1") in auth.backend.revoked                   # nearest expiry first

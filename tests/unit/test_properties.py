"""Property-based tests of the core over generated answers (Hypothesis).

Generated: CNAME chains (loops, dead ends, over-long), owners inside and outside the chain,
record types (A, AAAA, CNAME, DNAME, PTR, TXT, MX, unknown), TTLs 0..2**31-1, names up to 255
bytes with arbitrary label bytes, every address class (public, documentation, private,
loopback, link-local, multicast, broadcast, reserved, site-local, and IPv4 of every class
embedded in NAT64, 6to4, Teredo, SIIT, IPv4-compatible and IPv4-mapped IPv6), malformed and
mismatched address data, every DNSSEC status and source.

Invariants:
* the core never raises on any answer;
* nothing outside the chain is granted (only A/AAAA owned by the chain's final name);
* no refused address class is ever granted, judged by an oracle written from the RFCs with
  Python's own ``ipaddress`` decoders (``teredo``, ``sixtofour``, ``ipv4_mapped``);
* a grant never shortens: driven through the Authorizer with the RecordingBackend and a
  settable clock, each element the kernel would hold is only ever rewritten with a later expiry
  (unless it expired or was revoked meanwhile).

Budget: ``NETTRUST_HYPOTHESIS_EXAMPLES`` examples per test (default 200: well under a minute
in CI).  Hypothesis builds an answer in ~5 ms, so the bulk test draws a seed from Hypothesis and builds ``NETTRUST_HYPOTHESIS_BULK`` answers per example with a plain-Python
generator over the same classes (~100 µs each): that is how a run reaches millions of answers.
``NETTRUST_HYPOTHESIS_COUNT`` names a file that receives the number of answers judged.
Default budget: 12,181 answers in 23 s.  One run with ``NETTRUST_HYPOTHESIS_EXAMPLES=3000
NETTRUST_HYPOTHESIS_BULK=330`` (nice -n 15, 2 shared cores): 1,027,339 answers in 1,070 s, all
invariants held (two earlier runs found the bugs fixed in policy.py and authorizer.py).
"""

from __future__ import annotations

import atexit
import ipaddress
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from nettrust_core.answer import (A, AAAA, CNAME, DNAME, MAX_CHAIN, PTR, Answer, Record,
                                  Security, Source)
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import parse_config
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.policy import Policy

EXAMPLES = int(os.environ.get("NETTRUST_HYPOTHESIS_EXAMPLES", "200"))
BULK = int(os.environ.get("NETTRUST_HYPOTHESIS_BULK", "50"))
settings.register_profile("nettrust", max_examples=EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), derandomize=False)
settings.load_profile("nettrust")

CONFIG = parse_config("""
[policy]
deny = ["**.blocked.test", "evil.example"]
require_dnssec = ["secure.test"]
local_zones = ["lan"]
[grants]
min_ttl = "30s"
max_ttl = "1h"
grace = "10s"
max_per_name = 8
max_per_domain = 24
max_per_set = 64
""")

ANSWERS = [0]


def _write_count() -> None:
    path = os.environ.get("NETTRUST_HYPOTHESIS_COUNT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {ANSWERS[0]}\n")


atexit.register(_write_count)

# -- names ------------------------------------------------------------------------------------
FIXED_NAMES = ["www.example.com", "cdn.example.net", "x.blocked.test", "evil.example",
               "a.secure.test", "printer.lan", "", "com", "a.b.c.d.e.f.example.co.uk"]


@st.composite
def names(draw) -> str:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(FIXED_NAMES))
    labels, size = [], 0
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            raw = draw(st.binary(min_size=1, max_size=63))
            label = raw.decode("latin-1")                  # every byte value, one char each
        else:
            label = draw(st.text(min_size=1, max_size=20))  # any code point, "." included
        if size + len(label.encode("utf-8", "surrogatepass")) + 1 > 255:
            break
        labels.append(label)
        size += len(label.encode("utf-8", "surrogatepass")) + 1
    suffix = draw(st.sampled_from(["", "", ".example.com", ".example.com", ".blocked.test", ".lan",
                                   ".secure.test"]))
    return ".".join(labels) + suffix


# -- addresses --------------------------------------------------------------------------------
V4_RANGES = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
             "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
             "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
             "255.255.255.255/32", "8.0.0.0/8", "1.1.1.0/24"]
V6_RANGES = ["::/128", "::1/128", "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96",
             "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:2::/48", "2001:10::/28",
             "2001:20::/28", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7",
             "fe80::/10", "fec0::/10", "ff00::/8", "2600::/12", "::/8"]


def in_range(cidr: str):
    net = ipaddress.ip_network(cidr)
    host_bits = net.max_prefixlen - net.prefixlen
    return st.integers(0, (1 << host_bits) - 1).map(
        lambda h: ipaddress.ip_address(int(net.network_address) + h))


v4 = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
               st.sampled_from(V4_RANGES).flatmap(in_range))


@st.composite
def embedded(draw) -> ipaddress.IPv6Address:
    inner = int(draw(v4))
    fmt = draw(st.sampled_from(["nat64", "siit", "compat", "mapped", "6to4", "teredo"]))
    if fmt == "nat64":
        return ipaddress.IPv6Address((0x64FF9B << 96) | inner)
    if fmt == "siit":
        return ipaddress.IPv6Address((0xFFFF0000 << 32) | inner)
    if fmt == "compat":
        return ipaddress.IPv6Address(inner)
    if fmt == "mapped":
        return ipaddress.IPv6Address((0xFFFF << 32) | inner)
    if fmt == "6to4":
        return ipaddress.IPv6Address((0x2002 << 112) | (inner << 80) | draw(st.integers(0, 2**80 - 1)))
    server = int(draw(v4)) if draw(st.booleans()) else 0xC6336401
    return ipaddress.IPv6Address((0x20010000 << 96) | (server << 64)
                                 | (draw(st.integers(0, 2**32 - 1)) << 32) | (inner ^ 0xFFFFFFFF))


v6 = st.one_of(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
               st.sampled_from(V6_RANGES).flatmap(in_range), embedded())
addresses = st.one_of(v4, v6)


# -- answers ----------------------------------------------------------------------------------
ttls = st.one_of(st.integers(0, 2**31 - 1), st.sampled_from([0, 1, 29, 30, 300, 3600, 86400]))


@st.composite
def records(draw, chain: list[str], others: list[str]) -> Record:
    owner = chain[-1] if draw(st.booleans()) else draw(st.sampled_from(chain + others))
    rtype = draw(st.sampled_from([A, AAAA, A, AAAA, A, AAAA, CNAME, DNAME, PTR, 16, 15, 65535]))
    ttl = draw(ttls)
    if rtype in (A, AAAA):
        addr = draw(addresses)
        kind = draw(st.integers(0, 9))
        if kind == 0:
            data = draw(st.text(max_size=45))               # malformed text
        elif kind < 4:
            data = str(addr)                                 # text, as dnspython gives it
        else:
            data = addr                                      # decoded from wire bytes
        return Record(owner, rtype, ttl, data)
    if rtype in (CNAME, DNAME, PTR):
        return Record(owner, rtype, ttl, draw(st.sampled_from(chain + others)))
    return Record(owner, rtype, ttl, draw(st.text(max_size=30)))


@st.composite
def answers(draw) -> Answer:
    length = draw(st.one_of(st.integers(1, 3), st.integers(1, MAX_CHAIN + 3)))
    chain = [draw(names()) for _ in range(length)]
    others = [draw(names()) for _ in range(draw(st.integers(0, 3)))]
    recs = [Record(chain[i], CNAME, draw(ttls), chain[i + 1]) for i in range(length - 1)]
    recs += draw(st.lists(records(chain, others), max_size=24))
    recs = draw(st.permutations(recs))
    return Answer(chain[0], draw(st.sampled_from([A, AAAA, CNAME, 16, 255])),
                  draw(st.sampled_from([0, 0, 0, 2, 3, 5])),
                  draw(st.sampled_from([Security.INSECURE, Security.SECURE, *Security])),
                  tuple(recs), client=draw(st.sampled_from([None, "127.0.0.1", "192.0.2.9", "::1"])),
                  source=draw(st.sampled_from(list(Source))))


# -- oracles ----------------------------------------------------------------------------------
def reference_chain(answer: Answer) -> list[str] | None:
    """The chain as RFC 1034 §3.6.2 reads it: the first CNAME owned by each link; None when
    longer than MAX_CHAIN links (nothing may be granted then)."""
    first: dict[str, object] = {}
    for r in answer.records:
        if r.rtype == CNAME and r.owner not in first:
            first[r.owner] = r.data
    chain = [answer.qname]
    while chain[-1] in first and first[chain[-1]] not in chain:
        if len(chain) > MAX_CHAIN:
            return None
        chain.append(first[chain[-1]])
    return chain


NEVER_V4 = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",
                                              "192.88.99.0/24")]
LOCAL_V4 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                              "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8",
                                              "192.0.0.0/24")]


def v4_class(a: ipaddress.IPv4Address) -> str:
    if a.is_multicast or a.is_reserved or any(a in n for n in NEVER_V4):
        return "never"
    if a.is_loopback or a.is_link_local or any(a in n for n in LOCAL_V4):
        return "local"
    return "public"


def v6_class(a: ipaddress.IPv6Address) -> str:
    if a.is_multicast or a.is_site_local or any(a in ipaddress.ip_network(n) for n in (
            "100::/64", "2001:10::/28", "2001:20::/28", "5f00::/16")):
        return "never"
    if a.is_loopback or a.is_link_local or a in ipaddress.ip_network("fc00::/7"):
        return "local"
    inner: list[ipaddress.IPv4Address] = []
    value = int(a)
    if a.ipv4_mapped is not None:
        inner = [a.ipv4_mapped]
    elif value >> 32 in (0, 0xFFFF0000) or value >> 32 == 0x64FF9B << 64:
        inner = [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    elif a.sixtofour is not None:
        inner = [a.sixtofour]
    elif a.teredo is not None:
        inner = list(a.teredo)
    elif a in ipaddress.ip_network("64:ff9b:1::/48"):
        return "local"                              # unconfigured local-use NAT64: refused
    elif value >> 120 == 0:
        return "never"                              # the rest of the reserved ::/8
    classes = [v4_class(i) for i in inner]
    return "never" if "never" in classes else "local" if "local" in classes else "public"


def address_class(a) -> str:
    return v4_class(a) if a.version == 4 else v6_class(a)


class Harness:
    """An Authorizer on the RecordingBackend with a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.backend = RecordingBackend()
        self.auth = Authorizer(CONFIG, self.backend, clock=lambda: self.now)
        self.auth.start()
        self.auth.adoption.wait(5)
        #: address -> absolute expiry the kernel would hold now (the fake keeps no clock).
        self.kernel: dict = {}
        self.seen_batches = 0
        self.seen_revoked = 0

    def authorize(self, answer: Answer):
        ANSWERS[0] += 1
        decision = self.auth.authorize(answer)
        for a in self.backend.revoked[self.seen_revoked:]:
            self.kernel.pop(a, None)
        self.seen_revoked = len(self.backend.revoked)
        for batch in self.backend.batches[self.seen_batches:]:
            for g in batch:
                old = self.kernel.get(g.address)
                new = self.now + g.timeout
                assert old is None or old <= self.now or new >= old, \
                    f"grant of {g.address} shortened: {old - self.now:.0f}s left, rewritten to {g.timeout:.0f}s"
                self.kernel[g.address] = new
        self.seen_batches = len(self.backend.batches)
        return decision


def check_decision(answer: Answer, decision) -> None:
    chain = reference_chain(answer)
    granted = [g.address for g in decision.grants]
    if chain is None:
        assert not granted, "a chain longer than MAX_CHAIN granted something"
        return
    assert tuple(chain) == decision.verdict.chain or not granted
    final = chain[-1]
    owned = set()
    for r in answer.records:
        if r.owner == final and r.rtype in (A, AAAA):
            try:
                owned.add(ipaddress.ip_address(r.data) if isinstance(r.data, str) else r.data)
            except ValueError:
                pass
    for a in granted:
        assert a in owned, f"{a} granted but not owned by the chain's final name {final!r}"
        kind = address_class(a)
        assert kind != "never", f"{a} ({kind}) granted"
        if answer.source is not Source.LOCAL and not final.endswith(".lan") and final != "lan":
            assert kind == "public", f"{a} ({kind}) granted for a public name"
    if granted:
        assert answer.security is not Security.BOGUS
        for name in chain:
            assert not name.endswith("blocked.test") and name != "evil.example"


# -- the properties ---------------------------------------------------------------------------
POLICY = Policy(CONFIG)


@given(answers())
def test_policy_never_raises_and_grants_only_the_chain_and_allowed_classes(answer):
    ANSWERS[0] += 1
    verdict = POLICY.judge(answer)                   # must not raise
    chain = reference_chain(answer)
    if chain is None:
        assert not verdict.grants
        return
    final = chain[-1]
    for addr, _ttl in verdict.grants:
        assert any(r.owner == final and r.rtype in (A, AAAA) for r in answer.records)
        assert address_class(addr) != "never", addr
        if answer.source is not Source.LOCAL and not final.endswith(".lan") and final != "lan":
            assert address_class(addr) == "public", addr


@given(answers())
def test_authorizer_never_raises_on_one_answer(answer):
    h = Harness()
    check_decision(answer, h.authorize(answer))


@given(st.lists(st.tuples(answers(), st.floats(0, 600, allow_nan=False)), min_size=1,
                max_size=30))
def test_grants_never_shorten_over_a_sequence_of_answers(steps):
    h = Harness()
    for answer, advance in steps:
        h.now += advance
        check_decision(answer, h.authorize(answer))
    assert len(h.backend.list_grants()) <= CONFIG.grants.max_per_set * 2


@given(st.lists(st.tuples(st.sampled_from(["a.example.com", "b.example.com", "c.example.org"]),
                          st.lists(st.sampled_from(["198.51.100.1", "198.51.100.2", "2001:db8::1"]),
                                   min_size=1, max_size=3),
                          ttls, st.floats(0, 120, allow_nan=False)), min_size=1, max_size=40))
def test_a_few_addresses_answered_again_and_again_never_shorten(steps):
    """Many rewrites of the same elements: where shortening would show."""
    h = Harness()
    for name, addrs, ttl, advance in steps:
        h.now += advance
        recs = tuple(Record(name, A if ":" not in a else AAAA, ttl, ipaddress.ip_address(a))
                     for a in addrs)
        h.authorize(Answer(name, A, 0, Security.INSECURE, recs, client="192.0.2.9"))


# -- bulk: many answers per example from a Hypothesis-seeded generator --------------------------
_RANGES = [ipaddress.ip_network(n) for n in V4_RANGES + V6_RANGES]
_RTYPES = [A, AAAA, A, AAAA, A, AAAA, CNAME, DNAME, PTR, 16, 15, 65535]


def _fast_address(rnd):
    pick = rnd.random()
    if pick < 0.15:
        return ipaddress.IPv4Address(rnd.getrandbits(32))
    if pick < 0.25:
        return ipaddress.IPv6Address(rnd.getrandbits(128))
    if pick < 0.45:                                          # an IPv4 inside a translation format
        inner = int(_fast_address_v4(rnd))
        fmt = rnd.randrange(6)
        value = [(0x64FF9B << 96) | inner, (0xFFFF0000 << 32) | inner, inner,
                 (0xFFFF << 32) | inner, (0x2002 << 112) | (inner << 80) | rnd.getrandbits(80),
                 (0x20010000 << 96) | (rnd.getrandbits(32) << 64) | (rnd.getrandbits(32) << 32)
                 | (inner ^ 0xFFFFFFFF)][fmt]
        return ipaddress.IPv6Address(value)
    net = rnd.choice(_RANGES)
    return net.network_address + rnd.getrandbits(net.max_prefixlen - net.prefixlen)


def _fast_address_v4(rnd):
    net = rnd.choice(_RANGES[:len(V4_RANGES)])
    return net.network_address + rnd.getrandbits(32 - net.prefixlen)


def _fast_name(rnd) -> str:
    if rnd.random() < 0.3:
        return rnd.choice(FIXED_NAMES)
    labels, size = [], 0
    for _ in range(rnd.randint(1, 8)):
        n = rnd.randint(1, 63)
        if rnd.random() < 0.5:
            label = bytes(rnd.getrandbits(8) for _ in range(n)).decode("latin-1")
        else:
            label = "".join(chr(rnd.choice((rnd.randrange(0x20, 0x7F), rnd.randrange(0x110000))))
                            for _ in range(min(n, 20)))
        size += len(label.encode("utf-8", "surrogatepass")) + 1
        if size > 255:
            break
        labels.append(label)
    return ".".join(labels) + rnd.choice(["", "", ".example.com", ".example.com", ".blocked.test",
                                          ".lan", ".secure.test"])


def _fast_answer(rnd) -> Answer:
    length = rnd.randint(1, 3) if rnd.random() < 0.5 else rnd.randint(1, MAX_CHAIN + 3)
    chain = [_fast_name(rnd) for _ in range(length)]
    others = [_fast_name(rnd) for _ in range(rnd.randint(0, 3))]
    pool = chain + others
    ttl = lambda: rnd.choice((rnd.randrange(2**31), 0, 1, 30, 300, 3600, 86400))
    recs = [Record(chain[i], CNAME, ttl(), chain[i + 1]) for i in range(length - 1)]
    for _ in range(rnd.randint(0, 24)):
        owner = chain[-1] if rnd.random() < 0.5 else rnd.choice(pool)
        rtype = rnd.choice(_RTYPES)
        if rtype in (A, AAAA):
            addr = _fast_address(rnd)
            kind = rnd.randrange(10)
            data = ("".join(chr(rnd.randrange(0x20, 0x7F)) for _ in range(rnd.randint(0, 40)))
                    if kind == 0 else str(addr) if kind < 4 else addr)
        elif rtype in (CNAME, DNAME, PTR):
            data = rnd.choice(pool)
        else:
            data = "v=spf1 -all"
        recs.append(Record(owner, rtype, ttl(), data))
    rnd.shuffle(recs)
    return Answer(chain[0], rnd.choice((A, AAAA, CNAME, 16, 255)), rnd.choice((0, 0, 0, 2, 3, 5)),
                  rnd.choice((Security.INSECURE, Security.SECURE, *Security)), tuple(recs),
                  client=rnd.choice((None, "127.0.0.1", "192.0.2.9", "::1")),
                  source=rnd.choice(list(Source)))


@given(st.integers(0, 2**64 - 1))
def test_bulk_random_answers_keep_every_invariant(seed):
    """A seed drawn by Hypothesis (printed when falsified) drives ``BULK`` answers."""
    import random
    rnd = random.Random(seed)
    h = Harness()
    for _ in range(BULK):
        h.now += rnd.choice((0.0, 0.5, 5.0, 60.0, 600.0))
        answer = _fast_answer(rnd)
        check_decision(answer, h.authorize(answer))

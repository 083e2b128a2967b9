"""The shared tracker's bulk read-back (nettrust_core.fleet.tracker_redis.parse_hosts and
GrantTracker.load) against the slow, obvious way: recording the same grants one by one."""

from __future__ import annotations

import random
from ipaddress import ip_address

from nettrust_core.fleet.tracker_redis import TrackerWriter, parse_hosts
from nettrust_core.firewall.base import Grant
from nettrust_core.grants.tracker import GrantTracker, Owner
from nettrust_core.networks import address_key, key_address
from nettrust_core.registrable import registrable_domain

WALL, CLOCK = 1_000_000.0, 50.0


def _owner(qname: str) -> Owner:
    return Owner(qname, registrable_domain(qname))


def _tracker() -> GrantTracker:
    return GrantTracker(clock=lambda: CLOCK, owner_of=_owner, prune_at=1 << 30)


def _hash_fields(rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    """The host hashes as HGETALL returns them (packed addresses, and text ones as written
    before): a few thousand grants of ~900 names under shared, co.uk-style and single-name
    domains, IPv4 and IPv6, values with the registrable domain and without it (as written before
    it was stored), some expired, a few not parsing, addresses in both hashes, and one address
    spelt twice."""
    packed: list[bytes] = []
    text: list[bytes] = []
    for i in range(900):
        qname = rng.choice([f"n{i}.shared.example", f"www.s{i % 40}.co.uk", f"solo{i}.test",
                            f"cdn{i}.Big.example"])
        with_domain = i % 3 != 0
        for _ in range(rng.randint(1, 7)):
            k = rng.randrange(1 << 14)
            address = ip_address(f"198.51.{k >> 8}.{k & 255}" if rng.random() < 0.7
                                 else f"2001:db8::{k:x}")
            expires = WALL + rng.uniform(-30, 3600)             # about 1 % already expired
            tail = f"{qname} {registrable_domain(qname)}" if with_domain else qname
            if rng.random() < 0.8:
                packed += [address.packed, f"{expires:.3f} {tail}".encode()]
            else:
                text += [str(address).encode(), f"{expires:.3f} {tail}".encode()]
    packed += [bytes(5), b"1000300.000 x.example", bytes([198, 51, 200, 1]), b"soon b.example"]
    text += [b"2001:db8::1", b"1000500.000 solo1.test", b"2001:DB8::1", b"1000900.000 n2.test",
             b"not-an-address", b"1000300.000 x.example", b"198.51.200.2", b"soon b.example"]
    return packed, text


def test_load_gives_what_recording_the_grants_one_by_one_gives():
    rng = random.Random(19)
    packed, text = _hash_fields(rng)
    # Answered while the read-back ran: some of the same addresses, later and earlier, charged to
    # other names and to a client (the per-client budget).
    meanwhile = []
    for k in range(0, 1 << 14, 97):
        address = ip_address(f"198.51.{k >> 8}.{k & 255}" if k % 2 else f"2001:db8::{k:x}")
        owner = Owner(f"live{k % 7}.example", registrable_domain(f"live{k % 7}.example"),
                      "10.0.0.2" if k % 3 else "")
        meanwhile.append((address, CLOCK + rng.uniform(1, 4000), owner))
    bulk, one_by_one = _tracker(), _tracker()
    for t in (bulk, one_by_one):
        for address, expires_at, owner in meanwhile:
            t.record(address, expires_at, owner=owner)

    loaded, dead, dead_text = parse_hosts(list(packed), WALL, CLOCK, bulk.owner_for, list(text))
    for version, incoming, owners in loaded:
        bulk.load(version, incoming, owners)

    refused = {"packed": 0, "text": 0}
    for layout, flat in (("packed", packed), ("text", text)):     # packed first, as read
        for field, value in zip(flat[0::2], flat[1::2], strict=True):
            at, _, tail = value.decode().partition(" ")
            try:
                address = ip_address(field if layout == "packed" else field.decode())
                expires = float(at)
            except ValueError:
                refused[layout] += 1
                continue
            if expires <= WALL:
                refused[layout] += 1
                continue
            expires_at = expires - WALL + CLOCK
            known = one_by_one.expiry(address)
            if known is None or known < expires_at:      # the later expiry wins
                one_by_one.record(address, expires_at, answered=False,
                                  owner=_owner(tail.split(" ")[0]))
    assert (len(dead), len(dead_text)) == (refused["packed"], refused["text"])
    assert min(refused.values()) > 2
    assert len(bulk) == len(one_by_one) > 3000
    assert dict(bulk.items()) == dict(one_by_one.items())
    assert (bulk.count(4), bulk.count(6)) == (one_by_one.count(4), one_by_one.count(6))
    assert bulk.per_name == one_by_one.per_name
    assert bulk.per_domain == one_by_one.per_domain
    assert bulk.per_client == one_by_one.per_client
    assert bulk.per_domain["shared.example"] > 100 and bulk.per_client["10.0.0.2"] > 50

    def owners(t):
        return {a: (e.owner.name, e.owner.domain, e.owner.client) for a, e in t._meta.items()}
    assert owners(bulk) == owners(one_by_one)
    # The control: a read-back that let a meanwhile answer's owner go would differ.
    a, _t, owner = meanwhile[1]
    assert owners(bulk)[address_key(a)] == (owner.name, owner.domain, owner.client)


def test_the_writer_stores_the_registrable_domain_and_both_value_forms_read_back():
    from collections import Counter
    writer = TrackerWriter(lambda: None, "k", queue_size=10, counters=Counter())
    owner = Owner("edge.cdn.example", "example.co.uk", "10.0.0.2", "www.example.co.uk")
    writer.granted([Grant(ip_address("198.51.100.1"), 300.0, "x")], owner)
    writer.granted([Grant(ip_address("2001:db8::1"), 300.0, "x")], owner)
    pending: dict[bytes, str] = {}
    writer._drain(pending)
    assert set(pending) == {bytes([198, 51, 100, 1]), bytes.fromhex("20010db8" + "0" * 23 + "1")}
    stamp, name, domain = pending[bytes([198, 51, 100, 1])].split(" ")
    assert (name, domain) == ("www.example.co.uk", "example.co.uk") and float(stamp) > 0
    calls: list[str] = []

    def owner_of(qname: str) -> Owner:
        calls.append(qname)
        return _owner(qname)
    raw = [bytes([198, 51, 100, 1]), f"{WALL + 60} www.example.co.uk example.co.uk".encode(),
           bytes([198, 51, 100, 2]), f"{WALL + 60} old.example.co.uk".encode(),     # older form
           bytes([198, 51, 100, 3]), f"{WALL + 60} a b.example b.example".encode()]  # no domain
    (version, _incoming, owners), = parse_hosts(raw, WALL, CLOCK, owner_of)[0]
    got = {str(key_address(k)): (o.name, o.domain) for k, o in owners.items()}
    assert got == {"198.51.100.1": ("www.example.co.uk", "example.co.uk"),
                   "198.51.100.2": ("old.example.co.uk", "example.co.uk"),
                   "198.51.100.3": ("a b.example b.example",
                                    registrable_domain("a b.example b.example"))}
    assert sorted(calls) == ["a b.example b.example", "old.example.co.uk"]    # not the first


def test_a_read_back_the_kernel_no_longer_backs_is_refused():
    """nettrust_core.fleet.tracker_check against an in-memory backend (RecordingBackend, which
    answers lookups from what it was granted): all granted -> trusted; one sampled grant missing
    -> refused (the writer deletes what the tracker forgets, so none is missing normally); the
    sets recreated -> refused, every sample missing."""
    from nettrust_core.firewall.recording import RecordingBackend
    from nettrust_core.fleet.tracker_check import disagreement

    def read_back():
        keys = [address_key(ip_address(f"198.51.100.{i}")) for i in range(1, 101)]
        return [(4, dict.fromkeys(keys, CLOCK + 600.0), dict.fromkeys(keys, _owner("a.example")))]
    backend = RecordingBackend()
    backend.grant([Grant(ip_address(f"198.51.100.{i}"), 600.0, "x") for i in range(1, 101)])
    live = read_back()
    assert disagreement(backend, live, CLOCK, random.Random(1)) is None and len(live[0][1]) == 100

    backend = RecordingBackend()                        # ten missing: a sample meets one
    backend.grant([Grant(ip_address(f"198.51.100.{i}"), 600.0, "x") for i in range(11, 101)])
    refused = [disagreement(backend, read_back(), CLOCK, random.Random(seed)) for seed in range(20)]
    assert any(why is not None and " of 16 sampled grants are missing" in why for why in refused)
    assert all(why is None or not why.startswith("16 of") for why in refused)

    empty = RecordingBackend()                          # the sets were recreated
    why = disagreement(empty, read_back(), CLOCK, random.Random(3))
    assert why is not None and why.startswith("16 of 16 sampled grants are missing")
    # Grants about to expire are no evidence either way.
    soon = [(4, {k: CLOCK + 1.0 for k in read_back()[0][1]}, read_back()[0][2])]
    assert disagreement(empty, soon, CLOCK) is None


def test_the_writer_deletes_what_the_tracker_forgets_in_order_with_what_it_grants():
    from collections import Counter
    writer = TrackerWriter(lambda: None, "k", queue_size=10, counters=Counter())
    tracker = GrantTracker(clock=lambda: CLOCK)
    tracker.on_forget = writer.forgot
    a, b = ip_address("198.51.100.1"), ip_address("2001:db8::2")
    owner = Owner("a.example", "a.example")
    tracker.record(a, CLOCK + 60, owner=owner)
    tracker.record(b, CLOCK + 60, owner=owner)
    writer.granted([Grant(a, 60.0, "x"), Grant(b, 60.0, "x")], owner)
    tracker.forget([a, ip_address("192.0.2.9")])        # one known, one never granted
    writer.granted([Grant(b, 90.0, "x")], owner)        # granted again after ...
    tracker.forget([b])                                 # ... and forgotten last: deleted
    pending: dict[bytes, str | None] = {}
    writer._drain(pending)
    assert pending == {a.packed: None, b.packed: None}
    writer.granted([Grant(a, 60.0, "x")], owner)        # forgotten, then granted: written
    writer._drain(pending)
    assert pending[a.packed] is not None and pending[b.packed] is None

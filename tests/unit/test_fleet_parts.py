"""The fleet's pure parts: stream entries (hostile ones refused), the [fleet] keys (plaintext
refused off loopback), the configuration document (an invalid one refused), and the follower's
apply step (never shortens) over the recording fake backend (a FAKE: programs nothing)."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from nettrust_core.config import parse_config
from nettrust_core.errors import ConfigError
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.fleet import config_doc
from nettrust_core.fleet.config_doc import BadDocument
from nettrust_core.fleet.entries import BadEntry, GrantEntry, decode, encode
from nettrust_core.fleet.follower import Follower

A = ipaddress.ip_address


def test_an_entry_round_trips():
    e = GrantEntry((A("198.51.100.7"), A("2001:db8::7")), (100.5, 200.25), "a.example",
                   "10.0.0.2", "m1", 7, "f1", 99.0)
    fields = {k.encode(): v.encode() for k, v in encode(e).items()}
    assert decode(fields) == e


@pytest.mark.parametrize("fields", [
    {b"k": b"g", b"a": b"198.51.100.7", b"e": b""},                    # no expiry
    {b"k": b"g", b"a": b"198.51.100.7 1.2.3.4", b"e": b"1"},            # counts differ
    {b"k": b"g", b"a": b"not-an-address", b"e": b"1"},
    {b"k": b"g", b"a": b"198.51.100.7", b"e": b"nan"},
    {b"k": b"g", b"a": b"198.51.100.7", b"e": b"inf"},
    {b"k": b"g", b"a": b"198.51.100.7", b"e": b"1", b"s": b"x"},
    {b"k": b"g", b"a": "198.51.100.\u0661".encode(), b"e": b"1"},        # not ASCII
    {b"k": b"z"},
    {b"k": b"c", b"v": b"x"},
])
def test_a_hostile_entry_is_refused(fields):
    with pytest.raises(BadEntry):
        decode(fields)


FLEET = '[fleet]\nrole = "follower"\nnode = "f1"\n'


@pytest.mark.parametrize("url, plaintext, ok", [
    ("rediss://192.0.2.2:6390/0", False, True),
    ("redis://127.0.0.1:6379/0", True, True),
    ("redis://127.0.0.1:6379/0", False, False),          # plaintext needs allow_plaintext
    ("redis://192.0.2.2:6379/0", True, False),           # and loopback
    ("http://192.0.2.2/", True, False),
])
def test_plaintext_redis_only_on_loopback_and_only_when_asked(url, plaintext, ok):
    tls = ('ca_file = "/c/ca.crt"\ncert_file = "/c/f1.crt"\nkey_file = "/c/f1.key"\n'
           if url.startswith("rediss") else "")
    text = FLEET + f'redis_url = "{url}"\nallow_plaintext = {str(plaintext).lower()}\n' + tls
    if ok:
        parse_config(text)
    else:
        with pytest.raises(ConfigError, match="redis_url"):
            parse_config(text)


def test_rediss_needs_the_client_certificate():
    with pytest.raises(ConfigError, match="cert_file"):
        parse_config(FLEET + 'redis_url = "rediss://192.0.2.2:6390/0"\nca_file = "/c/ca.crt"\n')


def test_follower_networks_map_clients():
    cfg = parse_config('[fleet]\nfollowers = ["gw1=10.1.0.0/24", "gw2=2001:db8:1::/64"]\n')
    assert cfg.fleet.follower_of("10.1.0.9") == "gw1"
    assert cfg.fleet.follower_of("2001:db8:1::5") == "gw2"
    assert cfg.fleet.follower_of("10.2.0.1") is None
    with pytest.raises(ConfigError, match="NAME=NETWORK"):
        parse_config('[fleet]\nfollowers = ["10.1.0.0/24"]\n')


def _document(config, version=1):
    body = config_doc.body_of(config)
    return json.dumps({"version": version, "digest": config_doc._digest(body), "body": body})


def test_a_valid_document_validates_and_an_invalid_one_is_refused():
    config = parse_config('[policy]\ndeny = ["bad.example"]\ndeny_networks = ["192.0.2.0/24"]\n')
    doc = config_doc.validate(_document(config, 3))
    assert doc.version == 3 and doc.deny == ("bad.example",)
    assert doc.denies(A("192.0.2.9")) and not doc.denies(A("198.51.100.1"))
    good = json.loads(_document(config))
    for broken in ("not json", json.dumps({**good, "digest": "0" * 64}),
                   json.dumps({**good, "version": 0}), json.dumps({**good, "version": True}),
                   json.dumps({**good, "body": []}), None):
        with pytest.raises(BadDocument):
            config_doc.validate(broken)
    body = dict(good["body"], deny_networks=["not a network"])
    with pytest.raises(BadDocument, match="deny_networks"):
        config_doc.validate(json.dumps({"version": 2, "digest": config_doc._digest(body),
                                        "body": body}))


def _follower():
    config = parse_config('[firewall]\nbackends = ["recording"]\n' + FLEET
                          + 'redis_url = "redis://127.0.0.1:1/0"\nallow_plaintext = true\n')
    backend = RecordingBackend()
    return Follower(config, backend, connect=lambda: None), backend


def test_follower_apply_never_shortens_and_skips_expired_entries():
    follower, backend = _follower()
    now = time.time()
    ip = A("198.51.100.7")
    assert follower.apply(GrantEntry((ip,), (now + 300,), "a.example")) == 1
    assert follower.apply(GrantEntry((ip,), (now + 5,), "a.example")) == 0     # replayed, shorter
    assert follower.apply(GrantEntry((ip,), (now - 5,), "a.example")) == 0     # expired
    assert follower.counters["expired_entries"] == 1
    left = follower.tracker.expires_in(ip)
    assert left is not None and left > 290
    assert len(backend.batches) == 1 and backend.batches[0][0].timeout > 290


def test_a_kernel_refusal_fails_that_entry_closed_and_the_follower_goes_on():
    """FAKE backend failure (RecordingBackend.fail_grants): the entry grants nothing, is not
    acknowledged, is counted; the thread does not die and the next entry is applied once the
    kernel accepts again; the cursor moves past both."""
    follower, backend = _follower()
    now = time.time()
    sent = []

    class Pipe:
        def xadd(self, key, fields, **kw):
            sent.append((key, fields["s"]))

        def set(self, key, value):
            sent.append((key, value))

        def execute(self):
            return []

    client = type("FakeRedis", (), {"pipeline": lambda self, transaction: Pipe()})()
    from nettrust_core.fleet.entries import encode
    first = GrantEntry((A("198.51.100.8"),), (now + 300,), "a.example", origin="m1", seq=1,
                       ack_by=follower.node)
    backend.fail_grants = True
    follower.handle(client, [(b"1-0", encode(first))])
    assert follower.counters["backend_errors"] == 1
    assert follower.tracker.expires_in(A("198.51.100.8")) is None      # nothing believed granted
    assert not [s for s in sent if "ack" in s[0]] and follower.cursor == "1-0"
    backend.fail_grants = False
    second = GrantEntry((A("198.51.100.9"),), (now + 300,), "b.example", origin="m1", seq=2,
                        ack_by=follower.node)
    follower.handle(client, [(b"2-0", encode(second))])
    assert follower.tracker.expires_in(A("198.51.100.9")) is not None
    assert [s for s in sent if "ack" in s[0]] and follower.cursor == "2-0"


# -- gateway mode: per-client grants across the fleet ----------------------------------------------
GATEWAY = ('[firewall]\nbackends = ["recording"]\nhooks = ["output", "forward"]\n'
           'lan_interfaces = ["lan0"]\nresolver_user = ""\n[gateway]\nper_client = true\n')


def _gateway_follower():
    config = parse_config(GATEWAY + FLEET + 'redis_url = "redis://127.0.0.1:1/0"\n'
                          'allow_plaintext = true\n')
    backend = RecordingBackend()
    return Follower(config, backend, connect=lambda: None), backend


def _written(backend) -> list[tuple[str | None, str]]:
    return [(None if g.client is None else str(g.client), str(g.address))
            for batch in backend.batches for g in batch]


def test_a_gateway_follower_grants_the_client_that_asked_and_never_shortens_its_pair():
    follower, backend = _gateway_follower()
    now, ip = time.time(), A("198.51.100.7")
    assert follower.apply(GrantEntry((ip,), (now + 300,), "a.example", "10.1.0.5")) == 1
    assert _written(backend) == [("10.1.0.5", "198.51.100.7")]      # a pair, not the address
    assert follower.tracker.expires_in(ip) is None                   # the gateway itself: no
    assert follower.apply(GrantEntry((ip,), (now + 5,), "a.example", "10.1.0.5")) == 0
    assert follower.counters["pairs_kept"] == 1                      # replayed shorter: kept
    assert follower.apply(GrantEntry((ip,), (now + 300,), "a.example", "10.1.0.6")) == 1
    assert _written(backend)[-1] == ("10.1.0.6", "198.51.100.7")     # another client: its own
    assert backend.batches[0][0].timeout > 290
    # A client that does not parse grants nothing (never the address to everyone).
    assert follower.apply(GrantEntry((ip,), (now + 300,), "a.example", "not-an-ip")) == 0
    assert len(backend.batches) == 2
    # No client (the master's own lookup): the gateway's own address grant, as the resolver.
    assert follower.apply(GrantEntry((A("198.51.100.8"),), (now + 300,), "b.example")) == 1
    assert _written(backend)[-1] == (None, "198.51.100.8")


@pytest.mark.parametrize("extra, granted, elsewhere", [
    ('[fleet]\nfollowers = ["f1=10.1.0.0/24", "f2=10.2.0.0/24"]\n', "10.1.0.5", "10.2.0.5"),
    ('[firewall]\nlan_networks = ["10.1.0.0/24"]\n', "10.1.0.5", "10.9.0.5"),
])
def test_a_gateway_follower_writes_pairs_only_for_the_clients_behind_it(extra, granted, elsewhere):
    """An entry for a client the fleet's map gives to another follower, or outside this
    gateway's LAN networks, writes nothing here (counted); its own clients' entries do."""
    base = GATEWAY + FLEET + 'redis_url = "redis://127.0.0.1:1/0"\nallow_plaintext = true\n'
    for table in ("[fleet]\n", "[firewall]\n"):     # merge the extra keys into their tables
        if extra.startswith(table):
            base = base.replace(table, extra, 1)
    backend = RecordingBackend()
    follower = Follower(parse_config(base), backend, connect=lambda: None)
    now, ip = time.time(), A("198.51.100.7")
    assert follower.apply(GrantEntry((ip,), (now + 300,), "a.example", elsewhere)) == 0
    assert follower.counters["entries_for_other_followers"] == 1 and not backend.batches
    assert follower.apply(GrantEntry((ip,), (now + 300,), "a.example", granted)) == 1
    assert _written(backend) == [(granted, "198.51.100.7")]


def test_a_host_mode_follower_keeps_granting_addresses_whoever_asked():
    follower, backend = _follower()
    assert follower.apply(GrantEntry((A("198.51.100.7"),), (time.time() + 300,), "a.example",
                                     "10.1.0.5")) == 1
    assert _written(backend) == [(None, "198.51.100.7")]


def test_a_gateway_master_publishes_each_clients_pairs_with_that_clients_address():
    from nettrust_core.authorizer import Authorizer
    from test_gateway_grants import Clock, answer

    class Sink:
        def __init__(self) -> None:
            self.got: list = []

        def granted(self, grants, owner) -> None:
            self.got.append((owner.client, owner.names, [str(g.address) for g in grants]))

    config = parse_config(GATEWAY.replace('backends = ["recording"]\n', "")
                          + '[grants]\nmin_ttl = "30s"\n')
    auth = Authorizer(config, RecordingBackend(), clock=Clock())
    pairs, hosts = Sink(), Sink()
    auth.pair_sinks.append(pairs)
    auth.sinks.append(hosts)
    auth.authorize(answer("a.example.", "198.51.100.7", client="10.1.0.5"),
                   ["10.1.0.5", "10.1.0.6"])
    assert sorted(pairs.got) == [("10.1.0.5", "a.example", ["198.51.100.7"]),
                                 ("10.1.0.6", "a.example", ["198.51.100.7"])]
    assert hosts.got == []                      # no host grant: the shared tracker sees none
    auth.authorize(answer("a.example.", "198.51.100.7", client="10.1.0.5"))
    assert len(pairs.got) == 2                  # nothing written, nothing published


def test_a_followers_masters_get_their_dns_ports_only_in_output_and_forward():
    from nettrust_core.firewall.nftables_rules import chain_rules
    from nettrust_core.ruleset import ruleset_spec
    config = parse_config(GATEWAY + FLEET + 'redis_url = "redis://127.0.0.1:1/0"\n'
                          'allow_plaintext = true\nmasters = ["192.0.2.2", "2001:db8::53"]\n')
    spec = ruleset_spec(config)
    assert [str(a) for a in spec.dns_servers] == ["192.0.2.2", "2001:db8::53"]
    for hook in ("output", "forward"):
        rules = chain_rules(spec, hook)
        text = [repr(r) for r in rules]
        accept = [i for i, t in enumerate(text) if "'192.0.2.2'" in t]
        refuse = next(i for i, t in enumerate(text) if "853" in t and "reject" in t)
        assert len(accept) == 1 and accept[0] < refuse, hook
        assert "'dport'" in text[accept[0]] and "853" in text[accept[0]]
        assert any("'2001:db8::53'" in t for t in text)
        if hook == "forward":                   # after the LAN-side check, never before it
            lan = next(i for i, t in enumerate(text) if "iifname" in t)
            assert lan < accept[0]
    # Its Redis: TCP to that address and port, from this host only (output, never forward).
    assert [(str(a), p) for a, p in spec.own_services] == [("127.0.0.1", 1)]
    assert any("'127.0.0.1', 1" in repr(r) for r in chain_rules(spec, "output"))
    assert not any("'127.0.0.1', 1" in repr(r) for r in chain_rules(spec, "forward"))
    # Not a follower: no such rule (a master's own masters key means nothing).
    master = parse_config(GATEWAY + FLEET.replace('"follower"', '"master"')
                          + 'redis_url = "redis://127.0.0.1:1/0"\nallow_plaintext = true\n'
                          'masters = ["192.0.2.2"]\n')
    assert ruleset_spec(master).dns_servers == ()


# -- the shared tracker's read-back -------------------------------------------------------------
def test_the_shared_trackers_read_back_parses_merges_and_refuses_what_does_not_parse():
    from nettrust_core.fleet.tracker_redis import parse_hosts
    from nettrust_core.grants.tracker import GrantTracker, Owner
    from nettrust_core.networks import address_key as K, key_address
    wall, clock = 1_000_000.0, 50.0
    good = [("198.51.100.7", b"1000300.000 a.example"), ("2001:db8::7", b"1000600.500 a.example"),
            ("198.51.100.8", b"999999.000 old.example"),                          # expired
            ("198.51.100.10", b"1000100.000 b.example")]
    bad = [(None, b"1000300.000 x.example"), ("198.51.100.9", b"soon b.example")]

    def spelt(pairs, layout):       # packed: as the writer stores them; text: as it did before
        out = []
        for address, value in pairs:
            if address is None:                 # a field that is no address
                out.append(b"bad" if layout == "packed" else b"not-an-address")
            else:
                out.append(A(address).packed if layout == "packed" else address.encode())
            out.append(value)
        return out
    for pairs, careful in ((good, False), (good + bad, True)):   # the column path, the careful one
        for layout in ("packed", "text", "both"):
            raw = spelt(pairs, "packed") + [b"odd"] if layout != "text" else []   # odd: ignored
            text = spelt(pairs, "text") + [b"odd"] if layout != "packed" else None
            loaded, dead, dead_text = parse_hosts(raw, wall, clock, lambda q: Owner(q, q), text)
            by_version = {v: (inc, own) for v, inc, own in loaded}
            assert by_version[4][0] == {K(A("198.51.100.7")): 350.0, K(A("198.51.100.10")): 150.0}
            assert by_version[6][0] == {K(A("2001:db8::7")): 650.5}
            for inc, _own in by_version.values():   # keys back to the constructor's addresses
                for k in inc:
                    a = key_address(k)
                    made = A(str(a))
                    assert a == made and hash(a) == hash(made) and K(made) == k
            owners = {**by_version[4][1], **by_version[6][1]}
            assert owners[K(A("198.51.100.7"))] is owners[K(A("2001:db8::7"))]   # one per name
            assert owners[K(A("198.51.100.7"))].answered == clock
            refused = [("198.51.100.8", b""), *([(None, b""), ("198.51.100.9", b"")] * careful)]
            # Each reply's refused fields, to be deleted from the hash they came from.
            assert sorted(dead) == (sorted(spelt(refused, "packed")[0::2])
                                    if layout != "text" else [])
            assert sorted(dead_text) == (sorted(spelt(refused, "text")[0::2])
                                         if layout != "packed" else [])
    tracker = GrantTracker(clock=lambda: clock)
    tracker.record(A("198.51.100.7"), 500.0)    # answered meanwhile, longer: kept
    tracker.record(A("198.51.100.10"), 100.0)   # answered meanwhile, shorter: the read-back's
    for version, inc, own in loaded:
        tracker.load(version, inc, own)
    assert tracker.expires_in(A("198.51.100.7")) == 450.0
    assert tracker.expires_in(A("198.51.100.10")) == 100.0
    assert tracker.expires_in(A("2001:db8::7")) == 600.5
    assert len(tracker) == 3
    assert tracker.per_name.get("a.example") == 1       # the v6 one; .7 kept its first owner

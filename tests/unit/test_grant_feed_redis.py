"""The fleet stream as a grant feed, without a server: the spec (TLS files, plaintext refused off
loopback), and the reader's logic over a FAKE Redis (an in-memory stream and snapshot, named as
a fake): the snapshot then the stream, the longest expiry kept, expired grants gone, a hostile
entry skipped, and no answer at all before the first replay.  The real redis-server and a real
master publishing are in tests/integration/test_kube_networkpolicy.py."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from nettrust_core.errors import InvalidValue
from nettrust_core.fleet.entries import GrantEntry, encode
from nettrust_core.grant_feed import FeedGrant, feed_from_spec
from nettrust_core.grant_feed_redis import FeedUnavailable, FleetStreamFeed, fleet_from_spec

A = ipaddress.ip_address


class FakeRedis:
    """A FAKE of the few Redis stream commands the feed uses (no server)."""

    def __init__(self):
        self.stream: list[tuple[bytes, dict]] = []
        self.snapshot: dict[bytes, float] = {}
        self.more = threading.Event()

    def add(self, fields: dict[str, str]) -> None:
        n = len(self.stream) + 1
        self.stream.append((f"{n}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()}))
        self.more.set()

    def ping(self):
        return True

    def xrange(self, key, count=None):
        return self.stream[:count]

    def xread(self, streams, count=None, block=None):
        (cursor,) = streams.values()
        after = int(cursor.split("-")[0])
        got = [m for m in self.stream if int(m[0].split(b"-")[0]) > after][:count]
        if not got and block:
            self.more.wait(block / 1000)
            self.more.clear()
            return []
        return [[b"nettrust:grants", got]] if got else []

    def zrangebyscore(self, key, low, high, withscores=False):
        return [(m, s) for m, s in self.snapshot.items() if s >= low]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def entry(address: str, expires: float, name: str = "api.example.com", client: str = "10.98.1.2"):
    return encode(GrantEntry((A(address),), (expires,), name, client, "m1", 1, "", 999.0))


def test_a_spec_names_the_tls_files_and_refuses_plaintext_off_loopback():
    f = fleet_from_spec("rediss://redis.example:6390/0?ca=/c/ca.crt&cert=/c/n.crt&key=/c/n.key&prefix=fl")
    assert (f.redis_url, f.ca_file, f.cert_file, f.key_file, f.prefix) == (
        "rediss://redis.example:6390/0", "/c/ca.crt", "/c/n.crt", "/c/n.key", "fl")
    f = fleet_from_spec("rediss://redis.example:6390/0")
    assert f.ca_file == "/etc/nettrust/tls/ca.crt" and f.key_file == "/etc/nettrust/tls/tls.key"
    assert fleet_from_spec("redis://127.0.0.1:6390/0").ca_file is None
    with pytest.raises(InvalidValue, match="plaintext Redis is refused off loopback"):
        fleet_from_spec("redis://redis.example:6390/0")
    with pytest.raises(InvalidValue, match="unknown parameter"):
        fleet_from_spec("rediss://redis.example:6390/0?password=x")
    assert isinstance(feed_from_spec("rediss://redis.example:6390/0"), FleetStreamFeed)
    with pytest.raises(InvalidValue, match="expected sqlite:PATH or"):
        feed_from_spec("etcd://x")


def test_snapshot_then_stream_longest_expiry_kept_and_expired_gone():
    fake, clock = FakeRedis(), Clock()
    fake.snapshot[b"198.51.100.9"] = 1500.0                       # client and name unknown
    fake.add(entry("198.51.100.7", 1100.0))
    fake.add(entry("198.51.100.7", 1050.0))                       # replayed, shorter: ignored
    fake.add({"k": "c", "v": "3"})                                # a configuration announcement
    fake.add({"k": "g", "a": "not-an-address", "e": "1"})         # hostile: skipped, counted
    fake.add(entry("2001:db8::7", 1010.0, client=""))
    feed = FleetStreamFeed(lambda: fake, clock=clock, wait=5)
    try:
        got = set(feed.live(clock.now))
        assert got == {FeedGrant(None, "198.51.100.9", "", 1500.0),
                       FeedGrant("10.98.1.2", "198.51.100.7", "api.example.com", 1100.0),
                       FeedGrant(None, "2001:db8::7", "api.example.com", 1010.0)}
        assert feed.counters["bad_entries"] == 1
        fake.add(entry("198.51.100.7", 1200.0))                   # followed: extended
        clock.now = 1020.0
        deadline = threading.Event()
        for _ in range(100):
            live = {g.address: g.expires for g in feed.live(clock.now) if g.client}
            if live.get("198.51.100.7") == 1200.0:
                break
            deadline.wait(0.02)
        assert live == {"198.51.100.7": 1200.0}                   # 2001:db8::7 expired at 1010
    finally:
        feed.stop()


def test_before_the_first_replay_there_is_no_answer_not_an_empty_one():
    class Down:
        def ping(self):
            raise OSError("connection refused")

    feed = FleetStreamFeed(lambda: Down(), wait=0.3)
    try:
        with pytest.raises(FeedUnavailable, match="has not been read yet"):
            feed.live(1000.0)
    finally:
        feed.stop()


def test_past_the_cap_new_grants_are_counted_not_kept():
    fake, clock = FakeRedis(), Clock()
    for i in range(5):
        fake.add(entry(f"198.51.100.{i}", 2000.0))
    feed = FleetStreamFeed(lambda: fake, clock=clock, cap=3)
    try:
        assert len(feed.live(clock.now)) == 3 and feed.counters["dropped_over_cap"] == 2
    finally:
        feed.stop()


def test_an_agent_pool_with_shared_state_renders_masters_publishing_to_the_stream():
    from nettrust_core.config import parse_config
    from nettrust_core.kube.render import agent_pool_objects
    pool = {"apiVersion": "nettrust.io/v1alpha1", "kind": "AgentPool", "metadata": {"name": "p", "uid": "u"},
            "spec": {"image": "x", "enforcement": "networkpolicy",
                     "sharedState": {"backend": "redis", "endpoint": "rediss://r.example:6379/0",
                                     "tlsSecretRef": "fleet"}}}
    objects = agent_pool_objects(pool)
    config = parse_config(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["nettrust.toml"])
    assert (config.fleet.role, config.fleet.redis_url, config.fleet.cert_file) == (
        "master", "rediss://r.example:6379/0", "/etc/nettrust/tls/tls.crt")
    mounts = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"]
    assert {"name": "fleet-tls", "mountPath": "/etc/nettrust/tls", "readOnly": True} in mounts

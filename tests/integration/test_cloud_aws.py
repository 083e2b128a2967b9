"""The AWS prefix-list plugin against moto's EC2 server on loopback (moto is a FAKE of the AWS API:
no cloud is reachable here). moto does not enforce ``CurrentVersion`` on ModifyManagedPrefixList;
:class:`VersionCheckingEc2` — also a fake, on top of moto — refuses a stale version as AWS does,
so the sink's conflict handling is tested against the behaviour AWS documents.

What an admin would see: the prefix list referenced by the security group holds exactly the live
grants (batched, at most 100 changes per call), capped at MaxEntries with the longest-lived kept,
a concurrent writer's change is retried rather than lost or overwritten blindly, and cleanup
empties the list."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require
from nettrust_core.cloud.aws import AwsPrefixList, provision
from nettrust_core.cloud.sink import CloudReconciler
from nettrust_core.grant_feed import FeedGrant
from tests.integration.lab_util import wait_for


@pytest.fixture(scope="module")
def ec2():
    try:
        import boto3
        import moto  # noqa: F401
    except ImportError:
        require(["boto3/moto missing (pip install 'moto[server]', run-tests does)"], "cloud prerequisites")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = boto3.client("ec2", region_name="eu-west-1", endpoint_url=f"http://127.0.0.1:{port}",
                              aws_access_key_id="testing", aws_secret_access_key="testing")

        def up():
            try:
                return client.describe_vpcs() is not None
            except Exception:  # noqa: BLE001 - not listening yet
                return False
        wait_for(up, "moto's EC2 endpoint")
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class VersionCheckingEc2:
    """FAKE layer over moto: refuses a stale CurrentVersion as AWS does, counts modify calls, and
    can let a second writer change the list just before our next call."""

    def __init__(self, ec2) -> None:
        self.ec2, self.calls, self.intrude = ec2, 0, None

    def __getattr__(self, name):
        return getattr(self.ec2, name)

    def modify_managed_prefix_list(self, **kw):
        from botocore.exceptions import ClientError
        if self.intrude is not None:
            cidr, self.intrude = self.intrude, None
            version = self.ec2.describe_managed_prefix_lists(PrefixListIds=[kw["PrefixListId"]])["PrefixLists"][0]["Version"]
            self.ec2.modify_managed_prefix_list(PrefixListId=kw["PrefixListId"], CurrentVersion=version,
                                                AddEntries=[{"Cidr": cidr}])
        current = self.ec2.describe_managed_prefix_lists(PrefixListIds=[kw["PrefixListId"]])["PrefixLists"][0]
        if int(kw["CurrentVersion"]) != int(current["Version"]):
            raise ClientError({"Error": {"Code": "PrefixListVersionMismatch", "Message": "stale version"}},
                              "ModifyManagedPrefixList")
        self.calls += 1
        return self.ec2.modify_managed_prefix_list(**kw)


class ListFeed:
    def __init__(self) -> None:
        self.grants: list[FeedGrant] = []

    def live(self, now):
        return [g for g in self.grants if g.expires > now]


def entries(ec2, pl_id) -> set[str]:
    return {e["Cidr"] for e in ec2.get_managed_prefix_list_entries(PrefixListId=pl_id)["Entries"]}


@pytest.fixture
def lab(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    pl_id, sg_id = provision(ec2, vpc, f"nettrust-{time.monotonic_ns()}", max_entries=250)
    return pl_id, sg_id


def test_grants_reach_the_prefix_list_in_batches_and_leave_on_expiry(ec2, lab):
    pl_id, sg_id = lab
    rule = ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]["IpPermissionsEgress"]
    assert any(p["PrefixListId"] == pl_id for perm in rule for p in perm.get("PrefixListIds", []))
    wrapped = VersionCheckingEc2(ec2)
    feed, now = ListFeed(), time.time()
    feed.grants = [FeedGrant("10.0.0.5", f"198.51.{i // 250}.{i % 250}", "a.example", now + 600) for i in range(150)]
    feed.grants.append(FeedGrant(None, "2001:db8::1", "b.example", now + 20))
    reconciler = CloudReconciler(feed, AwsPrefixList(wrapped, pl_id, 250), min_lifetime=0)
    change = reconciler.once(now)
    assert change.added == 151 and wrapped.calls == 2          # 100 + 51: never one call per answer
    assert len(entries(ec2, pl_id)) == 151 and "2001:db8::1/128" in entries(ec2, pl_id)
    assert reconciler.once(now).calls == 0                      # nothing changed: no call at all
    change = reconciler.once(now + 30)                          # the v6 grant ran out
    assert change.removed == 1 and "2001:db8::1/128" not in entries(ec2, pl_id)


def test_cap_keeps_the_longest_lived_and_counts_the_rest(ec2, lab):
    pl_id, _ = lab
    feed, now = ListFeed(), time.time()
    feed.grants = [FeedGrant(None, f"203.0.113.{i}", "c.example", now + 100 + i) for i in range(1, 16)]
    reconciler = CloudReconciler(feed, AwsPrefixList(ec2, pl_id, max_entries=10), min_lifetime=0)
    reconciler.once(now)
    assert entries(ec2, pl_id) == {f"203.0.113.{i}/32" for i in range(6, 16)}
    assert reconciler.counters["cloud_capped"] == 5


def test_a_concurrent_writer_is_retried_not_overwritten_blindly(ec2, lab):
    pl_id, _ = lab
    wrapped = VersionCheckingEc2(ec2)
    feed, now = ListFeed(), time.time()
    feed.grants = [FeedGrant(None, "192.0.2.10", "d.example", now + 600)]
    sink = AwsPrefixList(wrapped, pl_id, 250)
    wrapped.intrude = "192.0.2.99/32"          # another writer changes the list before our call
    change = CloudReconciler(feed, sink, min_lifetime=0).once(now)
    assert change.conflicts == 1
    # the retry re-read the list: the list is NetTrust's alone, so it now holds exactly the grants
    assert entries(ec2, pl_id) == {"192.0.2.10/32"}


def test_min_lifetime_holds_an_address_and_clear_empties_the_list(ec2, lab):
    pl_id, _ = lab
    feed, now = ListFeed(), time.time()
    feed.grants = [FeedGrant(None, "192.0.2.20", "e.example", now + 5)]
    sink = AwsPrefixList(ec2, pl_id, 250)
    reconciler = CloudReconciler(feed, sink, min_lifetime=300)
    reconciler.once(now)
    assert reconciler.once(now + 60).removed == 0 and entries(ec2, pl_id) == {"192.0.2.20/32"}
    assert reconciler.once(now + 301).removed == 1
    feed.grants = [FeedGrant(None, "192.0.2.21", "e.example", now + 900)]
    reconciler.once(now + 302)
    assert sink.clear().removed == 1 and entries(ec2, pl_id) == set()

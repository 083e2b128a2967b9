"""AWS: granted addresses kept in a customer-managed prefix list.

One security-group egress rule references the prefix list (:func:`provision` creates both for a
lab); the list's ``MaxEntries`` counts against the group's rule quota, so it is also the cap.
:meth:`AwsPrefixList.reconcile` diffs the list against the desired set and modifies it in calls of
at most 100 changes each (the API's limit), passing ``CurrentVersion`` every time: when another
writer changed the list in between, AWS refuses the call, and the sink re-reads and retries.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import NetTrustError
from .sink import Change

log = logging.getLogger("nettrust.cloud.aws")

BATCH = 100                    # ModifyManagedPrefixList: add + remove entries per call
_CONFLICTS = ("IncorrectState", "PrefixListVersionMismatch", "InvalidPrefixListModification")
DESCRIPTION = "nettrust"


class CloudConflict(NetTrustError):
    """The prefix list kept changing under us past the retry limit."""


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class AwsPrefixList:
    def __init__(self, ec2: Any, prefix_list_id: str, max_entries: int, retries: int = 5) -> None:
        self.ec2, self.id, self.max_entries, self.retries = ec2, prefix_list_id, max_entries, retries

    def _state(self) -> tuple[int, set[str]]:
        lists = self.ec2.describe_managed_prefix_lists(PrefixListIds=[self.id])["PrefixLists"]
        version = int(lists[0]["Version"])
        entries: set[str] = set()
        pages = self.ec2.get_paginator("get_managed_prefix_list_entries")
        for page in pages.paginate(PrefixListId=self.id):
            entries.update(e["Cidr"] for e in page["Entries"])
        return version, entries

    def reconcile(self, desired: set[str]) -> Change:
        calls = conflicts = 0
        for _ in range(self.retries):
            version, current = self._state()
            add, remove = sorted(desired - current), sorted(current - desired)
            try:
                # removals first, so a full list has room for the additions
                for batch in _batches(remove, add):
                    response = self.ec2.modify_managed_prefix_list(
                        PrefixListId=self.id, CurrentVersion=version, **batch)
                    calls += 1
                    version = int(response["PrefixList"]["Version"])
                    self._wait(version)
            except Exception as exc:
                if _code(exc) not in _CONFLICTS:
                    raise
                conflicts += 1
                log.info("prefix list %s changed under us (%s); re-reading", self.id, _code(exc))
                continue
            return Change(len(add), len(remove), calls, conflicts)
        raise CloudConflict(f"prefix list {self.id}: still changing after {self.retries} attempts")

    def _wait(self, version: int) -> None:
        """A modification is applied asynchronously: wait until the list is usable again."""
        waiter_ok = {"create-complete", "modify-complete", "restore-complete"}
        for _ in range(50):
            info = self.ec2.describe_managed_prefix_lists(PrefixListIds=[self.id])["PrefixLists"][0]
            if info.get("State", "modify-complete") in waiter_ok and int(info["Version"]) >= version:
                return
            if info.get("State", "").endswith("failed"):
                raise NetTrustError(f"prefix list {self.id}: {info['State']}: {info.get('StateMessage', '')}")
        log.warning("prefix list %s: still modifying", self.id)

    def clear(self) -> Change:
        return self.reconcile(set())


def _batches(remove: list[str], add: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ops = [("RemoveEntries", {"Cidr": c}) for c in remove] + \
          [("AddEntries", {"Cidr": c, "Description": DESCRIPTION}) for c in add]
    for start in range(0, len(ops), BATCH):
        batch: dict[str, Any] = {}
        for key, entry in ops[start:start + BATCH]:
            batch.setdefault(key, []).append(entry)
        out.append(batch)
    return out


def provision(ec2: Any, vpc_id: str, name: str, max_entries: int, family: str = "IPv4") -> tuple[str, str]:
    """A prefix list and a security group whose one egress rule references it (a lab, or the
    first install): returns (prefix list id, security group id)."""
    pl = ec2.create_managed_prefix_list(PrefixListName=name, MaxEntries=max_entries, AddressFamily=family)
    pl_id = pl["PrefixList"]["PrefixListId"]
    sg_id = ec2.create_security_group(GroupName=name, Description="NetTrust egress", VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_egress(GroupId=sg_id, IpPermissions=[{
        "IpProtocol": "-1", "PrefixListIds": [{"PrefixListId": pl_id, "Description": "NetTrust grants"}]}])
    return pl_id, sg_id

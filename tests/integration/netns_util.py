"""The throwaway network namespaces of the firewall tests: they live in :mod:`testbed.throwaway_netns`
(bench/ uses them too); re-exported here for the tests that import ``netns_util``."""

from testbed.throwaway_netns import PYTHON, REPO, ChildError, NetNS, _setns, veth_pair

__all__ = ["PYTHON", "REPO", "ChildError", "NetNS", "_setns", "veth_pair"]

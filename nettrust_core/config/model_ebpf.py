"""The ``"ebpf"`` firewall backend's section ([ebpf]): declared like every section (see
:mod:`.model`'s "how to add a key"), kept apart so each module reads in one sitting.
:class:`.model.Config` holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import checks as c
from .declare import key
from .kinds import Boolean, Choice, Integer, Text

XDP_MODES = ("generic", "native")


@dataclass(frozen=True)
class EbpfConfig:
    """The ``"ebpf"`` firewall backend: cgroup hooks (``firewall.hooks`` output) and XDP on
    ``firewall.lan_interfaces`` (forward), fed from pinned maps."""

    pin_path: str = key(Text(), "/sys/fs/bpf/nettrust",
                        "where the maps and links are pinned (a directory on a mounted bpffs)",
                        check=c.absolute_path())
    cgroup: str = key(Text(), "/sys/fs/cgroup",
                      "the cgroup v2 directory whose processes (and its descendants') are "
                      "filtered: the hierarchy's root filters the whole host",
                      check=c.absolute_path())
    map_size: int = key(Integer(1024, 16777216), 65536,
                        "grants each map holds (IPv4, IPv6, and per-client twins); the least "
                        "recently used go first when full", unit="elements")
    xdp_mode: str = key(Choice(XDP_MODES), "generic",
                        "`generic` (any interface; native XDP on veth disables TSO) or "
                        "`native` (NICs whose driver supports XDP)")
    conntrack: bool = key(Boolean(), True,
                          "XDP lets flows conntrack knows through after their grant expired")

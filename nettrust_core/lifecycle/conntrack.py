"""Which granted addresses still carry a live connection: one kernel-filtered conntrack dump.

The request and the entries are :mod:`nettrust_core.netlink.conntrack`'s (the kernel returns only
connections carrying NetTrust's mark); this module owns the socket and counts what is live.  Any
failure raises :class:`ConntrackError`, which callers treat as "liveness unknown".
"""

from __future__ import annotations

import ipaddress
import struct

from ..errors import NetTrustError
from ..netlink import conntrack as ctnl
from ..netlink.conntrack import ConntrackError
from ..netlink.core import NetlinkSocket
from ..netlink.wire import Message
from ..networks import IPAddress


def to_address(raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)


class Conntrack:
    """Asks the kernel for the connections carrying ``mark`` (a persistent netlink socket)."""

    def __init__(self, mark: int, mask: int | None = None) -> None:
        self.mark = mark
        self._body = ctnl.dump_request_body(mark, mark if mask is None else mask)
        self._sock: NetlinkSocket | None = None

    def live_destinations(self) -> dict[IPAddress, int]:
        """Original destination → number of live marked connections.  Raises ConntrackError."""
        raw: dict[bytes, int] = {}

        def on_entry(msg: Message) -> None:
            entry = ctnl.parse_entry(msg)
            if entry is not None and entry[1]:
                raw[entry[0]] = raw.get(entry[0], 0) + 1

        try:
            if self._sock is None:
                self._sock = NetlinkSocket(timeout=5.0)
            self._sock.dump(ctnl.IPCTNL_MSG_CT_GET, 0, self._body, on_entry,
                            subsystem=ctnl.NFNL_SUBSYS_CTNETLINK)
        except ConntrackError:
            self.close()
            raise
        except (NetTrustError, OSError, ValueError, IndexError, struct.error) as exc:
            self.close()                                  # a fresh socket next time
            raise ConntrackError(f"conntrack query failed: {exc}") from None
        return {to_address(a): n for a, n in raw.items()}

    def probe(self) -> str | None:
        """None when conntrack answers, else why not (for ``nettrust status``)."""
        try:
            self.live_destinations()
        except ConntrackError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

"""The nftables backend's optional gateway verbs (:class:`~.base.ClientPairs`): one pair's time
left, a strike, and the people's reads -- every ``client . destination`` pair of every instance
and every struck address or uid (``nettrust hosts`` / ``nettrust status`` in gateway mode).

A mixin of :class:`~.nftables.NftablesBackend` (it uses the backend's ``spec``, ``client_sets``,
sockets and timeout), kept apart so each module stays one concern.
"""

from __future__ import annotations

import errno
import ipaddress
import sys
from typing import TYPE_CHECKING, Sequence

from ..errors import FirewallError
from ..netlink import nftables as nl
from .base import ClientPair, IPAddress, MacAddress, StruckClient
from .nftables_gateway import STRIKE_SETS, UID_STRIKE_SET, all_client_sets, pair_key, strike_element

if TYPE_CHECKING:
    from .base import RulesetSpec

_LEN = {4: 4, 6: 16}


def decode_pair(key: bytes, version: int, mac: bool) -> tuple[IPAddress | MacAddress, IPAddress] | None:
    """``(client, destination)`` from a per-client set's key (None: not this set's shape)."""
    n = _LEN[version]
    if mac:
        if len(key) != 8 + n:
            return None
        return MacAddress(key[:6]), ipaddress.ip_address(key[8:])
    if len(key) != 2 * n:
        return None
    return ipaddress.ip_address(key[:n]), ipaddress.ip_address(key[n:])


class GatewayVerbs:
    """The :class:`~.base.ClientPairs` verbs on nf_tables."""

    spec: RulesetSpec
    client_sets: dict[int, str]
    _hot: nl.NftablesSocket | None
    _timeout: float

    def _socket(self, which: str) -> nl.NftablesSocket:
        raise NotImplementedError

    def lookup_pair(self, client: IPAddress | MacAddress, address: IPAddress) -> float | None:
        """Seconds left on this instance's grant of ``client . address`` (None: none)."""
        e = (self._hot or self._socket("_hot")).get_element(
            self.spec.table, self.client_sets[address.version], pair_key(client, address))
        return e.expiration_ms / 1000 if e is not None and e.expiration_ms else None

    def strike(self, address: IPAddress | int, seconds: float) -> None:
        """Put ``address`` (or a uid) into its strike set for ``seconds`` (DNS/DoT dropped)."""
        self._socket("_ctl").write_elements(nl.NFT_MSG_NEWSETELEM, self.spec.table,
                                            [strike_element(address, seconds)])

    def revoke_pairs(self, pairs: Sequence[tuple[IPAddress | MacAddress, IPAddress]]) -> None:
        """Remove this instance's grants of ``pairs`` in one batch (DESTROYSETELEM: a pair that
        expired meanwhile does not fail the batch)."""
        groups = []
        for v, name in self.client_sets.items():
            mine = [(c, a) for c, a in pairs if a.version == v]
            if mine:
                groups.append((name, [nl.element(pair_key(c, a)) for c, a in mine],
                               [a for _c, a in mine]))
        if groups:
            self._socket("_ctl").write_elements(nl.NFT_MSG_DESTROYSETELEM, self.spec.table, groups)

    def _dump(self, sock: nl.NftablesSocket, name: str) -> list[nl.Element]:
        try:
            return sock.dump_elements(self.spec.table, name)
        except FirewallError as exc:
            if exc.errno == errno.ENOENT:           # no such set (this mode is off): nothing
                return []
            raise

    def list_pairs(self) -> list[ClientPair]:
        """Every live ``client . destination`` pair of every instance, from set dumps."""
        out: list[ClientPair] = []
        sock = nl.NftablesSocket(self._timeout)
        try:
            for instance, v, name in all_client_sets(self.spec):
                for e in self._dump(sock, name):
                    found = decode_pair(e.key, v, self.spec.client_mac)
                    if found is None or not e.expiration_ms:
                        continue
                    out.append(ClientPair(found[0], found[1], e.expiration_ms / 1000,
                                          (e.timeout_ms or 0) / 1000, e.comment, instance))
        finally:
            sock.close()
        return out

    def list_strikes(self) -> list[StruckClient]:
        """Every struck address (the module's strikes and the kernel meter's) and local uid."""
        out: list[StruckClient] = []
        sock = nl.NftablesSocket(self._timeout)
        try:
            for v, name in STRIKE_SETS.items():
                for e in self._dump(sock, name):
                    if len(e.key) == _LEN[v]:
                        out.append(StruckClient(ipaddress.ip_address(e.key),
                                                (e.expiration_ms or 0) / 1000))
            for e in self._dump(sock, UID_STRIKE_SET):
                if len(e.key) == 4:
                    out.append(StruckClient(int.from_bytes(e.key, sys.byteorder),
                                            (e.expiration_ms or 0) / 1000))
        finally:
            sock.close()
        return out

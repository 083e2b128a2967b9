"""The Redis keys of one fleet (``fleet.prefix``), named in one place."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: Every grant and config announcement, in order (``XADD … MINID``).
        self.stream = f"{prefix}:grants"
        #: address → latest expiry (wall clock), for followers whose cursor was trimmed.
        self.snapshot = f"{prefix}:snapshot"
        #: "client address" → latest expiry: the snapshot of the grants published with the
        #: client that asked (what a gateway-mode follower replays as per-client pairs).
        self.pairs = f"{prefix}:pairs"
        #: The current configuration document (JSON, see :mod:`.config_doc`).
        self.config = f"{prefix}:config"

    def cursor(self, node: str) -> str:
        return f"{self.prefix}:cursor:{node}"

    def acks(self, master: str) -> str:
        """The stream a master reads its followers' confirmations from."""
        return f"{self.prefix}:acks:{master}"

    def hosts(self, node: str) -> str:
        """The shared host tracker of one host (every resolver instance on it): packed address
        -> "expiry name domain"."""
        return f"{self.prefix}:hostmap:{node}"

    def hosts_text(self, node: str) -> str:
        """The same with text addresses, as written before: read (and its expired fields
        deleted) until its last grant expires, never written."""
        return f"{self.prefix}:hosts:{node}"


def stream_id(text: bytes | str) -> tuple[int, int]:
    """``"1700000000000-3"`` as a comparable pair."""
    if isinstance(text, bytes):
        text = text.decode()
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)

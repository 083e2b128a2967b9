"""Small helpers the lab-based integration tests share."""

from __future__ import annotations


def direct(lab, address: str, port: int = 80, timeout: float = 0.9):
    """Connect straight to ``address`` from the lab's host namespace: True, or the error's name
    (``ConnectionRefusedError`` when the firewall rejects, ``TimeoutError`` when it drops)."""
    try:
        lab.connect("host", address, port, timeout=timeout).close()
        return True
    except OSError as exc:
        return type(exc).__name__

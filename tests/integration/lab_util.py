"""Small helpers the lab-based integration tests share."""

from __future__ import annotations

import contextlib

from testbed.lab import Lab


def direct(lab, address: str, port: int = 80, timeout: float = 0.9):
    """Connect straight to ``address`` from the lab's host namespace: True, or the error's name
    (``ConnectionRefusedError`` when the firewall rejects, ``TimeoutError`` when it drops)."""
    try:
        lab.connect("host", address, port, timeout=timeout).close()
        return True
    except OSError as exc:
        return type(exc).__name__


@contextlib.contextmanager
def resolving_lab(extra_records=None):
    """A lab whose host namespace resolves through 127.0.0.1 and ::1, where the product under
    test listens; removed afterwards, also on failure."""
    with Lab(extra_records=extra_records) as lab:
        lab.set_resolver(["127.0.0.1", "::1"])
        yield lab

"""Small helpers the lab-based integration tests share."""

from __future__ import annotations

import contextlib
import re
import time
from typing import NamedTuple

from testbed.lab import Lab


class Dig(NamedTuple):
    """One query's outcome: the rcode (``"TIMEOUT"`` when nothing came back) and the data of the
    answer section's records, in order (addresses, CNAME targets with their trailing dot)."""

    status: str
    answers: list[str]


def dig(lab, name: str, rtype: str = "A", *options: str, timeout: int = 3) -> Dig:
    """Ask the resolver on 127.0.0.1 (the product under test) from the lab's host namespace."""
    out = lab.run("host", ["dig", "@127.0.0.1", "+tries=1", f"+time={timeout}", *options,
                           name, rtype], check=False).stdout
    status = re.search(r"status: (\w+)", out)
    answers = []
    if "ANSWER SECTION:" in out:
        block = out.split("ANSWER SECTION:\n", 1)[1].split("\n\n")[0]
        answers = [ln.split()[-1] for ln in block.splitlines() if ln and not ln.startswith(";")]
    return Dig(status.group(1) if status else "TIMEOUT", answers)


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


def wait_for(check, what: str, timeout: float = 15.0, step: float = 0.2):
    """Poll ``check()`` until it returns something true (returned); past ``timeout`` seconds
    the test fails naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)
    return value

"""The resolv.conf guard on a temporary directory (never the host's /etc/resolv.conf): real
inotify, real renames, symlink swaps and in-place writes, the way managers change the file.

The periodic re-check is set to an hour, so whatever the guard notices within the test's
seconds it noticed through inotify."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nettrust_core.config.model_resolver import ResolvConfConfig
from nettrust_core.resolv_guard import MAX_REVERTS, ResolvGuard, chain

GOOD = "# local\nnameserver 127.0.0.1\n"
BAD = "nameserver 192.0.2.53\n"


class RecordedEvents:
    """Stands in for the agent connection (a fake: it only keeps what was sent)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def event(self, kind: str, **fields) -> bool:
        self.events.append({"kind": kind, **fields})
        return True

    def states(self) -> list[str]:
        return [e["state"] for e in self.events]


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def atomic_write(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.new"
    tmp.write_text(text)
    os.replace(tmp, path)


def swap_link(path: Path, target: str) -> None:
    tmp = path.parent / f".{path.name}.lnk"
    os.symlink(target, tmp)
    os.replace(tmp, path)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "resolv.conf").write_text(GOOD)
    return d


@pytest.fixture
def guard_for():
    guards: list[ResolvGuard] = []

    def make(path: Path, revert: bool = False) -> tuple[ResolvGuard, RecordedEvents]:
        events = RecordedEvents()
        g = ResolvGuard(ResolvConfConfig(path=str(path), revert=revert, check_interval=3600.0),
                        reporter=events)           # type: ignore[arg-type]
        g.start()
        guards.append(g)
        return g, events
    yield make
    for g in guards:
        g.stop()
        assert not g.alive and g.died is None


def test_a_good_file_raises_nothing_and_an_unrelated_file_is_not_even_read(etc, guard_for):
    g, events = guard_for(etc / "resolv.conf")
    assert g.state is not None and g.state.ok
    checks = g.counters["resolv_conf_checks"]
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    atomic_write(etc / "passwd", "x\n")
    time.sleep(0.3)
    assert g.counters["resolv_conf_checks"] == checks
    assert events.events == [] and g.counters["resolv_conf_diverted"] == 0
    assert g.counters["resolv_conf_ok"] == 1


def test_an_atomic_rename_over_the_file_alerts(etc, guard_for):
    g, events = guard_for(etc / "resolv.conf")
    atomic_write(etc / "resolv.conf", BAD)
    # the guard counts, then sends the event (another thread): wait for what is read last
    assert wait_for(lambda: events.states() == ["diverted"])
    assert g.counters["resolv_conf_diverted"] == 1
    assert events.events[0]["servers"] == ["192.0.2.53"]
    assert "192.0.2.53" in events.events[0]["why"]
    assert g.counters["resolv_conf_ok"] == 0
    assert (etc / "resolv.conf").read_text() == BAD          # alert only: left as it is
    # back to good: said once
    atomic_write(etc / "resolv.conf", GOOD)
    assert wait_for(lambda: events.states() == ["diverted", "restored"])
    assert g.counters["resolv_conf_ok"] == 1


def test_an_in_place_write_alerts(etc, guard_for):
    g, events = guard_for(etc / "resolv.conf")
    with open(etc / "resolv.conf", "a") as f:
        f.write("nameserver 8.8.8.8\n")
    assert wait_for(lambda: events.states() == ["diverted"])
    assert events.events[0]["servers"] == ["127.0.0.1", "8.8.8.8"]


def test_a_symlink_swap_and_a_write_to_the_link_target_alert(tmp_path, guard_for):
    etc, run = tmp_path / "etc", tmp_path / "run" / "resolver"
    etc.mkdir()
    run.mkdir(parents=True)
    (run / "stub.conf").write_text(GOOD)
    (run / "upstream.conf").write_text(BAD)
    os.symlink("../run/resolver/stub.conf", etc / "resolv.conf")
    assert chain(str(etc / "resolv.conf"))[-1] == str(run / "stub.conf")
    g, events = guard_for(etc / "resolv.conf")
    assert g.state.ok and g.good_link == "../run/resolver/stub.conf"
    swap_link(etc / "resolv.conf", "../run/resolver/upstream.conf")
    assert wait_for(lambda: events.states() == ["diverted"])
    swap_link(etc / "resolv.conf", "../run/resolver/stub.conf")
    assert wait_for(lambda: events.states() == ["diverted", "restored"])
    # the manager rewrites the target the link points at (renamed over, in another directory)
    atomic_write(run / "stub.conf", "nameserver 203.0.113.1\n")
    assert wait_for(lambda: events.states() == ["diverted", "restored", "diverted"])


def test_revert_restores_the_contents_after_a_rename_and_an_in_place_write(etc, guard_for):
    g, events = guard_for(etc / "resolv.conf", revert=True)
    atomic_write(etc / "resolv.conf", BAD)
    assert wait_for(lambda: events.states()[:2] == ["diverted", "reverted"])
    assert g.counters["resolv_conf_reverts"] == 1
    assert (etc / "resolv.conf").read_text() == GOOD
    with open(etc / "resolv.conf", "w") as f:
        f.write(BAD)
    assert wait_for(lambda: g.counters["resolv_conf_reverts"] == 2)
    assert (etc / "resolv.conf").read_text() == GOOD
    assert not [p for p in os.listdir(etc) if "nettrust-tmp" in p]      # no temporary left


def test_revert_restores_a_swapped_link(tmp_path, guard_for):
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    (run / "stub.conf").write_text(GOOD)
    (run / "dhcp.conf").write_text(BAD)
    os.symlink("../run/stub.conf", etc / "resolv.conf")
    g, _ = guard_for(etc / "resolv.conf", revert=True)
    swap_link(etc / "resolv.conf", "../run/dhcp.conf")
    assert wait_for(lambda: g.counters["resolv_conf_reverts"] == 1)
    assert os.readlink(etc / "resolv.conf") == "../run/stub.conf"


def test_revert_without_a_good_version_writes_the_local_resolver(etc, guard_for):
    (etc / "resolv.conf").write_text(BAD)
    g, events = guard_for(etc / "resolv.conf", revert=True)     # bad from the start
    assert events.states() == ["diverted", "reverted"]
    text = (etc / "resolv.conf").read_text()
    assert "nameserver 127.0.0.1" in text and "192.0.2.53" not in text


def test_a_manager_that_keeps_rewriting_is_reported_not_fought(etc, guard_for):
    g, _ = guard_for(etc / "resolv.conf", revert=True)
    for n in range(MAX_REVERTS + 2):
        atomic_write(etc / "resolv.conf", BAD + f"# {n}\n")
        assert wait_for(lambda: g.counters["resolv_conf_reverts"]
                        + g.counters["resolv_conf_revert_refused"] == n + 1)  # noqa: B023
    assert g.counters["resolv_conf_reverts"] == MAX_REVERTS
    assert g.counters["resolv_conf_revert_refused"] == 2
    assert "192.0.2.53" in (etc / "resolv.conf").read_text()


def test_a_missing_file_alerts_and_its_creation_is_seen(etc, guard_for):
    g, events = guard_for(etc / "resolv.conf")
    os.unlink(etc / "resolv.conf")
    assert wait_for(lambda: events.states() == ["diverted"])
    (etc / "resolv.conf").write_text(GOOD)
    assert wait_for(lambda: events.states() == ["diverted", "restored"])

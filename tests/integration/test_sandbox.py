"""The README's try-it command works as written and leaves nothing behind."""

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_try_nettrust_walkthrough_runs_and_cleans_up():
    before_ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    before_nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    res = subprocess.run([str(ROOT / "try-nettrust"), "--no-shell", "--pause", "0"],
                         capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("→ as expected") == 7 and "UNEXPECTED" not in res.stdout
    assert "hello from" in res.stdout and "status: SERVFAIL" in res.stdout
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == before_ns
    assert subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout == before_nft

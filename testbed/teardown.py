"""Leaving nothing behind: owner records, killing a namespace's processes, stale-lab cleanup,
and the process-wide safety net (atexit, SIGTERM/SIGHUP/SIGINT) that closes live labs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import netns
from .errors import LabError, require_tool
from .process import command_env

LAB_ROOT = Path("/run/nettrust-lab")
ETC_NETNS = Path("/etc/netns")
TOKEN_RE = re.compile(r"^nt[0-9a-f]{4}$")
NS_RE = re.compile(r"^(nt[0-9a-f]{4})-(host|net)$")


def _process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]      # field 22: starttime in clock ticks


def write_owner(work_dir: Path) -> None:
    pid = os.getpid()
    (work_dir / "owner").write_text(f"{pid} {_process_start_time(pid)}\n")


def owner_alive(work_dir: Path) -> bool | None:
    """True/False, or None when the record is missing or unreadable."""
    try:
        pid_text, start = (work_dir / "owner").read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return _process_start_time(pid) == start


def kill_netns_pids(inode: int, errors: list[str], ns: str) -> None:
    """SIGKILL every process in the namespace with this inode until none is left (3 s at most).

    The caller must hold the namespace open (an fd), or the inode could belong to a new one.
    """
    deadline = time.monotonic() + 3.0
    while True:
        pids = netns.pids_in_netns(inode)
        if not pids:
            return
        if time.monotonic() > deadline:
            errors.append(f"processes still in {ns} after SIGKILL: {pids}")
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def cleanup_stale(work_root: str | os.PathLike = LAB_ROOT, *, include_unrecorded: bool = False) -> list[str]:
    """Remove what crashed labs left: namespaces, their processes, /etc/netns dirs, work dirs.

    A lab is stale when the PID recorded in ``<work_root>/<token>/owner`` is gone (PID reuse is
    caught by also recording the process start time).  ``include_unrecorded=True`` also removes
    ``nt????-host``/``nt????-net`` namespaces that have no work dir at all.  Returns the tokens
    removed.
    """
    root = Path(work_root)
    stale: list[tuple[str, Path | None]] = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if not TOKEN_RE.match(entry.name) or not entry.is_dir():
                continue
            alive = owner_alive(entry)
            if alive is None and time.time() - entry.stat().st_mtime < 60:
                continue                     # being created right now
            if not alive:
                stale.append((entry.name, entry))
    if include_unrecorded and netns.NETNS_RUN_DIR.is_dir():
        known = {token for token, _ in stale} | ({p.name for p in root.iterdir()} if root.is_dir() else set())
        for entry in sorted(netns.NETNS_RUN_DIR.iterdir()):
            match = NS_RE.match(entry.name)
            if match and match.group(1) not in known:
                known.add(match.group(1))
                stale.append((match.group(1), None))
    errors: list[str] = []
    for token, work_dir in stale:
        for ns in (f"{token}-host", f"{token}-net"):
            path = netns.netns_path(ns)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            if fd is not None:
                try:
                    kill_netns_pids(os.fstat(fd).st_ino, errors, ns)
                    subprocess.run([require_tool("ip"), "netns", "delete", ns], capture_output=True,
                                   env=command_env(None, None))
                finally:
                    os.close(fd)
                if path.exists():
                    errors.append(f"could not delete namespace {ns}")
            shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
    if errors:
        raise LabError("cleanup_stale incomplete:\n  - " + "\n  - ".join(errors))
    return [token for token, _ in stale]


# ---------------------------------------------------------------------- process-wide safety net
#
# Live labs are closed at interpreter exit; SIGTERM and SIGHUP (when nobody else handles them)
# become SystemExit so `with` blocks unwind.  A signal arriving while a lab is closing is held
# until the close is done, so cleanup is never cut in half.

_lock = threading.RLock()
_live: set = set()   # objects with close() and token
_saved_handlers: dict[int, object] = {}
_closing = 0
_pending: list[int] = []


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum: int, frame: object) -> None:
    if _closing:
        _pending.append(signum)
        return
    _raise_for(signum)


@contextlib.contextmanager
def signals_deferred():
    global _closing
    _closing += 1
    try:
        yield
    finally:
        _closing -= 1
    if not _closing and _pending:
        signum = _pending[0]
        _pending.clear()
        if threading.current_thread() is threading.main_thread():
            _raise_for(signum)
        else:                                  # let the main thread's handler act on it
            os.kill(os.getpid(), signum)


def register(lab) -> None:
    with _lock:
        _live.add(lab)
        if threading.current_thread() is not threading.main_thread():
            return
        wanted = {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL,
                  signal.SIGINT: signal.default_int_handler}
        for signum, default in wanted.items():
            if signum not in _saved_handlers and signal.getsignal(signum) is default:
                _saved_handlers[signum] = default
                signal.signal(signum, _on_signal)


def unregister(lab) -> None:
    with _lock:
        _live.discard(lab)
        if _live or threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in list(_saved_handlers.items()):
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, handler)
            del _saved_handlers[signum]


@atexit.register
def _close_all() -> None:
    for lab in list(_live):
        try:
            lab.close()
        except Exception as err:  # noqa: BLE001 (exit path: report, keep closing the others)
            print(f"testbed.Lab: closing {lab.token} at exit: {err}", file=sys.stderr)

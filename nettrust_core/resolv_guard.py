"""The resolv.conf guard: notice when this host stops pointing at the local resolver.

A changed resolv.conf already fails closed (lookups through another server grant nothing, so
their connects are refused); the guard makes it visible, and optionally undoes it.

Managers replace the file rather than write it: NetworkManager and resolvconf write a temporary
file and rename it over, systemd-resolved and resolvconf swap symbolic links, an administrator's
editor may write in place.  So the guard watches, with inotify (through ctypes: no package):

- the directory of the path and of every symlink target on the way to the real file (a rename or
  a new link appears there as IN_MOVED_TO / IN_CREATE of that name),
- the final file itself (an in-place write through a bind mount reports only there),

rebuilding the watches after each event (a swapped link has a new target), and re-checks every
``check_interval`` anyway (events lost to an overflowing queue, a remount).

A check reads the file and judges its ``nameserver`` lines as ``nettrust resolver-setup
--check`` does (:func:`..resolver_setup.judge`).  Going from good to bad (or to another bad
content) raises an alert: a ``resolv_conf`` event to the agent, ``resolv_conf_diverted`` in the
counters (``resolv_conf_ok`` says the state now) and a warning in the log.  With ``revert``
the file is put back, atomically (a temporary file renamed over it; in place when it is a
bind mount that cannot be renamed over): the last good symlink when its target still reads
good, else the last good contents, else ``nameserver 127.0.0.1``.  At most
:data:`MAX_REVERTS` rewrites a minute: a manager that keeps rewriting is reported, not fought.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import logging
import os
import select
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import resolver_setup as rs
from .errors import NetTrustError
from .worker import Worker

if TYPE_CHECKING:
    from .config.model_resolver import ResolvConfConfig
    from .report import Reporter

log = logging.getLogger("nettrust.resolv_conf")

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
DIR_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
FILE_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")
#: Symlink hops followed (the kernel's own limit is 40).
MAX_HOPS = 16
#: Rewrites allowed per minute with ``revert``; beyond them the guard only alerts.
MAX_REVERTS = 5
#: After an event, wait this long for the rest of a manager's write-and-rename.
SETTLE = 0.05
DEFAULT_TEXT = f"{rs.MARK}\nnameserver 127.0.0.1\n"


class Inotify:
    """The few inotify calls the guard needs, through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise NetTrustError(f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def add(self, path: str, mask: int) -> int | None:
        """A watch on ``path``, or None when it does not exist (or cannot be watched)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask))
        return wd if wd >= 0 else None

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, str]]:
        """Pending events as (watch, mask, name); [] when none."""
        out: list[tuple[int, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
                out.append((wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
                offset += _EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class State:
    ok: bool
    why: str
    servers: tuple[str, ...]
    text: str | None          # None: missing or unreadable
    link: str | None          # the path's own symlink target, when it is one


def chain(path: str) -> list[str]:
    """``path`` and every symlink target on the way to the real file (absolute paths)."""
    out = [path]
    cur = path
    for _ in range(MAX_HOPS):
        try:
            target = os.readlink(cur)
        except OSError:
            break
        cur = os.path.normpath(os.path.join(os.path.dirname(cur), target))
        out.append(cur)
    return out


def inspect(path: str) -> State:
    """Read ``path`` (following links) and judge its nameservers."""
    try:
        link: str | None = os.readlink(path)
    except OSError:
        link = None
    try:
        with open(path) as f:
            text: str | None = f.read(1 << 20)
    except OSError as exc:
        return State(False, f"{path} cannot be read: {exc.strerror}", (), None, link)
    servers = rs.parse_nameservers(text or "")
    ok, why = rs.judge(servers, os.path.exists(os.path.join("/", rs.RESOLVED_DROPIN)), path)
    return State(ok, why, tuple(servers), text, link)


class ResolvGuard(Worker):
    """Watches ``config.path``; alerts (and with ``config.revert`` rewrites) when it stops
    naming only the local resolver."""

    name = "nettrust-resolv-guard"

    def __init__(self, config: ResolvConfConfig, *, reporter: Reporter | None = None,
                 counters: Counter[str] | None = None) -> None:
        self.counters: Counter[str] = counters if counters is not None else Counter()
        super().__init__(self.counters)
        self.path, self.revert, self.interval = config.path, config.revert, config.check_interval
        for name in ("resolv_conf_diverted", "resolv_conf_reverts"):    # a metric from the start
            self.counters.setdefault(name, 0)
        self.reporter = reporter
        self.state: State | None = None
        #: The last good contents and the link it came through (what a revert restores).
        self.good_text: str | None = None
        self.good_link: str | None = None
        self._reverts: collections.deque[float] = collections.deque()
        self._inotify: Inotify | None = None
        #: watch -> the names of the chain in that directory (None: the file, any event)
        self._watches: dict[int, set[str] | None] = {}
        self._wake_r, self._wake_w = -1, -1

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        if self._inotify is None:
            self._inotify = Inotify()
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._rewatch()
        self.check()
        super().start()

    def wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._inotify is not None and not self.alive:
            self._inotify.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._inotify, self._watches = None, {}
            self._wake_r = self._wake_w = -1

    def run(self) -> None:
        ino = self._inotify
        if ino is None:
            return
        poller = select.poll()
        poller.register(ino.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        next_check = time.monotonic() + self.interval
        while not self.stopping.is_set():
            ready = poller.poll(max(0.0, next_check - time.monotonic()) * 1000)
            if self.stopping.is_set():
                return
            relevant = False
            if ready:
                relevant = self._relevant(ino.read())
                if relevant:
                    self.stopping.wait(SETTLE)
                    ino.read()          # the rest of the same write-and-rename
            if relevant or time.monotonic() >= next_check:
                next_check = time.monotonic() + self.interval
                try:
                    self._rewatch()
                    self.check()
                except Exception:                      # the thread must outlive any bug
                    self.counters["resolv_conf_errors"] += 1
                    log.exception("checking %s failed", self.path)

    def _relevant(self, events: list[tuple[int, int, str]]) -> bool:
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:
                return True
            if wd not in self._watches or mask & IN_IGNORED:
                continue
            names = self._watches[wd]
            if names is None or name in names:     # the file itself, or one of its names
                return True
        return False

    def _rewatch(self) -> None:
        ino = self._inotify
        if ino is None:
            return
        for old in self._watches:
            ino.remove(old)
        self._watches = {}
        links = chain(self.path)
        for p in links:
            wd = ino.add(os.path.dirname(p) or "/", DIR_MASK)
            if wd is not None:
                names = self._watches.setdefault(wd, set())
                if names is not None:
                    names.add(os.path.basename(p))
        last = ino.add(links[-1], FILE_MASK)
        if last is not None:
            self._watches[last] = None

    # -- one check ---------------------------------------------------------------------------
    def check(self) -> State:
        """Read and judge the file now; alert on a change to bad; revert when asked."""
        before, now = self.state, inspect(self.path)
        self.state = now
        self.counters["resolv_conf_checks"] += 1
        self.counters["resolv_conf_ok"] = 1 if now.ok else 0
        if now.ok:
            self.good_text, self.good_link = now.text, now.link
            if before is not None and not before.ok:
                log.info("%s points at the local resolver again", self.path)
                self._event("restored", now)
            return now
        if before is None or before.ok or (before.text, before.link) != (now.text, now.link):
            self.counters["resolv_conf_diverted"] += 1
            log.warning("%s no longer points at the local resolver: %s (lookups through other "
                        "servers grant nothing: their connects are refused)%s", self.path,
                        now.why, "" if self.revert else "; `nettrust install-resolver` shows "
                        "the setting that keeps the manager from changing it")
            self._event("diverted", now)
        if self.revert:
            self._revert()
        return now

    def _event(self, what: str, state: State) -> None:
        if self.reporter is not None:
            self.reporter.event("resolv_conf", subject=self.path, state=what, why=state.why,
                                servers=list(state.servers))

    def _revert(self) -> None:
        now = time.monotonic()
        while self._reverts and self._reverts[0] < now - 60:
            self._reverts.popleft()
        if len(self._reverts) >= MAX_REVERTS:
            self.counters["resolv_conf_revert_refused"] += 1
            log.error("%s: not rewritten again: %d rewrites in the last minute; another "
                      "manager keeps changing it (configure it: `nettrust install-resolver`)",
                      self.path, len(self._reverts))
            return
        self._reverts.append(now)
        try:
            how = self._restore()
        except OSError as exc:
            self.counters["resolv_conf_revert_errors"] += 1
            log.error("%s: cannot rewrite it: %s", self.path, exc.strerror or exc)
            return
        self.counters["resolv_conf_reverts"] += 1
        log.warning("%s rewritten: %s", self.path, how)
        after = inspect(self.path)
        self.state = after
        self.counters["resolv_conf_ok"] = 1 if after.ok else 0
        self._event("reverted", after)

    def _restore(self) -> str:
        path, directory = self.path, os.path.dirname(self.path) or "/"
        tmp = os.path.join(directory, f".{os.path.basename(path)}.nettrust-tmp")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        link = self.good_link
        if link is not None and inspect(
                os.path.normpath(os.path.join(directory, link))).ok:
            os.symlink(link, tmp)
            os.replace(tmp, path)
            return f"the link to {link} restored"
        text = self.good_text if self.good_text is not None else DEFAULT_TEXT
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            os.unlink(tmp)
            with open(path, "w") as f:      # a bind mount (containers): in place
                f.write(text)
            return "its last good contents written in place (a mount point)"
        return ("its last good contents restored" if self.good_text is not None
                else "nameserver 127.0.0.1 written")

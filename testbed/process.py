"""Processes the lab starts: the namespace/privilege wrapper and the tracked handle.

Every command runs as ``ip netns exec <ns> [setpriv …] argv`` in its own session, so the PID the
lab tracks is the command itself (both wrappers exec) and its process group holds its children.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from .errors import SYSTEM_PATH, LabError, require_tool

_CAP_NAMES = frozenset("""
chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable
net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio
sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time
sys_tty_config mknod lease audit_write audit_control setfcap mac_override mac_admin syslog
wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore
""".split())


def normalise_caps(caps: tuple[str, ...] | list[str]) -> list[str]:
    """``("CAP_NET_ADMIN", "net_bind_service")`` -> ``["net_admin", "net_bind_service"]``."""
    if isinstance(caps, str):
        raise LabError(f"caps must be a sequence of capability names, not the string {caps!r}")
    result = []
    for cap in caps:
        name = cap.lower().removeprefix("cap_")
        if name not in _CAP_NAMES:
            raise LabError(f"unknown capability {cap!r}; use names like 'net_admin' or 'CAP_NET_BIND_SERVICE'")
        if name not in result:
            result.append(name)
    return result


def privilege_argv(user: str | int | None, caps: tuple[str, ...] | list[str]) -> list[str]:
    """The setpriv prefix that runs a command as ``user`` holding exactly ``caps``.

    With ``user=None`` the command stays root; with caps given, root is limited to them through
    the bounding set.  Without either, no prefix.
    """
    names = normalise_caps(caps)
    if user is None and not names:
        return []
    capset = ",".join(["-all"] + [f"+{n}" for n in names])
    argv = [require_tool("setpriv")]
    if user is not None:
        try:
            entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        except KeyError:
            hint = " (apt-get install unbound creates it)" if user == "unbound" else ""
            raise LabError(f"user {user!r} does not exist{hint}") from None
        argv += [f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                 f"--inh-caps={capset}", f"--ambient-caps={capset}"]
    else:
        argv += [f"--inh-caps={capset}"]
    argv += [f"--bounding-set={capset}", "--"]
    return argv


def command_env(user: str | int | None, env: dict[str, str | None] | None) -> dict[str, str]:
    """A clean environment (no proxies, no pyenv shims) plus ``env``; a None value removes a key."""
    home = "/root"
    if user is not None:
        try:
            home = (pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)).pw_dir
        except KeyError:
            pass
    result: dict[str, str] = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": home}
    for key, value in (env or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = str(value)
    return result


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LabProcess:
    """A process started by the lab: its PID, its log, and ways to signal and stop it."""

    def __init__(self, popen: subprocess.Popen, *, name: str, ns: str, argv: list[str],
                 log_path: Path) -> None:
        self._popen = popen
        self.name = name
        self.ns = ns
        self.argv = argv
        self.log_path = log_path

    def __repr__(self) -> str:
        state = "alive" if self.alive() else f"exited {self.returncode}"
        return f"<LabProcess {self.name} pid={self.pid} ns={self.ns} {state}>"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs.

        Looking does not reap the process, so its process group cannot be reused before
        ``stop()`` has signalled it.
        """
        if self._popen.returncode is not None:
            return self._popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:          # reaped elsewhere
            return self._popen.poll()
        if info is None or info.si_pid == 0:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def alive(self) -> bool:
        return self.returncode is None

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process itself (not its group); a no-op once it has exited."""
        if self._popen.returncode is None:     # not reaped: the PID is still ours
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status; LabError if it is still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                raise LabError(f"{self.name} (pid {self.pid}) still running after {timeout} s")
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL its whole process group; reap it."""
        if self._popen.returncode is None:
            self.kill(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            # The leader is alive or a zombie, so its PGID is still ours: children it left go too.
            _signal_group(self.pid, signal.SIGKILL)
        return self._popen.wait()

    def log_text(self) -> str:
        """Everything it wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """True once ``text`` appears in the log; False if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            if not self.alive():
                return text in self.log_text()
            time.sleep(0.01)
        return False

"""The one supervisor of the lab's services: BIND, pebble, the Cloudflare
emulator and apt-cacher-ng.

Each service is a plain host process in a session of its own, its output
appended to a log under the lab state directory.  It is found again through
its pid file and recognised by a fingerprint (a path of ours in its command
line), so a PID reused by another process is never signalled and nothing is
killed by name.  Lab machines are not services: their init is powered off
from inside (see machine.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mailops.errors import MailopsError
from mailops.lab.system import cmdline, is_ours, last_lines, pid_alive, spawn, wait_gone


class NotReady(Exception):
    """Raised by a readiness check when the service will not come up; the message is why."""


@dataclass
class Daemon:
    label: str                 # how messages name it: "pebble", "the Cloudflare emulator"
    fingerprint: str           # a path of ours that its command line contains
    pidfile: Path
    log: Path
    # A stricter ownership test than the fingerprint, where a service needs one (named).
    owns: Callable[[int], bool] | None = None

    def is_ours(self, pid: int | None) -> bool:
        if not pid_alive(pid):
            return False
        return self.owns(pid) if self.owns else is_ours(pid, self.fingerprint)

    def running_pid(self) -> int | None:
        """The PID in the pid file, if that process is alive and ours."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self.is_ours(pid) else None

    def start(self, argv: Sequence[str], ready: Callable[[], bool], *, timeout: float, waiting_for: str,
              detail: Callable[[bool], str] | None = None, env: dict | None = None, cwd: Path | None = None,
              write_pidfile: bool = True, poll: float = 0.2) -> int:
        """Spawn argv and poll ready() until it is true; return the PID.

        ready() may raise NotReady to give up early.  detail(exited) explains a failure
        (default: the log's last lines).  On any failure the process is stopped again and
        the error is one line naming the log."""
        explain = detail or (lambda exited: last_lines(self.log))
        try:
            proc = spawn(argv, self.log, env=env, cwd=cwd)
        except OSError as exc:
            raise MailopsError(f"cannot run {argv[0]}: {exc.strerror}") from None
        if write_pidfile:
            self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        try:
            while True:
                if ready():
                    return proc.pid
                if proc.poll() is not None:
                    raise MailopsError(f"{self.label} exited with status {proc.returncode} ({self.log}): "
                                       f"{explain(True)}")
                if time.monotonic() > deadline:
                    raise MailopsError(f"{self.label} did not {waiting_for} within {timeout:g}s ({self.log}): "
                                       f"{explain(False)}")
                time.sleep(poll)
        except NotReady as exc:
            self._abandon(proc)
            raise MailopsError(f"{self.label} failed to start ({self.log}): {exc}") from None
        except BaseException:
            self._abandon(proc)
            raise

    def _abandon(self, proc: subprocess.Popen) -> None:
        """Stop a process start() spawned (we hold its Popen, so it is certainly ours)."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._forget(proc.pid)

    def stop(self, pid: int | None, *, refuse_foreign: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM a process of ours, SIGKILL it if it does not exit, remove its pid file.

        A process that is gone is no error; one that is not ours is left alone, or, with
        refuse_foreign, refused with an error (for callers that name a PID themselves)."""
        if not pid_alive(pid):
            self._forget(pid)
            return
        if not self.is_ours(pid):
            if refuse_foreign and pid_alive(pid):
                raise MailopsError(f"refusing to stop pid {pid}: it is not a mailops lab {self.label} "
                                   f"({cmdline(pid).strip() or '?'})")
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if sig == signal.SIGKILL and not self.is_ours(pid):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if wait_gone(pid, wait):
                break
        else:
            raise MailopsError(f"{self.label} (pid {pid}) did not exit after SIGTERM and SIGKILL")
        self._forget(pid)

    def _forget(self, pid: int | None) -> None:
        """Remove the pid file if it still names pid."""
        try:
            if pid and int(self.pidfile.read_text().split()[0]) == pid:
                self.pidfile.unlink()
        except (OSError, ValueError, IndexError):
            pass

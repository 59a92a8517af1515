"""Small helpers for running host commands and tracking processes we start.

Processes are identified by PID *and* a fingerprint (a path that must appear
in their command line or root), so teardown never kills a process that merely
reuses a recorded PID, and never kills anything by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from mailops.errors import MailopsError, PrerequisiteMissing


def run(cmd: Sequence[str], what: str, *, check: bool = True, timeout: float | None = 600,
        input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command; on failure raise a one-line error saying what we were doing."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              input=input, env=env)
    except FileNotFoundError as exc:
        raise PrerequisiteMissing(f"{what}: command {cmd[0]!r} not found; install it (see README)") from exc
    except subprocess.TimeoutExpired as exc:
        raise MailopsError(f"{what}: {cmd[0]} did not finish within {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise MailopsError(f"{what}: {' '.join(cmd[:3])} failed: {last}")
    return proc


def require_commands(commands: dict[str, str]) -> None:
    """commands maps executable -> Debian package that provides it."""
    missing = [f"{cmd} (apt install {pkg})" for cmd, pkg in commands.items() if shutil.which(cmd) is None]
    if missing:
        raise PrerequisiteMissing("missing commands: " + ", ".join(missing))


def require_root() -> None:
    if os.geteuid() != 0:
        raise PrerequisiteMissing("the lab needs root (network namespaces, bridges, systemd-nspawn); run as root")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_root(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""


def is_ours(pid: int | None, fingerprint: str) -> bool:
    """True if pid is alive and its command line or root mentions fingerprint."""
    if not pid_alive(pid):
        return False
    return fingerprint in cmdline(pid) or proc_root(pid).startswith(fingerprint)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def spawn(cmd: Sequence[str], log: Path, *, env: dict | None = None, cwd: Path | None = None,
          cgroups: Sequence[Path] = ()) -> subprocess.Popen:
    """Start a long-running process detached from our session, output appended to log
    (and, when given, in these cgroup directories, one per hierarchy, before it execs)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    procs = [str(g / "cgroup.procs") for g in cgroups]

    def enter_cgroups() -> None:
        for f in procs:
            with open(f, "w") as out:
                out.write(str(os.getpid()))

    with open(log, "ab") as out:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env, cwd=cwd,
                                preexec_fn=enter_cgroups if procs else None)


def wait_tcp(host: str, port: int, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def last_lines(path: Path, n: int = 3) -> str:
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty log)"

"""The lab's one process supervisor (mailops.lab.supervisor.Daemon), with real child
processes (python3 itself) and no root: start until ready, recognition by pid file and
fingerprint, early exit and timeout reported in one line, stop by TERM then KILL, and
a PID that is not ours never signalled."""

from __future__ import annotations

import os
import sys
import time

import pytest

from mailops.errors import MailopsError
from mailops.lab.supervisor import Daemon, NotReady
from mailops.lab.system import pid_alive

# A stand-in service: writes "ready" to a file after a short start-up, then serves until signalled.
SERVICE = """
import pathlib, signal, sys, time
marker, ignore_term = pathlib.Path(sys.argv[1]), sys.argv[2] == "ignore-term"
if ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(0.3)
marker.write_text("ready")
print("serving", flush=True)
while True:
    time.sleep(1)
"""


def service(tmp_path, *, ignore_term: bool = False) -> tuple[Daemon, list[str]]:
    state = tmp_path / "svc"
    state.mkdir(exist_ok=True)
    argv = [sys.executable, "-c", SERVICE, str(state / "ready"), "ignore-term" if ignore_term else "-"]
    # the fingerprint: our state dir, which the command line names
    return Daemon("the test service", str(state), state / "svc.pid", state / "svc.log"), argv


def test_start_waits_until_ready_and_stop_removes_it(tmp_path):
    daemon, argv = service(tmp_path)
    ready = tmp_path / "svc" / "ready"
    pid = daemon.start(argv, ready.exists, timeout=10, waiting_for="get ready")
    try:
        assert ready.read_text() == "ready"
        assert daemon.running_pid() == pid and daemon.is_ours(pid)
        assert daemon.pidfile.read_text().strip() == str(pid)
    finally:
        daemon.stop(pid)
    assert not pid_alive(pid)
    assert not daemon.pidfile.exists() and daemon.running_pid() is None
    assert "serving" in daemon.log.read_text()
    daemon.stop(pid)  # gone already: no error


def test_a_pid_that_is_not_ours_is_never_signalled(tmp_path):
    daemon, _ = service(tmp_path)
    daemon.pidfile.write_text(f"{os.getpid()}\n")  # alive, but its command line lacks the fingerprint
    assert daemon.running_pid() is None
    daemon.stop(os.getpid())  # left alone
    with pytest.raises(MailopsError, match="refusing to stop pid") as ei:
        daemon.stop(os.getpid(), refuse_foreign=True)
    assert "\n" not in str(ei.value)
    assert pid_alive(os.getpid())


def test_a_service_that_exits_during_start_up_is_one_line_naming_the_log(tmp_path):
    daemon, _ = service(tmp_path)
    argv = [sys.executable, "-c", "import sys; print('bad config line 3'); sys.exit(3)", daemon.fingerprint]
    with pytest.raises(MailopsError) as ei:
        daemon.start(argv, lambda: False, timeout=10, waiting_for="get ready")
    msg = str(ei.value)
    assert "the test service exited with status 3" in msg and str(daemon.log) in msg
    assert "bad config line 3" in msg and "\n" not in msg
    assert not daemon.pidfile.exists()


def test_timeout_and_not_ready_stop_what_was_started(tmp_path):
    daemon, argv = service(tmp_path, ignore_term=True)  # needs the SIGKILL
    seen: list[int] = []

    def never() -> bool:
        seen.append(int(daemon.pidfile.read_text()))
        return False

    t0 = time.monotonic()
    with pytest.raises(MailopsError, match=r"did not get ready within 1s \(.*svc\.log\)") as ei:
        daemon.start(argv, never, timeout=1, waiting_for="get ready")
    assert "\n" not in str(ei.value) and time.monotonic() - t0 < 15
    assert not pid_alive(seen[0]) and daemon.running_pid() is None and not daemon.pidfile.exists()

    def refuse() -> bool:
        seen.append(int(daemon.pidfile.read_text()))
        raise NotReady("port 53 is in use")

    daemon, argv = service(tmp_path)
    with pytest.raises(MailopsError, match=r"the test service failed to start \(.*svc\.log\): port 53 is in use"):
        daemon.start(argv, refuse, timeout=10, waiting_for="get ready")
    assert not pid_alive(seen[-1]) and daemon.running_pid() is None


def test_stop_kills_a_service_that_ignores_sigterm(tmp_path):
    daemon, argv = service(tmp_path, ignore_term=True)
    ready = tmp_path / "svc" / "ready"
    pid = daemon.start(argv, ready.exists, timeout=10, waiting_for="get ready")
    daemon.stop(pid, timeout=0.5)
    assert not pid_alive(pid) and daemon.running_pid() is None

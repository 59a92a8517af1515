"""Shared fixtures and the lab's place in a session.  The lab is real: nspawn machines,
BIND, apt-cacher-ng and a Postfix receiving host.  Tests that need it skip when the
machine cannot run it (not root, a command missing) - except in CI (CI=true), where a
missing prerequisite fails the run instead of hiding it.

The lab is brought up by the first test that needs it and reused by the rest.  Tests
marked ``takes_lab_down`` (tests/test_teardown.py: `lab down`, a failed `lab up`)
run after all others, or every later lab test would bring it up again.  A session
that brought the lab up takes it down at its end; a lab that was up before the
session started is left up."""

from __future__ import annotations

import os
import shutil

import pytest

from mailops.lab import core
from mailops.lab.config import LabConfig
from tests.helpers import LAB_INVENTORY

# mailops has no built-in default inventory (issue 16): the suite's commands without -i act on the
# lab inventory, named here once for every test, `mailops` subprocess and in-process CLI run (a
# developer's own MAILOPS_INVENTORY must not leak in). tests/test_install.py unsets it where it tests the default.
os.environ["MAILOPS_INVENTORY"] = str(LAB_INVENTORY)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_LAB_WAS_PRESENT = pytest.StashKey[bool]()


def missing_prerequisite(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_lab_prerequisites() -> None:
    if os.geteuid() != 0:
        missing_prerequisite("the lab needs root")
    absent = [c for c in core.REQUIRED_COMMANDS if shutil.which(c) is None]
    if absent:
        missing_prerequisite("missing commands: " + ", ".join(absent))


def _lab_present(cfg: LabConfig) -> bool:
    # what `lab up` itself takes as a lab already made (its state file; `lab down` removes it)
    return core.state_file(cfg).exists()


def pytest_configure(config) -> None:
    config.stash[_LAB_WAS_PRESENT] = _lab_present(LabConfig())


def pytest_collection_modifyitems(config, items) -> None:
    """Move the tests that take the lab down to the end, keeping their order."""
    last = [item for item in items if item.get_closest_marker("takes_lab_down")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("takes_lab_down")] + last


def pytest_sessionfinish(session, exitstatus) -> None:
    """Take the lab down if this session brought it up: it ran lab tests, and the lab is present
    now but was not when the session started.  (A session without lab tests never touches it:
    another session may have brought it up meanwhile.)"""
    cfg = LabConfig()
    ran_lab_tests = any(item.get_closest_marker("lab") for item in getattr(session, "items", []))
    if not ran_lab_tests or session.config.stash.get(_LAB_WAS_PRESENT, True) or not _lab_present(cfg):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    try:
        core.down(cfg)
    except Exception as exc:  # a lab left behind must fail the run, not hide behind passed tests
        if reporter:
            reporter.write_line(f"lab down at the end of the session failed: {exc}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        if reporter:
            reporter.write_line("lab down: this session brought the lab up")


def pytest_terminal_summary(terminalreporter) -> None:
    """Time per test file (setup, call and teardown), the 15 largest: where CI time goes."""
    per_file: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) and hasattr(report, "duration"):
                path = report.nodeid.split("::", 1)[0]
                per_file[path] = per_file.get(path, 0.0) + report.duration
    if len(per_file) < 2:
        return
    terminalreporter.write_sep("=", "slowest 15 test files")
    for path, seconds in sorted(per_file.items(), key=lambda kv: -kv[1])[:15]:
        terminalreporter.write_line(f"{seconds:8.1f}s {path}")
    terminalreporter.write_line(f"{sum(per_file.values()):8.1f}s in all {len(per_file)} files")


@pytest.fixture(scope="session")
def lab_cfg() -> LabConfig:
    return LabConfig()


@pytest.fixture(scope="session")
def lab(lab_cfg):
    """The lab, up with one VPS (idempotent: reuses a running lab)."""
    require_lab_prerequisites()
    result = core.up(lab_cfg, vps=1)
    return result


@pytest.fixture(scope="module")
def converged(mailhost):
    """The module's ``mailhost`` (a tests.mailhost.MailHost the module's own fixture makes) converged
    twice, so every test of the module starts from a converged host and can check idempotence."""
    return mailhost.converge_twice()

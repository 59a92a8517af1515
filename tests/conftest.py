"""Shared fixtures.  The lab is real: nspawn machines, BIND, apt-cacher-ng and a
Postfix receiving host.  Tests that need it skip when the machine cannot run it
(not root, a command missing) - except in CI (CI=true), where a missing
prerequisite fails the run instead of hiding it."""

from __future__ import annotations

import os
import shutil

import pytest

from mailops.lab import core
from mailops.lab.config import LabConfig

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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

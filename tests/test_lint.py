"""The Ansible content passes ansible-lint's production profile."""

import shutil
import subprocess

from tests.helpers import ROOT, VENV_BIN


def test_ansible_lint_production_profile():
    lint = shutil.which("ansible-lint", path=str(VENV_BIN))
    assert lint, "ansible-lint is a test dependency (pip install -e '.[test]')"
    proc = subprocess.run([lint, "--profile", "production", "--offline", "--nocolor", "roles", "playbooks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

"""What many test files need: where the repository and the venv's commands are, one runner
for the `mailops` CLI as a user runs it (a subprocess), and one writer of temporary
inventories (a copy of a shipped one, edited)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LAB_INVENTORY = ROOT / "inventories" / "lab"
# the two files of an inventory directory the tests edit
HOSTS = "hosts.yml"
SETTINGS = "group_vars/all/mailops.yml"


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's commands (ansible-playbook, mailops) first on PATH."""
    return dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def playbook_env(**extra: str) -> dict[str, str]:
    """venv_env for the tests' own ansible-playbook runs: with the mitogen strategy, as `mailops
    provision` converges (mailops.ansible.ansible_env); plain Ansible is proven by test_provision's
    plain ansible-playbook run and by test_install's collection play."""
    from mailops.ansible import mitogen_env

    return venv_env(**{**mitogen_env(), **extra})


def mailops(*args: str, check: bool = True, timeout: float = 1500, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `mailops` command from the repository root, as a user would.

    With ``check`` (the default) a non-zero exit fails the test with the tail of both streams.
    Standard input is empty unless ``input`` is given, so a command that would prompt fails
    instead of waiting."""
    stdin = None if input is not None else subprocess.DEVNULL
    proc = subprocess.run([str(VENV_BIN / "mailops"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, input=input, stdin=stdin, env=env)
    if check:
        assert proc.returncode == 0, (f"mailops {' '.join(args)} failed ({proc.returncode}):\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def write_yaml(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_yaml(path: Path, edit: Callable[[dict], object]) -> None:
    """Parse a YAML file, let ``edit(data)`` change it in place, write it back (comments are lost)."""
    data = yaml.safe_load(path.read_text())
    edit(data)
    write_yaml(path, data)


def replace_text(path: Path, old: str, new: str, count: int = -1) -> None:
    """Replace ``old`` by ``new`` (the first ``count`` times; all by default) in a file that must contain
    it, keeping comments and layout."""
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, count))


def copy_inventory(dest: Path, source: Path = LAB_INVENTORY, *, settings: Callable[[dict], object] | None = None,
                   hosts: Callable[[dict], object] | None = None) -> Path:
    """A temporary inventory: a copy of ``source`` (the lab inventory unless given) at ``dest``,
    with group_vars/all/mailops.yml edited by ``settings(dict)`` and hosts.yml by ``hosts(dict)``."""
    shutil.copytree(source, dest)
    if settings is not None:
        edit_yaml(dest / SETTINGS, settings)
    if hosts is not None:
        edit_yaml(dest / HOSTS, hosts)
    return dest


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks and handlers that reported a change in ansible-playbook output
    (for failure messages of idempotence checks)."""
    names, current = [], None
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:") and current:
            names.append(current)
    return names


def plan(inv, keystore, **kw):
    """`dns plan` of an inventory through its own providers, with no public TXT to merge with."""
    from mailops.dns.sync import make_plan
    return make_plan(inv, keystore, resolve_txt=lambda _name: [], **kw)


def sync(inv, keystore, **kw):
    """`dns sync --apply` of ``plan``; returns the plan and its providers."""
    from mailops.dns.sync import apply_plan
    result, providers = plan(inv, keystore, **kw)
    apply_plan(result, providers)
    return result, providers


def rows(result) -> list[tuple[str, str, str]]:
    """A plan's rows as sorted (action, name, type)."""
    return sorted((r["action"], r["name"], r["type"]) for z in result.zones for r in z.rows())

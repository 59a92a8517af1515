"""Roles base and firewall on a real lab VPS: a check run on the pristine machine
must not fail, a converge followed by a second converge must change nothing, a
``--check --diff`` run on the converged host must change nothing either, and the
testinfra checks of both roles must pass.

The VPS is ``$MAILOPS_TEST_VPS`` (default vps2); it is reset to a pristine
machine first, so point the variable at a VPS nobody else is using.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from mailops.lab import core
from tests.conftest import require_lab_prerequisites
from tests.helpers import ROOT as REPO, VENV_BIN, changed_tasks, venv_env

pytestmark = pytest.mark.lab

RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


@pytest.fixture(scope="module")
def converge_env(lab_cfg, tmp_path_factory):
    require_lab_prerequisites()
    name = os.environ.get("MAILOPS_TEST_VPS", "vps2")
    match = re.fullmatch(r"vps(\d+)", name)
    assert match, f"MAILOPS_TEST_VPS must name a lab VPS like vps2, not {name!r}"
    number = int(match.group(1))
    core.up(lab_cfg, vps=number)
    core.reset(lab_cfg, name)
    vps = lab_cfg.vps(number)
    fqdn = f"mta{number}.shop.test"
    work = tmp_path_factory.mktemp("roles-base-firewall")
    inventory = work / "hosts.ini"
    inventory.write_text(textwrap.dedent(f"""\
        [mailhosts]
        {fqdn} ansible_host={vps.ipv4} ansible_user=root ansible_ssh_private_key_file={lab_cfg.ssh_key} \
ansible_python_interpreter=/usr/bin/python3 \
ansible_ssh_common_args='-o UserKnownHostsFile={lab_cfg.known_hosts} -o StrictHostKeyChecking=yes' \
mailops_ipv4={vps.ipv4} mailops_ipv6={vps.ipv6}

        [all:vars]
        mailops_apt_proxy={lab_cfg.proxy_url}
        """))
    playbook = work / "site.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Roles base and firewall
          hosts: mailhosts
          roles: [base, firewall]
        """))
    env = venv_env(ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_PIPELINING="1",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0")
    return {"name": name, "fqdn": fqdn, "inventory": inventory, "playbook": playbook, "env": env}


def run_playbook(ctx, *args: str) -> dict:
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(ctx["inventory"]), *args,
                           str(ctx["playbook"])], env=ctx["env"], capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ansible-playbook {' '.join(args)} failed (rc {proc.returncode}):\n{out[-6000:]}"
    recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(out)}
    assert ctx["fqdn"] in recap, f"no PLAY RECAP for {ctx['fqdn']}:\n{out[-3000:]}"
    return {"stats": recap[ctx["fqdn"]], "output": out}


def test_converge_is_idempotent_and_checks_pass(lab_cfg, converge_env):
    ctx = converge_env
    fresh_check = run_playbook(ctx, "--check")
    assert fresh_check["stats"]["failed"] == 0

    first = run_playbook(ctx)
    assert first["stats"]["changed"] > 0, "the first converge on a pristine VPS changed nothing"

    second = run_playbook(ctx)
    assert second["stats"]["changed"] == 0, (
        f"second converge changed {second['stats']['changed']} task(s): {changed_tasks(second['output'])}")

    check = run_playbook(ctx, "--check", "--diff")
    assert check["stats"]["changed"] == 0, (
        f"--check --diff on the converged host reports changes: {changed_tasks(check['output'])}")

    # SSH (from the lab gateway) still works with the firewall on.
    proc = core.ssh_run(lab_cfg, ctx["name"], "nft list table inet mailops_filter >/dev/null && echo ok")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", f"SSH after the firewall: {proc.stderr}"

    checks = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         str(REPO / "mailops" / "checks" / "test_base.py"), str(REPO / "mailops" / "checks" / "test_firewall.py"),
         f"--hosts=ansible://{ctx['fqdn']}", f"--ansible-inventory={ctx['inventory']}"],
        env=ctx["env"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert checks.returncode == 0, f"testinfra checks failed:\n{checks.stdout[-6000:]}{checks.stderr[-2000:]}"

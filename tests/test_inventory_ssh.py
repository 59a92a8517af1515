"""SSH access of mail hosts comes from mailops' own inventory loader.

The options are the ones Ansible uses for the host (checked against
``ansible-inventory`` itself), and day-two commands learn them without running
``ansible-inventory`` again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mailops.ansible import ansible_env
from mailops.errors import MailopsError
from mailops.inventory import load, load_inventory
from mailops.inventory.ssh import known_hosts_file
from tests.helpers import HOSTS, LAB_INVENTORY, VENV_BIN, copy_inventory, replace_text

HOST = "mta1.shop.test"


def test_lab_host_carries_the_ssh_options_of_its_inventory():
    inv = load("lab")
    host = inv.host(HOST)
    assert inv.path == LAB_INVENTORY.resolve()
    assert host.known_hosts == Path("/var/lib/mailops/lab/ssh/known_hosts")
    assert host.known_host_name == "198.51.100.11"
    assert host.ssh_command() == [
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-i", "/var/lib/mailops/lab/ssh/id_ed25519",
        "-p", "22", "-o", "UserKnownHostsFile=/var/lib/mailops/lab/ssh/known_hosts",
        "-o", "StrictHostKeyChecking=yes", "root@198.51.100.11"]


def test_ssh_options_match_what_ansible_sees_with_precedence(tmp_path):
    """host_vars/ overrides hosts.yml, group vars reach the host: mailops and ansible-inventory agree."""
    inv_dir = copy_inventory(tmp_path / "inv")
    (inv_dir / "host_vars").mkdir()
    (inv_dir / "host_vars" / f"{HOST}.yml").write_text(
        "ansible_port: 2222\nansible_user: deploy\n"
        "ansible_ssh_common_args: \"-o UserKnownHostsFile=/tmp/kh/known -o StrictHostKeyChecking=yes\"\n")
    host = load(inv_dir).host(HOST)
    assert (host.ssh_port, host.ssh_user) == (2222, "deploy")
    assert host.known_hosts == Path("/tmp/kh/known") and host.known_host_name == "[198.51.100.11]:2222"
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inv_dir), "--host", HOST],
                          capture_output=True, text=True, env=ansible_env(), timeout=120, check=True)
    ansible = json.loads(proc.stdout)
    assert (host.ssh_host, host.ssh_port, host.ssh_user, host.ssh_private_key_file, host.ssh_common_args) == (
        ansible["ansible_host"], ansible["ansible_port"], ansible["ansible_user"],
        ansible["ansible_ssh_private_key_file"], ansible["ansible_ssh_common_args"])
    assert host.known_hosts == known_hosts_file(ansible["ansible_ssh_common_args"])


def test_mail_hosts_do_not_run_ansible_inventory(monkeypatch):
    from mailops.ops import remote

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    inv = load("lab")
    assert [h.name for h in remote.mail_hosts(inv)] == [HOST]
    assert remote.mail_hosts(LAB_INVENTORY, HOST)[0].known_hosts == inv.host(HOST).known_hosts
    with pytest.raises(MailopsError, match=r"no mail host 'nosuch\.example'; mail hosts: mta1\.shop\.test"):
        remote.mail_hosts(inv, "nosuch.example")


@pytest.mark.parametrize("value, words", [
    ('"-o UserKnownHostsFile=\'/tmp/x"', "cannot be split into ssh options"),
    ("[-o, x]", "expected ssh options as text, found a list"),
])
def test_bad_ssh_common_args_is_one_problem_line(tmp_path, value, words):
    inv_dir = copy_inventory(tmp_path / "inv")
    replace_text(inv_dir / HOSTS, "ansible_user: root", f"ansible_user: root\n          ansible_ssh_common_args: {value}")
    inv, problems = load_inventory(inv_dir)
    assert inv is None and len(problems) == 1
    assert problems[0].field.endswith("ansible_ssh_common_args") and words in problems[0].message

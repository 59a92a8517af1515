"""How mailops reaches a host over SSH: the options Ansible would use for it.

One reading of ``ansible_host``/``ansible_user``/``ansible_port``/
``ansible_ssh_private_key_file``/``ansible_ssh_common_args`` for everything
mailops runs itself (ssh-keyscan, ssh, Fabric), so no command needs
``ansible-inventory`` to learn them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path


def known_hosts_file(common_args: str) -> Path:
    """The ``UserKnownHostsFile`` named in ssh options, else ssh's default ``~/.ssh/known_hosts``."""
    words = shlex.split(common_args or "")
    for i, word in enumerate(words):
        opt = word
        if word == "-o" and i + 1 < len(words):
            opt = words[i + 1]
        if opt.lower().startswith("userknownhostsfile="):
            return Path(os.path.expanduser(opt.split("=", 1)[1].split()[0]))
    return Path.home() / ".ssh" / "known_hosts"


def known_host_name(address: str, port: int) -> str:
    """How known_hosts names the host: ``address``, or ``[address]:port`` off port 22."""
    return address if int(port) == 22 else f"[{address}]:{port}"


def ssh_command(address: str, *, user: str = "root", port: int | None = None, private_key_file: str | None = None,
                common_args: str = "") -> list[str]:
    """``ssh`` with the options Ansible would use, ready for a remote command to be appended."""
    args = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
    if private_key_file:
        args += ["-i", os.path.expanduser(str(private_key_file))]
    if port:
        args += ["-p", str(port)]
    args += shlex.split(common_args or "")
    args += [f"{user}@{address}"]
    return args

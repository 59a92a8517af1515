"""SSH to the mail hosts of an inventory with Fabric, for day-two operations.

The connection uses exactly what Ansible uses (ansible_host, ansible_user,
ansible_port, ansible_ssh_private_key_file, the known_hosts file named in
ansible_ssh_common_args), as mailops' inventory loader read them, and trusts
only the host keys in that known_hosts file: an unknown or changed key is
refused, never added.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Callable, Iterator

from mailops.errors import MailopsError
from mailops.inventory import Inventory, MailHost, load


def mail_hosts(inventory: Inventory | str | Path, only: str | None = None) -> list[MailHost]:
    """The inventory's mail hosts (group mailhosts), or the one named ``only``.

    Pass the loaded :class:`Inventory`; a path or name is loaded here (once)."""
    inv = inventory if isinstance(inventory, Inventory) else load(inventory)
    return inv.select_hosts(only)


class Remote:
    """One SSH connection to a mail host (Fabric), closed on exit."""

    def __init__(self, host: MailHost, timeout: float = 15):
        import fabric
        import paramiko

        key = host.ssh_private_key_file
        connect_kwargs: dict = {"allow_agent": key is None, "look_for_keys": key is None}
        if key:
            connect_kwargs["key_filename"] = os.path.expanduser(key)
        self.host = host
        self.conn = fabric.Connection(host.ssh_host, user=host.ssh_user, port=host.ssh_port,
                                      connect_timeout=timeout, connect_kwargs=connect_kwargs)
        # Fabric adds unknown keys by default; a mail host's key must already be known.
        client = self.conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = host.known_hosts
        if known.exists():
            client.load_host_keys(str(known))

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def _open(self):
        import paramiko

        try:
            self.conn.open()
        except paramiko.BadHostKeyException:
            raise MailopsError(f"{self.host.name}: the SSH host key changed; refusing to connect") from None
        except paramiko.SSHException as exc:
            raise MailopsError(f"{self.host.name}: SSH to {self.host.ssh_host} failed: {exc} "
                               f"(is its host key in {self.host.known_hosts}?)") from None
        except OSError as exc:
            raise MailopsError(f"{self.host.name}: cannot reach {self.host.ssh_host}: {exc}") from None

    def run(self, command: str, *, stdin: str | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
        """Run a command, return its stdout; a non-zero exit is a one-line MailopsError."""
        import io

        self._open()
        result = self.conn.run(command, hide=True, warn=True, in_stream=io.StringIO(stdin or ""))
        if result.exited not in ok_codes:
            err = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise MailopsError(f"{self.host.name}: `{command.split()[0]}` failed (exit {result.exited}): "
                               f"{err[-1] if err else 'no output'}")
        return result.stdout

    def run_with_stderr(self, command: str, *, stdin: str | None = None) -> tuple[int, str, str]:
        import io

        self._open()
        result = self.conn.run(command, hide=True, warn=True, in_stream=io.StringIO(stdin or ""))
        return result.exited, result.stdout, result.stderr

    def stream_lines(self, command: str, on_bytes: Callable[[int], None] | None = None) -> Iterator[str | None]:
        """Yield a command's stdout line by line as it arrives, without keeping it
        (Fabric's run() would hold all of a long log in memory); None for an over-long line."""
        self._open()
        chan = self.conn.client.get_transport().open_session()
        chan.exec_command(command)
        from mailops.ops.logs import bounded_lines  # logs imports this module
        with chan.makefile("rb") as out:
            # a line over the cap is read in chunks and yielded as None, never held whole
            yield from bounded_lines(out, on_bytes or (lambda _n: None))
        status = chan.recv_exit_status()
        if status != 0:
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace").strip().splitlines()
            raise MailopsError(f"{self.host.name}: `{shlex.split(command)[0]}` failed (exit {status}): "
                               f"{err[-1] if err else 'no output'}")

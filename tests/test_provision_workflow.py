"""`provision.new_vps`, the new-VPS workflow, without the lab: trust -> pre-flight -> converge.

A small SSH server on loopback (paramiko) shows a host key and refuses every
login, which is enough to see the order of the steps: the key is recorded only
when expected or confirmed, a changed key is refused, and a failed pre-flight
check stops before anything is converged."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from pathlib import Path

import paramiko
import pytest

from mailops import provision
from mailops.errors import MailopsError
from mailops.inventory import load
from tests.helpers import copy_inventory, replace_text

HOST = "mta1.shop.test"


class KeyOnlySshServer:
    """Answers SSH key exchange with ``key`` on 127.0.0.1 and refuses every authentication."""

    def __init__(self, key: paramiko.PKey) -> None:
        self.key = key
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.key)
            self.transports.append(transport)
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()  # a probe for a key type this server does not have

    def close(self) -> None:
        self.sock.close()
        for t in self.transports:
            t.close()


def fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@pytest.fixture
def server():
    srv = KeyOnlySshServer(paramiko.ECDSAKey.generate())
    yield srv
    srv.close()


@pytest.fixture
def converged(monkeypatch) -> list:
    """Records converge/forget-facts calls instead of running Ansible."""
    calls: list = []
    monkeypatch.setattr(provision, "forget_facts", lambda host: calls.append(("forget", host)))
    monkeypatch.setattr(provision, "apply", lambda *a, **kw: calls.append(("apply", a, kw)))
    return calls


def inventory_for(tmp_path: Path, port: int):
    inv = copy_inventory(tmp_path / "inv")
    replace_text(inv / "hosts.yml", "ansible_host: 198.51.100.11", f"ansible_host: 127.0.0.1\n          ansible_port: {port}")
    replace_text(inv / "hosts.yml", "UserKnownHostsFile=/var/lib/mailops/lab/ssh/known_hosts",
                 f"UserKnownHostsFile={tmp_path / 'known_hosts'}")
    replace_text(inv / "hosts.yml", "ansible_ssh_private_key_file: /var/lib/mailops/lab/ssh/id_ed25519",
                 f"ansible_ssh_private_key_file: {tmp_path / 'no-such-key'}")
    return load(inv)


def test_unconfirmed_key_is_not_recorded_and_nothing_else_runs(tmp_path, server, converged):
    inv = inventory_for(tmp_path, server.port)
    shown, steps = [], []
    with pytest.raises(MailopsError, match=r"SSH host key of 127\.0\.0\.1 not confirmed \(SHA256:"):
        provision.new_vps(inv, HOST, confirm=lambda keys: shown.extend(keys) or False,
                          on_trust=steps.append, on_check=steps.append)
    assert [k.fingerprint for k in shown] == [fingerprint(server.key)]
    assert not (tmp_path / "known_hosts").exists() and steps == [] and converged == []


def test_expected_key_is_recorded_then_failed_preflight_stops_before_converge(tmp_path, server, converged):
    inv = inventory_for(tmp_path, server.port)
    trusts, checks = [], []
    with pytest.raises(MailopsError, match=rf"pre-flight check 'ssh' failed for {HOST}: cannot run commands over SSH"):
        provision.new_vps(inv, HOST, expect_fingerprint=fingerprint(server.key),
                          confirm=lambda keys: pytest.fail("asked although the fingerprint was given"),
                          on_trust=trusts.append, on_check=checks.append)
    assert [(t.status, t.fingerprints) for t in trusts] == [("recorded", [fingerprint(server.key)])]
    recorded = (tmp_path / "known_hosts").read_text().split()
    assert recorded[0] == f"[127.0.0.1]:{server.port}" and recorded[2] == server.key.get_base64()
    assert [(c.name, c.ok) for c in checks] == [("ssh", False)] and converged == []

    # a second run knows the key and asks nothing
    trusts.clear()
    with pytest.raises(MailopsError, match="pre-flight check 'ssh' failed"):
        provision.new_vps(inv, HOST, confirm=lambda keys: pytest.fail("asked for a known key"), on_trust=trusts.append)
    assert [t.status for t in trusts] == ["known"]


def test_changed_key_is_refused(tmp_path, server, converged):
    inv = inventory_for(tmp_path, server.port)
    (tmp_path / "known_hosts").write_text(
        f"[127.0.0.1]:{server.port} ecdsa-sha2-nistp256 {paramiko.ECDSAKey.generate().get_base64()}\n")
    with pytest.raises(MailopsError, match=r"does NOT match the one recorded in .*ssh-keygen -R \[127\.0\.0\.1\]:"):
        provision.new_vps(inv, HOST, confirm=lambda keys: True)
    assert converged == []


def test_unknown_host_names_the_mail_hosts(tmp_path, converged):
    inv = load(copy_inventory(tmp_path / "inv"))
    with pytest.raises(MailopsError, match=r"no mail host 'nosuch\.example'; mail hosts: mta1\.shop\.test"):
        provision.new_vps(inv, "nosuch.example", confirm=lambda keys: True)


def test_cli_new_vps_renders_each_step(tmp_path, server):
    """The CLI only renders: fingerprints, the trust decision, each pre-flight check, the error line."""
    from tests.helpers import mailops, venv_env

    inv = inventory_for(tmp_path, server.port)
    wide = venv_env(COLUMNS="300")  # rich wraps piped output at 80 columns
    proc = mailops("provision", "new-vps", HOST, "-i", str(inv.path), check=False, timeout=120, env=wide)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"  {HOST} host key ecdsa-sha2-nistp256 {fingerprint(server.key)}" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("mailops: error: SSH host key of 127.0.0.1 not confirmed")
    assert not (tmp_path / "known_hosts").exists()

    proc = mailops("provision", "new-vps", HOST, "-i", str(inv.path), "--yes", check=False, timeout=120, env=wide)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert "  trusting it (--yes)" in err
    assert f"host key recorded: {fingerprint(server.key)} ({tmp_path / 'known_hosts'})" in err
    assert any(line.startswith("  FAIL ssh: cannot run commands over SSH:") for line in err), err
    assert err[-1].startswith(f"mailops: error: pre-flight check 'ssh' failed for {HOST}: cannot run commands")


def test_converge_forgets_facts_cached_for_a_machine_that_was_re_installed(tmp_path, monkeypatch):
    """A server re-installed under the same name (perhaps with another Debian release) and
    trusted anew has other host keys than its cached facts: the next converge looks at it
    anew instead of giving the roles the old machine's vars; a host whose keys still match
    keeps its cache."""
    from mailops import ansible

    monkeypatch.setattr(provision, "apply", lambda *a, **kw: "applied")
    monkeypatch.setattr(ansible, "fact_cache_dir", lambda: tmp_path / "facts")
    (tmp_path / "facts").mkdir()
    inv = inventory_for(tmp_path, 22)
    host = inv.select_hosts(HOST)[0]
    old, new = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()

    def cache(key: paramiko.PKey) -> Path:
        # as ansible-core 2.19's jsonfile cache writes it (schema s1: the facts as a JSON string)
        path = tmp_path / "facts" / f"s1_{HOST}"
        path.write_text(json.dumps({"__payload__": json.dumps({
            "ansible_distribution_release": "bookworm", "ansible_ssh_host_key_ecdsa_public": key.get_base64(),
            "ansible_ssh_host_key_ecdsa_public_keytype": key.get_name()})}))
        return path

    def trust(key: paramiko.PKey) -> None:
        (tmp_path / "known_hosts").write_text(f"{host.known_host_name} {key.get_name()} {key.get_base64()}\n")

    trust(old)
    cached = cache(old)
    assert provision.converge(inv) == "applied" and cached.exists()  # the same machine
    trust(new)  # re-installed and trusted anew (new-vps after ssh-keygen -R)
    assert provision.forget_stale_facts(inv) == [HOST] and not cached.exists()
    cache(new)
    assert provision.forget_stale_facts(inv) == []

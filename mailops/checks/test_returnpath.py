"""The return path on a mail host (returnpath role), when the inventory sets mailops_return_path:
the lookup service runs on loopback, the key and state are private to its user, and Postfix
asks the service for the sender rewrite, the port-25 recipients and suppressed recipients."""

from __future__ import annotations

import pytest

from mailops.checks.conftest import host_variables

KEY_FILE = "/etc/mailops/returnpath.keys"
STATE_DIR = "/var/lib/mailops-returnpath"
SERVICE = "inet:127.0.0.1:10033"


@pytest.fixture(autouse=True)
def _return_path_on(host):
    hv = host_variables(host)
    if hv and not hv.get("mailops_return_path"):
        pytest.skip("mailops_return_path is not set: the return path is off")
    if not hv and not host.file(KEY_FILE).exists:
        pytest.skip("no return-path key on the host: the return path is off")


def postconf(host, name: str) -> str:
    out = host.run(f"postconf -h {name}")
    assert out.rc == 0, f"postconf -h {name} failed: {out.stderr.strip()}"
    return out.stdout.strip()


def test_service_enabled_running_on_loopback_only(host):
    svc = host.service("mailops-returnpath-map")
    assert svc.is_enabled, "mailops-returnpath-map is not enabled: it will not start at boot"
    assert svc.is_running, "mailops-returnpath-map is not running: submission and port 25 temp-fail"
    assert host.socket("tcp://127.0.0.1:10033").is_listening, "nothing listens on 127.0.0.1:10033"
    assert not host.socket("tcp://0.0.0.0:10033").is_listening, "the lookup service listens on every address"


def test_key_file_and_state_are_private(host):
    key = host.file(KEY_FILE)
    assert key.exists, f"{KEY_FILE} is missing"
    assert (key.user, key.mode) == ("mailops-rp", 0o600), f"{KEY_FILE} is {key.user} {oct(key.mode)}, expected mailops-rp 0600"
    state = host.file(STATE_DIR)
    assert state.is_directory and (state.user, state.mode) == ("mailops-rp", 0o700), \
        f"{STATE_DIR} is {state.user} {oct(state.mode)}, expected a mailops-rp directory 0700"


def test_postfix_asks_the_service(host):
    assert postconf(host, "sender_canonical_maps") == f"socketmap:{SERVICE}:sender"
    assert postconf(host, "sender_canonical_classes") == "envelope_sender"
    assert postconf(host, "relay_recipient_maps") == f"socketmap:{SERVICE}:rcpt"
    assert postconf(host, "relay_transport") == "mailops_rp"
    assert SERVICE in postconf(host, "mailops_suppression")
    out = host.run("postconf -P")
    submission = [line for line in out.stdout.splitlines() if "/smtpd_recipient_restrictions" in line
                  and line.startswith(("submission/", "submissions/"))]
    assert len(submission) == 2 and all("mailops_suppression" in line for line in submission), submission


def test_the_service_answers_a_listed_address(host):
    out = host.run("python3 -c \"import socket; s=socket.create_connection(('127.0.0.1',10033),5); "
                   "q=b'rcpt postmaster@invalid.invalid'; s.sendall(str(len(q)).encode()+b':'+q+b','); "
                   "print(s.recv(200).decode())\"")
    assert out.rc == 0 and out.stdout.strip() == "9:NOTFOUND ,", out.stdout + out.stderr

"""Dovecot as Postfix's SASL backend only (sasl role)."""

from __future__ import annotations

import pytest


def test_dovecot_enabled_and_running(host):
    svc = host.service("dovecot")
    assert svc.is_enabled, "dovecot is not enabled"
    assert svc.is_running, "dovecot is not running: SASL authentication on 587/465 fails"


def test_no_mailbox_protocols(host):
    out = host.run("doveconf -h protocols")
    assert out.rc == 0, f"doveconf failed: {out.stderr.strip()}"
    assert out.stdout.strip() == "", f"dovecot serves protocols {out.stdout.strip()!r}; it should only do auth"


@pytest.mark.parametrize("port", [110, 143, 993, 995])
def test_no_imap_pop3_listener(host, port):
    for addr in (f"tcp://0.0.0.0:{port}", f"tcp://:::{port}"):
        assert not host.socket(addr).is_listening, f"something listens on {addr} (IMAP/POP3 must be off)"


def test_auth_socket(host):
    sock = host.file("/var/spool/postfix/private/auth")
    assert sock.exists and sock.is_socket, "the Dovecot auth socket /var/spool/postfix/private/auth is missing"
    assert sock.user == "postfix" and sock.group == "postfix", f"auth socket owned by {sock.user}:{sock.group}"
    assert sock.mode == 0o660, f"auth socket mode is {oct(sock.mode)}, expected 0660"


def test_user_database(host):
    f = host.file("/etc/dovecot/mailops-users")
    assert f.exists, "/etc/dovecot/mailops-users is missing"
    assert f.user == "root" and f.group == "dovecot", f"user database owned by {f.user}:{f.group}"
    assert f.mode == 0o640, f"user database mode is {oct(f.mode)}, expected 0640 (hashes must not be world-readable)"
    lines = [l for l in f.content_string.splitlines() if l and not l.startswith("#")]
    for line in lines:
        fields = line.split(":")
        assert fields[1].startswith("{"), f"password of {fields[0]} is not a hashed {{SCHEME}} value"
        assert not fields[1].startswith("{PLAIN"), f"password of {fields[0]} is stored in plain text"


def test_plaintext_auth_needs_tls(host):
    # Dovecot 2.4 (Debian 13) renamed disable_plaintext_auth = yes to auth_allow_cleartext = no
    # (2.3 prints nothing for the new name)
    out = host.run("doveconf -h auth_allow_cleartext")
    if out.rc == 0 and out.stdout.strip():
        assert out.stdout.strip() == "no", "auth_allow_cleartext is not no"
    else:
        out = host.run("doveconf -h disable_plaintext_auth")
        assert out.stdout.strip() == "yes", "disable_plaintext_auth is not yes"

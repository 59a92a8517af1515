"""The sasl, opendkim and postfix roles on a lab VPS, end to end.

Converges a lab VPS (MAILOPS_TEST_VPS, default vps3) as mta<N>.shop.test with a
key store made here, checks idempotence, then proves the result the way a
mailbox provider sees it: a message submitted on 587 arrives at mx.inbox.test
with dkim=pass (d=shop.test, the active selector), spf=pass and dmarc=pass and
without the client's address or software in its headers; AUTH is not offered
on 25 nor before STARTTLS; a user cannot send as another user's address; with
OpenDKIM stopped nothing leaves unsigned.  Finally the testinfra checks of
mailops.checks run against the host.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage

import pytest

from mailops.lab import core, receiver
from tests.helpers import venv_env
from tests.mailhost import MailHost, ensure_lab_vps

pytestmark = pytest.mark.lab

VPS = os.environ.get("MAILOPS_TEST_VPS", "vps3")
ALICE_PW = "alice-" + uuid.uuid4().hex[:12]
BOB_PW = "bob-" + uuid.uuid4().hex[:12]
ACTIVE_SELECTOR = "mo-rolestest-a"
PENDING_SELECTOR = "mo-rolestest-p"


def _ssl_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test stands in a self-signed certificate
    return ctx


@pytest.fixture(scope="module")
def mailhost(lab_cfg, tmp_path_factory):
    number = int(VPS.removeprefix("vps"))
    ensure_lab_vps(lab_cfg, number)
    host = MailHost(
        lab_cfg, tmp_path_factory.mktemp("roles"), number,
        selectors={ACTIVE_SELECTOR: "active", PENDING_SELECTOR: "pending"},
        users=[{"login": "alice@shop.test", "password": {"file": "secrets/alice.password"}},
               {"login": "bob@shop.test", "password": {"env": "MAILOPS_TEST_BOB_PW"},
                "send_as": ["noreply@shop.test"]}],
        passwords={"alice@shop.test": ALICE_PW, "bob@shop.test": BOB_PW},
        # news.test is signed elsewhere: this host must not sign it
        group_vars={"mailops_domains": {"shop.test": {"dns_provider": "lab"},
                                        "news.test": {"dns_provider": "lab", "hosts": ["someone-else.example"]}}},
        env={"MAILOPS_TEST_BOB_PW": BOB_PW})
    return host


def test_pristine_vps_check_run_and_sasl_tag_alone(mailhost, lab_cfg):
    """On a pristine VPS a --check run fails nothing (the roles skip what needs their packages), and
    `--tags sasl` alone - the roles listed without tags of their own - installs what sasl needs: the
    postfix role's install tasks it includes run too, so Dovecot's auth socket has its postfix owner.
    (Runs first: the converged fixture of the later tests then converges this host.)"""
    core.reset(lab_cfg, mailhost.name)
    _, check = mailhost.converge("--check")
    assert check["failed"] == 0, check
    assert "install ok installed" not in mailhost.ssh("dpkg-query -W -f='${Status}' postfix dovecot-core || true")
    _, tagged = mailhost.converge("--tags", "sasl")
    assert tagged["failed"] == 0 and tagged["changed"] > 0, tagged
    got = mailhost.ssh("for p in postfix dovecot-core; do dpkg-query -W -f='${Package} ${db:Status-Status}\\n' $p; done; "
                       "stat -c '%U %F' /var/spool/postfix/private/auth; systemctl is-active dovecot")
    assert got.split("\n") == ["postfix installed", "dovecot-core installed", "postfix socket", "active", ""], got


def test_second_converge_changes_nothing(converged):
    assert converged.second["changed"] == 0, f"second converge changed {converged.second['changed']} things"


def test_check_diff_on_converged_host_changes_nothing(converged):
    _, stats = converged.converge("--check", "--diff")
    assert stats["changed"] == 0 and stats["failed"] == 0, stats


def _message(sender: str, subject: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, "someone@inbox.test", subject
    m["User-Agent"], m["X-Mailer"] = "SecretAgent/1.0", "LeakyMailer 2"
    m["Message-ID"] = f"<{uuid.uuid4().hex}@shop.test>"
    m.set_content("hello from the roles test\n")
    return m


def test_submitted_mail_passes_dkim_spf_dmarc_without_client_headers(converged):
    subject = "roles " + uuid.uuid4().hex[:10]
    with smtplib.SMTP(converged.ipv4, 587, timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth"), "AUTH is offered on 587 before STARTTLS"
        s.starttls(context=_ssl_ctx())
        s.ehlo("client.example")
        assert s.has_extn("auth"), "AUTH is not offered on 587 after STARTTLS"
        s.login("alice@shop.test", ALICE_PW)
        s.send_message(_message("alice@shop.test", subject))
    got = receiver.wait_for_message(converged.mx_root, recipient="someone@inbox.test", subject=subject, timeout=90)
    results = " ".join(got.authentication_results)
    assert got.auth_result("dkim") == "pass", results
    assert "header.d=shop.test" in results and f"header.s={ACTIVE_SELECTOR}" in results, results
    assert got.auth_result("spf") == "pass", results
    assert got.auth_result("dmarc") == "pass", results
    assert not got.message.get_all("User-Agent") and not got.message.get_all("X-Mailer"), "client software leaked"
    received = " ".join(str(h) for h in got.message.get_all("Received", []))
    assert "client.example" not in received and "198.51.100.1]" not in received, f"client leaked: {received}"


def test_no_auth_on_port_25(converged):
    with smtplib.SMTP(converged.ipv4, 25, timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth"), "AUTH offered on port 25"
        s.starttls(context=_ssl_ctx())
        s.ehlo("client.example")
        assert not s.has_extn("auth"), "AUTH offered on port 25 after STARTTLS"
        s.mail("x@example.org")
        code, _ = s.rcpt("someone@inbox.test")
        assert code == 554, f"port 25 relays for strangers (RCPT answered {code})"


def test_user_cannot_send_as_another_user(converged):
    with smtplib.SMTP_SSL(converged.ipv4, 465, timeout=30, context=_ssl_ctx()) as s:
        s.login("bob@shop.test", BOB_PW)
        s.mail("alice@shop.test")
        code, msg = s.rcpt("someone@inbox.test")
        assert code == 553, f"bob may send as alice: {code} {msg!r}"
        s.rset()
        s.mail("noreply@shop.test")
        code, _ = s.rcpt("someone@inbox.test")
        assert code == 250, "bob may not use his send_as address"


def _ssh(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, VPS, script)
    assert proc.returncode == 0, f"{script!r} failed: {proc.stderr}"
    return proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()


def test_nothing_leaves_unsigned_when_opendkim_is_down(converged, lab_cfg):
    _ssh(lab_cfg, "systemctl stop opendkim")
    try:
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            with smtplib.SMTP(converged.ipv4, 587, timeout=30) as s:
                s.starttls(context=_ssl_ctx())
                s.login("alice@shop.test", ALICE_PW)
                s.send_message(_message("alice@shop.test", "must-not-arrive"))
        assert 400 <= refused.value.smtp_code < 500, f"expected a 4xx, got {refused.value.smtp_code}"
        subject = "queued " + uuid.uuid4().hex[:10]
        _ssh(lab_cfg, f"printf 'From: alice@shop.test\\nTo: someone@inbox.test\\nSubject: {subject}\\n\\nx\\n'"
                      " | sendmail -f alice@shop.test someone@inbox.test")
        time.sleep(5)
        arrived = [m.subject for m in receiver.read_mailbox(converged.mx_root, "someone@inbox.test")]
        assert subject not in arrived, "a message left unsigned while OpenDKIM was down"
    finally:
        _ssh(lab_cfg, "systemctl start opendkim")
    _ssh(lab_cfg, "postqueue -f; postkick public pickup W || true")
    got = receiver.wait_for_message(converged.mx_root, recipient="someone@inbox.test", subject=subject, timeout=120)
    assert got.auth_result("dkim") == "pass", got.authentication_results


def test_testinfra_checks_pass(converged):
    env = venv_env()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
         "mailops.checks.test_postfix", "mailops.checks.test_sasl", "mailops.checks.test_opendkim",
         f"--hosts=ansible://{converged.fqdn}", f"--ansible-inventory={converged.inv}"],
        capture_output=True, text=True, env=env, cwd=converged.work)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

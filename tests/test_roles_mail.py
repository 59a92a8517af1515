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

import base64
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml

from mailops.lab import core, dns as labdns, receiver
from tests.conftest import missing_prerequisite, require_lab_prerequisites

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
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


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization as ser

    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _make_keystore(store: Path) -> list[dict]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = []
    for selector, state in ((ACTIVE_SELECTOR, "active"), (PENDING_SELECTOR, "pending")):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rel = f"shop.test/{selector}.key"
        _write_key(store / rel, key)
        pub = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        keys.append({"domain": "shop.test", "selector": selector, "algorithm": "rsa", "bits": 2048,
                     "state": state, "created": "2026-01-01T00:00:00+00:00",
                     "activated": "2026-01-02T00:00:00+00:00" if state == "active" else None,
                     "retired": None, "private_key": rel,
                     "dns_value": "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()})
    (store / "keys.json").write_text(json.dumps({"version": 1, "keys": keys}, indent=2))
    return keys


def _self_signed(tls_dir: Path, fqdn: str) -> None:
    tls_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                    "-subj", f"/CN={fqdn}", "-addext", f"subjectAltName=DNS:{fqdn}",
                    "-keyout", str(tls_dir / "privkey.pem"), "-out", str(tls_dir / "fullchain.pem")],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def mailhost(lab_cfg, tmp_path_factory):
    require_lab_prerequisites()
    if shutil.which("openssl") is None:
        missing_prerequisite("openssl is needed for the stand-in certificate")
    number = int(VPS.removeprefix("vps"))
    running = {m["name"] for m in core.status(lab_cfg)["machines"] if m["state"] == "running"}
    if VPS not in running or "mx" not in running:
        core.up(lab_cfg, vps=number)
    ipv4, ipv6 = f"198.51.100.{10 + number}", f"2001:db8:51::{10 + number}"
    fqdn = f"mta{number}.shop.test"
    work = tmp_path_factory.mktemp("roles")
    store = work / "keys"
    keys = _make_keystore(store)
    _self_signed(work / "tls", fqdn)

    dcfg = core.dns_config(lab_cfg)
    labdns.update(dcfg, "shop.test.", replace=[
        ("shop.test.", "TXT", f"v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:51::/64 ~all", 60),
        ("_dmarc.shop.test.", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r", 60),
        (f"{fqdn}.", "A", ipv4, 60), (f"{fqdn}.", "AAAA", ipv6, 60),
        *[(f"{k['selector']}._domainkey.shop.test.", "TXT", k["dns_value"], 60) for k in keys]])
    labdns.update(dcfg, "100.51.198.in-addr.arpa.", replace=[(str(10 + number), "PTR", f"{fqdn}.", 60)])
    labdns.update(dcfg, labdns.reverse_zone_for("2001:db8:51::/64"),
                  replace=[(labdns.ptr_name(ipv6), "PTR", f"{fqdn}.", 60)])

    inv = work / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "secrets").mkdir()
    (inv / "secrets" / "alice.password").write_text(ALICE_PW + "\n")
    ssh = lab_cfg.state_dir / "ssh"
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"mailhosts": {"hosts": {fqdn: {
        "ansible_host": ipv4, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes",
        "ansible_python_interpreter": "/usr/bin/python3",
        "mailops_ipv4": ipv4, "mailops_ipv6": ipv6}}}}}}))
    (inv / "group_vars" / "all" / "mailops.yml").write_text(yaml.safe_dump({
        "mailops_dkim_keystore": str(store),
        "mailops_apt_proxy": f"http://{lab_cfg.gateway_ipv4}:3142",
        "mailops_domains": {"shop.test": {"dns_provider": "lab"},
                            "news.test": {"dns_provider": "lab", "hosts": ["someone-else.example"]}},
        "mailops_submission_users": [
            {"login": "alice@shop.test", "password": {"file": "secrets/alice.password"}},
            {"login": "bob@shop.test", "password": {"env": "MAILOPS_TEST_BOB_PW"}, "send_as": ["noreply@shop.test"]},
        ]}))
    playbook = work / "converge.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "converge sasl, opendkim, postfix", "hosts": "mailhosts",
        "pre_tasks": [
            {"name": "apt proxy", "ansible.builtin.copy": {
                "content": "Acquire::http::Proxy \"{{ mailops_apt_proxy }}\";\n",
                "dest": "/etc/apt/apt.conf.d/01proxy", "mode": "0644"}},
            {"name": "tls dir", "ansible.builtin.file": {"path": "/etc/mailops/tls", "state": "directory",
                                                         "mode": "0755"}},
            {"name": "stand-in certificate", "no_log": True, "ansible.builtin.copy": {
                "src": f"{work / 'tls'}/{{{{ item.name }}}}", "dest": "/etc/mailops/tls/{{ item.name }}",
                "mode": "{{ item.mode }}"},
             "loop": [{"name": "fullchain.pem", "mode": "0644"}, {"name": "privkey.pem", "mode": "0600"}]},
        ],
        "roles": ["sasl", "opendkim", "postfix"]}]))
    env = dict(os.environ, MAILOPS_TEST_BOB_PW=BOB_PW, ANSIBLE_ROLES_PATH=str(REPO / "roles"),
               ANSIBLE_PIPELINING="True", ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def converge(*extra: str) -> tuple[str, dict]:
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inv), str(playbook), *extra],
                              capture_output=True, text=True, env=env, cwd=work)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"ansible-playbook {' '.join(extra)} failed:\n{out[-4000:]}"
        for secret in (ALICE_PW, BOB_PW, "PRIVATE KEY"):
            assert secret not in out, "a secret appeared in the Ansible output"
        recap = out.split("PLAY RECAP", 1)[1]
        stats = {k: int(v) for k, v in (part.split("=") for part in recap.split() if "=" in part)}
        return out, stats

    return {"fqdn": fqdn, "ipv4": ipv4, "inv": inv, "converge": converge, "work": work,
            "mx_root": core.machine_root(lab_cfg, "mx"), "number": number}


@pytest.fixture(scope="module")
def converged(mailhost):
    _, first = mailhost["converge"]()
    _, second = mailhost["converge"]()
    mailhost["second"] = second
    return mailhost


def test_second_converge_changes_nothing(converged):
    assert converged["second"]["changed"] == 0, f"second converge changed {converged['second']['changed']} things"


def test_check_diff_on_converged_host_changes_nothing(converged):
    _, stats = converged["converge"]("--check", "--diff")
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
    with smtplib.SMTP(converged["ipv4"], 587, timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth"), "AUTH is offered on 587 before STARTTLS"
        s.starttls(context=_ssl_ctx())
        s.ehlo("client.example")
        assert s.has_extn("auth"), "AUTH is not offered on 587 after STARTTLS"
        s.login("alice@shop.test", ALICE_PW)
        s.send_message(_message("alice@shop.test", subject))
    got = receiver.wait_for_message(converged["mx_root"], recipient="someone@inbox.test", subject=subject, timeout=90)
    results = " ".join(got.authentication_results)
    assert got.auth_result("dkim") == "pass", results
    assert "header.d=shop.test" in results and f"header.s={ACTIVE_SELECTOR}" in results, results
    assert got.auth_result("spf") == "pass", results
    assert got.auth_result("dmarc") == "pass", results
    assert not got.message.get_all("User-Agent") and not got.message.get_all("X-Mailer"), "client software leaked"
    received = " ".join(str(h) for h in got.message.get_all("Received", []))
    assert "client.example" not in received and "198.51.100.1]" not in received, f"client leaked: {received}"


def test_no_auth_on_port_25(converged):
    with smtplib.SMTP(converged["ipv4"], 25, timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth"), "AUTH offered on port 25"
        s.starttls(context=_ssl_ctx())
        s.ehlo("client.example")
        assert not s.has_extn("auth"), "AUTH offered on port 25 after STARTTLS"
        s.mail("x@example.org")
        code, _ = s.rcpt("someone@inbox.test")
        assert code == 554, f"port 25 relays for strangers (RCPT answered {code})"


def test_user_cannot_send_as_another_user(converged):
    with smtplib.SMTP_SSL(converged["ipv4"], 465, timeout=30, context=_ssl_ctx()) as s:
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
            with smtplib.SMTP(converged["ipv4"], 587, timeout=30) as s:
                s.starttls(context=_ssl_ctx())
                s.login("alice@shop.test", ALICE_PW)
                s.send_message(_message("alice@shop.test", "must-not-arrive"))
        assert 400 <= refused.value.smtp_code < 500, f"expected a 4xx, got {refused.value.smtp_code}"
        subject = "queued " + uuid.uuid4().hex[:10]
        _ssh(lab_cfg, f"printf 'From: alice@shop.test\\nTo: someone@inbox.test\\nSubject: {subject}\\n\\nx\\n'"
                      " | sendmail -f alice@shop.test someone@inbox.test")
        time.sleep(5)
        arrived = [m.subject for m in receiver.read_mailbox(converged["mx_root"], "someone@inbox.test")]
        assert subject not in arrived, "a message left unsigned while OpenDKIM was down"
    finally:
        _ssh(lab_cfg, "systemctl start opendkim")
    _ssh(lab_cfg, "postqueue -f; postkick public pickup W || true")
    got = receiver.wait_for_message(converged["mx_root"], recipient="someone@inbox.test", subject=subject, timeout=120)
    assert got.auth_result("dkim") == "pass", got.authentication_results


def test_testinfra_checks_pass(converged):
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
         "mailops.checks.test_postfix", "mailops.checks.test_sasl", "mailops.checks.test_opendkim",
         f"--hosts=ansible://{converged['fqdn']}", f"--ansible-inventory={converged['inv']}"],
        capture_output=True, text=True, env=env, cwd=converged["work"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

"""Provisioning end to end: a fresh lab VPS becomes a hardened sending server.

Everything is real: the CLI converges vps1 through ansible-runner, the checks
are the shipped testinfra suite, mail goes out through Postfix + OpenDKIM to
the lab's receiving host, which verifies DKIM, SPF and DMARC."""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from mailops.inventory import load_inventory
from mailops.lab import core, receiver
from tests.helpers import LAB_INVENTORY as INVENTORY, ROOT, SETTINGS, VENV_BIN, copy_inventory, mailops, \
    replace_text, venv_env
from tests.mailhost import assert_no_config_warnings, publish_lab_inventory

pytestmark = pytest.mark.lab

HOST = "mta1.shop.test"


def keystore():
    from mailops.dkim.store import KeyStore
    inv, problems = load_inventory(INVENTORY)
    assert not problems, problems
    return inv, KeyStore.for_inventory(inv)


def ssh(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, "vps1", script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def password(user: str) -> str:
    return Path(f"/var/lib/mailops/lab/secrets/{user}.password").read_text().strip()


def tls_context() -> ssl.SSLContext:
    from mailops.lab import acme
    roots = acme.issuing_roots(core.acme_config(core.LabConfig()))
    ctx = ssl.create_default_context(cadata="\n".join(roots))
    return ctx


def submit(subject: str, rcpt: str = "someone@inbox.test", sender: str = "alice@shop.test",
           user: str = "alice", port: int = 587, extra_headers: dict | None = None) -> str:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="shop.test")
    msg["User-Agent"] = "LeakyMailer/1.0"
    for k, v in (extra_headers or {}).items():
        msg[k] = v
    msg.set_content("hello from a provisioned mailops server\n")
    ctx = tls_context()
    smtp = smtplib.SMTP(HOST_ADDR, port, timeout=30)
    smtp._host = HOST  # the name the certificate must be valid for
    smtp.starttls(context=ctx)
    with smtp:
        smtp.login(f"{user}@{'shop.test' if user == 'alice' else 'news.test'}", password(user))
        smtp.send_message(msg)
    return msg["Message-ID"]


HOST_ADDR = "198.51.100.11"


@pytest.fixture(scope="module")
def provisioned(lab, lab_cfg):
    """Keys generated, records published, vps1 converged by `new-vps` after its host key was
    forgotten.  In a whole run the demo (tests/test_demo.py) has converged vps1 from a fresh VPS
    just before, with the same inventory, so this converge has nothing to change; run alone, it
    converges vps1 from whatever state it is in.  (A fresh VPS through the CLI's `new-vps`:
    tests/test_provision_create.py.)"""
    # forget the lab's record of vps1's host key: new-vps must establish trust itself
    kh = lab_cfg.known_hosts
    subprocess.run(["ssh-keygen", "-R", HOST_ADDR, "-f", str(kh)], capture_output=True, check=True)
    pub = (core.machine_root(lab_cfg, "vps1") / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
    import base64, hashlib
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(pub)).digest()).decode().rstrip("=")
    publish_lab_inventory()
    proc = mailops("provision", "new-vps", HOST, "-i", str(INVENTORY), "--expect-fingerprint", fp, "--json")
    first = json.loads(proc.stdout)
    return {"first": first, "stderr": proc.stderr}


def test_new_vps_records_the_host_key_and_converges(provisioned, lab_cfg):
    assert provisioned["first"]["ok"], provisioned
    assert "host key recorded" in provisioned["stderr"]
    assert "outbound port 25" in provisioned["stderr"]


def test_second_converge_changes_nothing(provisioned):
    result = provisioned["first"]
    if result["changed"]:  # new-vps had work to do (this module run alone): converge once more
        result = json.loads(mailops("provision", "apply", "-i", str(INVENTORY), "--json").stdout)
    assert result["ok"] and result["changed"] == 0, result["changed_tasks"]


def test_check_mode_reports_nothing_to_change(provisioned):
    result = json.loads(mailops("provision", "apply", "-i", str(INVENTORY), "--check", "--diff", "--json").stdout)
    assert result["ok"] and result["changed"] == 0, result["changed_tasks"]


def test_plain_ansible_playbook_converges_the_same_inventory(provisioned):
    env = venv_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventories/lab", "playbooks/site.yml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP"):]
    assert "changed=0" in recap and "failed=0" in recap, recap


def test_postconf_and_doveconf_have_no_warnings(provisioned, lab_cfg):
    assert_no_config_warnings(lab_cfg, "vps1")  # the lab's suite; test_debian_suites does the other


def test_shipped_testinfra_suite_passes(provisioned):
    env = venv_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   MAILOPS_ACME_ROOTS_FILE="/var/lib/mailops/lab/acme/issuing-roots.pem")
    # run from / : the checks are found in the installed package, not through the test tree
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "mailops.checks",
                           f"--hosts=ansible://{HOST}", f"--ansible-inventory={INVENTORY}"],
                          cwd="/", env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout


def test_host_key_mismatch_is_refused(provisioned, lab_cfg, tmp_path):
    kh = lab_cfg.known_hosts
    saved = kh.read_text()
    try:
        lines = [l for l in saved.splitlines() if not l.startswith(HOST_ADDR + " ")]
        lines.append(f"{HOST_ADDR} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake")
        kh.write_text("\n".join(lines) + "\n")
        proc = mailops("provision", "new-vps", HOST, "-i", str(INVENTORY), "--yes", check=False)
        assert proc.returncode == 1
        assert "does NOT match" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        kh.write_text(saved)


def test_preflight_refuses_blocked_port_25(provisioned, tmp_path):
    inv = copy_inventory(tmp_path / "inv")
    # the lab gateway answers nothing on 25 (its firewall drops it): like a provider's block
    replace_text(inv / SETTINGS, "mailops_smtp_probe: mx.inbox.test", "mailops_smtp_probe: gw.lab.test")
    proc = mailops("provision", "new-vps", HOST, "-i", str(inv), check=False)
    assert proc.returncode == 1
    assert "pre-flight check 'outbound port 25' failed" in proc.stderr and "Traceback" not in proc.stderr


def _active_selector(domain: str) -> str:
    _inv, store = keystore()
    active = [k for k in store.keys(domain) if k.state == "active" and k.algorithm == "rsa"]
    assert len(active) == 1
    return active[0].selector


def test_submission_is_dkim_signed_and_authenticated(provisioned, lab_cfg):
    subject = f"provisioned {uuid.uuid4().hex[:8]}"
    submit(subject, rcpt="check@inbox.test")
    msg = receiver.wait_for_message(core.machine_root(lab_cfg, "mx"), recipient="check@inbox.test",
                                    subject=subject, timeout=60)
    assert msg is not None, "message did not reach the receiving host"
    results = " | ".join(msg.authentication_results)
    assert msg.auth_result("dkim") == "pass", results
    assert f"header.s={_active_selector('shop.test')}" in results and "header.d=shop.test" in results, results
    assert msg.auth_result("spf") == "pass", results
    assert msg.auth_result("dmarc") == "pass", results
    raw = msg.message.as_string()
    assert "LeakyMailer" not in raw, "User-Agent leaked"
    headers = raw.split("\n\n", 1)[0]
    assert "[198.51.100.1]" not in headers, "the submitting client's IP leaked into Received"


def test_no_mail_leaves_unsigned_when_opendkim_or_postfix_dies(provisioned, lab_cfg):
    rcpt = f"kill-{uuid.uuid4().hex[:6]}@inbox.test"
    accepted, refused, unanswered = [], [], []
    stop = threading.Event()

    def sender():
        i = 0
        while not stop.is_set() and i < 200:
            i += 1
            subject = f"kill test {i}"
            try:
                submit(subject, rcpt=rcpt)
                accepted.append(subject)
            except smtplib.SMTPResponseException as exc:  # the server answered 4xx/5xx: not queued
                refused.append((subject, f"{exc.smtp_code} {exc.smtp_error!r}"[:80]))
            except (smtplib.SMTPException, OSError) as exc:
                # the connection died or timed out without a reply: the server may have queued it
                # before it died (SMTP's duplicate window, RFC 5321 6.1), so it may still arrive
                refused.append((subject, str(exc)[:80]))
                unanswered.append(subject)
            time.sleep(0.2)

    t = threading.Thread(target=sender)
    t.start()
    try:
        time.sleep(2)
        ssh(lab_cfg, "systemctl kill -s KILL opendkim; systemctl stop opendkim")
        time.sleep(4)
        ssh(lab_cfg, "systemctl start opendkim")
        time.sleep(2)
        # Debian 12 runs the main instance as postfix@-.service, Debian 13 as postfix.service
        ssh(lab_cfg, "systemctl kill -s KILL postfix@-.service postfix.service || true")
        time.sleep(3)
        ssh(lab_cfg, "systemctl restart postfix")
        time.sleep(3)
    finally:
        stop.set()
        t.join()
    ssh(lab_cfg, "postqueue -f")
    assert accepted and refused, (len(accepted), refused[:3])
    root = core.machine_root(lab_cfg, "mx")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = receiver.read_mailbox(root, rcpt)
        if len(got) >= len(accepted):
            break
        time.sleep(1)
    got = receiver.read_mailbox(root, rcpt)
    subjects = sorted(m.subject for m in got)
    missing = sorted(set(accepted) - set(subjects))
    assert not missing, f"accepted {len(accepted)}, delivered {len(got)}; lost: {missing}"
    extra = sorted(set(subjects) - set(accepted) - set(unanswered))
    assert not extra, f"delivered although the server refused them with a reply: {extra}"
    # a copy may arrive twice: Postfix killed between the receiver's 250 and recording the
    # delivery delivers it again (SMTP is at-least-once); nothing may be lost or unsigned
    unsigned = [m.subject for m in got if m.auth_result("dkim") != "pass"]
    assert unsigned == [], f"delivered without a valid signature: {unsigned}"


def test_key_rotation_switches_the_signing_selector(provisioned, lab_cfg):
    old = _active_selector("shop.test")
    mailops("dkim", "rotate", "shop.test", "-i", str(INVENTORY))
    _inv, store = keystore()
    pending = [k for k in store.keys("shop.test") if k.state == "pending" and k.algorithm == "rsa"]
    assert len(pending) == 1
    new = pending[0].selector
    # activation is refused while the record is not visible
    proc = mailops("dkim", "activate", "shop.test", "-i", str(INVENTORY), "--nameserver", "198.51.100.1", check=False)
    assert proc.returncode != 0
    mailops("dns", "sync", "--apply", "-i", str(INVENTORY))
    # pending keys are installed but do not sign yet
    mailops("provision", "apply", "-i", str(INVENTORY), "--tags", "opendkim", "--json")
    mailops("dkim", "activate", "shop.test", "-i", str(INVENTORY), "--nameserver", "198.51.100.1")
    assert _active_selector("shop.test") == new
    result = json.loads(mailops("provision", "apply", "-i", str(INVENTORY), "--tags", "opendkim", "--json").stdout)
    assert result["ok"] and result["changed"] > 0
    subject = f"rotated {uuid.uuid4().hex[:8]}"
    submit(subject, rcpt="rotation@inbox.test")
    msg = receiver.wait_for_message(core.machine_root(lab_cfg, "mx"), recipient="rotation@inbox.test",
                                    subject=subject, timeout=60)
    assert msg is not None
    results = " | ".join(msg.authentication_results)
    assert msg.auth_result("dkim") == "pass" and f"header.s={new}" in results, results
    assert old != new

"""Verification: `mailops verify` on the converged lab is all green, and names each broken thing.

vps1 (mta1.shop.test) is converged from the lab inventory; records are published
with `dns sync`.  Each negative test breaks one thing on the real server or in
the real DNS, runs the CLI, and repairs it the way the printed fix says."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from mailops.lab import core, dns as labdns, mailbox as labmailbox
from mailops.lab.config import LabConfig
from mailops.lab.receiver import MAILDIR
from tests.helpers import LAB_INVENTORY, copy_inventory, mailops
from tests.mailhost import publish_lab_inventory

pytestmark = pytest.mark.lab

HOST = "mta1.shop.test"


def verify(*args: str) -> tuple[int, dict]:
    proc = mailops("verify", "--json", *args, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def failures(report: dict) -> dict[str, dict]:
    return {f"{r['subject']} {r['name']}": r for r in report["results"] if r["status"] == "fail"}


def vps1(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, "vps1", script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def provisioned(lab, lab_cfg):
    """vps1 converged from the lab inventory (by test_provision in a whole run), its keys and records
    published; converged again only if the server checks find it otherwise (this module run alone)."""
    publish_lab_inventory()
    if verify("--only", "server")[0] != 0:
        result = json.loads(mailops("provision", "apply", "--json").stdout)
        assert result["ok"], result


def test_verify_is_all_green_on_the_converged_lab(provisioned, tmp_path):
    junit = tmp_path / "verify.xml"
    code, report = verify("--junit", str(junit))
    assert code == 0 and report["ok"], failures(report)
    # inconclusive only where there is nothing to judge yet: the complaint rate without reports,
    # the one-click headers without a sample of the application's mail
    assert report["counts"]["fail"] == 0, failures(report)
    assert [r for r in report["results"] if r["status"] != "pass" and r["group"] != "requirements"] == []
    groups = {r["group"] for r in report["results"]}
    assert groups == {"dns", "server", "security", "send", "returnpath", "requirements"}
    names = {r["name"] for r in report["results"]}
    for expected in ("spf.authorises-ipv6", "lab.live-send", "lab.receiver.dkim", "lab.dkim.independent",
                     "lab.folder", "fcrdns.ipv6"):
        assert expected in names, sorted(names)
    suites = ET.parse(junit).getroot()
    assert sum(int(s.get("failures")) for s in suites.iter("testsuite")) == 0
    assert sum(int(s.get("tests")) for s in suites.iter("testsuite")) == len(report["results"])


def test_verify_names_spf_without_the_ipv6_address(provisioned):
    labdns.update(core.dns_config(LabConfig()), "shop.test.",
                  replace=[("@", "TXT", "v=spf1 ip4:198.51.100.11 ~all", 300)])
    try:
        code, report = verify("--only", "dns", "--domain", "shop.test")
        assert code == 1
        fail = failures(report)
        assert "shop.test spf.authorises-ipv6" in fail, sorted(fail)
        assert "2001:db8:51::11" in fail["shop.test spf.authorises-ipv6"]["fix"] + fail["shop.test spf.authorises-ipv6"]["detail"]
    finally:
        mailops("dns", "sync", "--apply", "--force")
    assert verify("--only", "dns", "--domain", "shop.test")[0] == 0


def test_a_check_that_fails_since_the_baseline_is_printed_first(provisioned, tmp_path):
    baseline = tmp_path / "verify.json"
    code, report = verify("--only", "dns", "--domain", "shop.test")
    assert code == 0
    baseline.write_text(json.dumps(report))
    labdns.update(core.dns_config(LabConfig()), "shop.test.",
                  replace=[("@", "TXT", "v=spf1 ip4:198.51.100.11 ~all", 300)])
    try:
        proc = mailops("verify", "--only", "dns", "--domain", "shop.test", "--baseline", str(baseline), check=False)
        assert proc.returncode == 1
        first = proc.stdout.splitlines()[:2]
        assert first[0].endswith("change(s) since the baseline:") and "spf.authorises-ipv6: pass -> fail" in \
            proc.stdout.split("mailops verify")[0], proc.stdout
    finally:
        mailops("dns", "sync", "--apply", "--force")
    state = tmp_path / "state.json"
    state.write_text(baseline.read_text())
    for _ in range(2):  # repaired: the same as the baseline, twice
        proc = mailops("verify", "--only", "dns", "--domain", "shop.test", "--state", str(state), "--changes-only",
                       check=False)
        assert proc.returncode == 0 and proc.stdout.strip() == "no change since the baseline", proc.stdout


def test_verify_names_a_certificate_for_the_wrong_name(provisioned, lab_cfg):
    vps1(lab_cfg, "set -e; mkdir -p /root/wrong; cd /root/wrong; "
                  "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=wrong.example -keyout key.pem "
                  "-out cert.pem 2>/dev/null; chmod 600 key.pem; "
                  "ln -sfn /root/wrong/cert.pem /etc/mailops/tls/fullchain.pem; "
                  "ln -sfn /root/wrong/key.pem /etc/mailops/tls/privkey.pem; postfix reload")
    try:
        code, report = verify("--only", "server,send", "--host", HOST, "--domain", "shop.test")
        assert code == 1
        fail = failures(report)
        assert f"{HOST} tls.certificate_names_the_host" in fail, sorted(fail)
        assert "--tags tls" in fail[f"{HOST} tls.certificate_names_the_host"]["fix"]
        assert "shop.test lab.live-send" in fail and "certificate" in fail["shop.test lab.live-send"]["detail"], \
            sorted(fail)
    finally:
        # the fix the report prints
        mailops("provision", "apply", "--tags", "tls", "--limit", HOST, "--json")
    assert verify("--only", "server", "--host", HOST)[0] == 0


def test_verify_says_signing_is_down_when_opendkim_stops(provisioned, lab_cfg):
    vps1(lab_cfg, "systemctl stop opendkim")
    try:
        code, report = verify("--only", "send", "--domain", "shop.test")
        assert code == 1
        fail = failures(report)
        assert "shop.test lab.dkim-signing" in fail, sorted(fail)
        row = fail["shop.test lab.dkim-signing"]
        assert "signing is down" in row["detail"] and "held" in row["detail"], row
        assert "systemctl start opendkim" in row["fix"]
    finally:
        vps1(lab_cfg, "systemctl start opendkim && postqueue -f")
    assert verify("--only", "send", "--domain", "shop.test")[0] == 0


def test_verify_names_a_relay_permitting_setting_and_auth_in_clear(provisioned, lab_cfg):
    # (smtpd_relay_restrictions=permit alone is not enough: recipient restrictions still refuse)
    vps1(lab_cfg, "postconf -e 'mynetworks = 0.0.0.0/0 [::]/0' "
                  "&& postconf -P 'submission/inet/smtpd_tls_auth_only=no' "
                  "'submission/inet/smtpd_tls_security_level=may' && postfix reload")
    try:
        code, report = verify("--only", "security", "--host", HOST)
        assert code == 1
        fail = failures(report)
        relay = [k for k in fail if " relay." in k]
        assert any(".25." in k for k in relay), sorted(fail)
        clear = [k for k in fail if "auth" in k.lower() and "587" in k]
        assert clear, sorted(fail)
        assert all(fail[k]["fix"] for k in relay + clear)
    finally:
        mailops("provision", "apply", "--tags", "postfix", "--limit", HOST, "--json")
    assert verify("--only", "security", "--host", HOST)[0] == 0


def imap_mailbox(name: str, recipient: str, login: str, *, tls: str = "implicit", password_file=None) -> dict:
    cfg = LabConfig()
    return {"name": name, "recipient": recipient, "authserv_id": "mx.inbox.test",
            "imap": {"host": "mx.inbox.test", "tls": tls, "login": f"{login}@inbox.test",
                     "password": {"file": str(password_file or labmailbox.password_path(cfg, login))},
                     "ca_bundle": str(labmailbox.ca_path(cfg))}}


def in_maildir(message_id: str) -> list[str]:
    """Files of the lab receiver's mailbox (any folder) that hold this Message-ID."""
    root = LabConfig().machines_dir / "mx" / "root" / MAILDIR
    return [str(p) for p in root.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")
            and f"Message-ID: {message_id}".encode() in p.read_bytes()[:8192]]


def test_live_send_to_two_imap_mailboxes_names_each_folder_and_leaves_nothing(provisioned, tmp_path):
    """The lab inventory's own seed mailbox (IMAP, 993) and a second one over STARTTLS whose
    address the receiver files as spam: one row set each, the folder named, nothing left."""
    inventory = copy_inventory(tmp_path / "inv", settings=lambda s: s["mailops_verify"]["mailboxes"].append(
        imap_mailbox("junkbox", "junk-seed@inbox.test", "seed", tls="starttls")))
    proc = mailops("verify", "--json", "--only", "send", "--domain", "shop.test", "-i", str(inventory), check=False)
    report = json.loads(proc.stdout)
    rows = {r["name"]: r for r in report["results"]}
    assert proc.returncode == 0, failures(report)
    assert rows["lab.folder"]["status"] == "pass" and "INBOX" in rows["lab.folder"]["detail"]
    assert rows["junkbox.folder"]["status"] == "warn" and "landed in Junk" in rows["junkbox.folder"]["detail"]
    for box in ("lab", "junkbox"):
        for check in ("live-send", "receiver.dkim", "receiver.spf", "receiver.dmarc", "dkim.independent",
                      "header-privacy"):
            assert rows[f"{box}.{check}"]["status"] == "pass", rows[f"{box}.{check}"]
        message_id = rows[f"{box}.live-send"]["detail"].rsplit("(", 1)[1].rstrip(")")
        assert message_id.startswith("<") and in_maildir(message_id) == [], message_id  # deleted over IMAP


def test_a_forged_authentication_results_header_is_ignored(provisioned):
    """The submitted message carries verdicts of another authserv-id saying everything failed;
    they reach the mailbox, and only the receiver's own count."""
    from email.message import EmailMessage

    from mailops.dkim.store import KeyStore
    from mailops.inventory import load
    from mailops.verify.mailbox import open_mailboxes
    from mailops.verify.send import deliver, judge_received

    inv = load(LAB_INVENTORY)
    [seed] = open_mailboxes(inv)
    assert seed.mailbox is not None, seed.problem
    msg = EmailMessage()
    msg["Subject"] = "forged verdicts"
    forged = "mx.evil.test; dkim=fail header.d=shop.test; spf=fail smtp.mailfrom=shop.test; dmarc=fail"
    msg["Authentication-Results"] = forged
    msg.set_content("the header above was written by the sender\n")
    delivery, rows = deliver(inv, "shop.test", seed.mailbox, message=msg)
    assert delivery is not None, rows
    try:
        unfolded = re.sub(rb"\r?\n[ \t]+", b" ", delivery.raw)
        assert f"Authentication-Results: {forged}".encode() in unfolded  # it arrived...
        judged = {r.name: r for r in judge_received(inv, KeyStore.for_inventory(inv), "shop.test", delivery.raw,
                                                     authserv_id=seed.authserv_id, client_ip=delivery.client_ip)}
        for name in ("receiver.dkim", "receiver.spf", "receiver.dmarc"):  # ...and changed nothing
            assert judged[name].status == "pass" and "mx.evil.test" not in judged[name].detail, judged[name]
    finally:
        assert delivery.cleanup() == []


def test_a_wrong_imap_password_is_one_inconclusive_line(provisioned, tmp_path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password-4711\n")
    wrong.chmod(0o600)
    inventory = copy_inventory(tmp_path / "inv", settings=lambda s: s["mailops_verify"].update(
        mailboxes=[imap_mailbox("lab", "verify@inbox.test", "verify", password_file=wrong)]))
    proc = mailops("verify", "--json", "--only", "send", "-i", str(inventory), check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert [(r["subject"], r["name"], r["status"]) for r in rows] == [
        ("news.test", "lab.live-send", "inconclusive"), ("shop.test", "lab.live-send", "inconclusive")]
    detail = rows[0]["detail"]
    assert "refused the login of verify@inbox.test" in detail and "imap.password" in detail and "\n" not in detail
    assert "not-the-password-4711" not in proc.stdout + proc.stderr


def test_verify_rejects_bad_options_in_one_line():
    proc = mailops("verify", "--only", "dns,bogus", check=False)
    assert proc.returncode == 2 and "unknown group 'bogus'" in proc.stderr
    proc = mailops("verify", "--domain", "nope.test", check=False)
    assert proc.returncode == 1 and "not a sending domain" in proc.stderr and "Traceback" not in proc.stderr

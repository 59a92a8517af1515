"""Live send without the lab: the Maildir mailbox verify reads the test message from, and
which Authentication-Results it trusts (only the configured authserv-id's: RFC 8601)."""

from __future__ import annotations

import json
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from mailops.inventory import load
from mailops.verify.mailbox import MaildirMailbox, open_mailboxes
from mailops.verify.send import judge_received, trusted_auth_results
from tests.helpers import LAB_INVENTORY, copy_inventory, mailops

DOMAIN = "shop.test"


def maildir(root: Path, *folders: str) -> Path:
    for folder in ("", *folders):
        for sub in ("new", "cur", "tmp"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
    return root


def message(message_id: str, *auth_results: str) -> bytes:
    msg = EmailMessage()
    for header in auth_results:
        msg["Authentication-Results"] = header
    msg["From"], msg["To"], msg["Subject"] = f"alice@{DOMAIN}", "verify@inbox.test", "mailops verify"
    msg["Message-ID"] = message_id
    msg.set_content("hello\n")
    return msg.as_bytes()


def deliver(path: Path, raw: bytes, name: str = "1700000000.M1P1.mx") -> Path:
    (path / "tmp" / name).write_bytes(raw)
    (path / "tmp" / name).rename(path / "new" / name)  # as a delivery agent does
    return path / "new" / name


def test_maildir_mailbox_finds_a_late_message_by_message_id_and_deletes_it(tmp_path):
    box = MaildirMailbox(maildir(tmp_path / "Maildir"), "verify@inbox.test")
    assert box.problem() is None
    other, wanted = make_msgid(domain=DOMAIN), make_msgid(domain=DOMAIN)
    deliver(box.path, message(other), "1.other")
    timer = threading.Timer(0.6, deliver, (box.path, message(wanted), "2.wanted"))
    timer.start()
    t = time.monotonic()
    got = box.wait(wanted, timeout=10)
    timer.join()
    assert got is not None and 0.5 < time.monotonic() - t < 5
    assert f"Message-ID: {wanted}".encode() in got.raw and got.folder == "INBOX"
    box.delete(wanted)
    assert [p.name for p in (box.path / "new").iterdir()] == ["1.other"]  # only the test message goes
    box.delete(wanted)  # already gone: nothing to do


def test_maildir_mailbox_names_the_folder_it_landed_in_and_gives_up_in_time(tmp_path):
    box = MaildirMailbox(maildir(tmp_path / "Maildir", ".Junk"), "verify@inbox.test")
    spam = make_msgid(domain=DOMAIN)
    deliver(box.path / ".Junk", message(spam))
    got = box.wait(spam, timeout=2)
    assert got is not None and got.folder == "Junk"
    t = time.monotonic()
    assert box.wait(make_msgid(domain=DOMAIN), timeout=0.5) is None
    assert time.monotonic() - t < 2


def test_maildir_mailbox_that_is_not_there_says_so(tmp_path):
    box = MaildirMailbox(tmp_path / "nope", "verify@inbox.test")
    assert str(tmp_path / "nope") in box.problem() and "not a Maildir" in box.problem()


def test_only_the_trusted_authserv_id_counts():
    forged = f"mx.inbox.test.evil; dkim=pass header.d={DOMAIN}; spf=pass; dmarc=pass"
    other = f"MX.ELSEWHERE.TEST; dkim=pass header.d={DOMAIN}"
    trusted = f"MX.Inbox.Test 1; dkim=fail (bad signature; sorry) header.d={DOMAIN}; spf=softfail; dmarc=fail"
    raw = message(make_msgid(domain=DOMAIN), forged, other, trusted)
    assert trusted_auth_results(raw, "mx.inbox.test") == {
        "dkim": f"dkim=fail header.d={DOMAIN}", "spf": "spf=softfail", "dmarc": "dmarc=fail"}
    assert trusted_auth_results(raw, "mx.nowhere.test") == {}


def test_a_forged_pass_from_another_authserv_id_does_not_pass_the_send_checks():
    inv = load(LAB_INVENTORY)
    forged = f"mx.evil.test; dkim=pass header.d={DOMAIN} header.s=s1; spf=pass; dmarc=pass"
    raw = message(make_msgid(domain=DOMAIN), forged)
    rows = {r.name: r for r in judge_received(inv, None, DOMAIN, raw, authserv_id="mx.inbox.test", client_ip=None)}
    for name in ("receiver.dkim", "receiver.spf", "receiver.dmarc"):
        assert rows[name].status == "fail", rows[name]
    # the same verdicts stamped by the trusted receiver pass
    raw = message(make_msgid(domain=DOMAIN), forged.replace("mx.evil.test", "mx.inbox.test"))
    rows = {r.name: r for r in judge_received(inv, None, DOMAIN, raw, authserv_id="mx.inbox.test", client_ip=None)}
    assert all(rows[n].status == "pass" for n in ("receiver.dkim", "receiver.spf", "receiver.dmarc")), rows


@pytest.mark.lab
def test_open_mailboxes_reads_the_inventory_setting(lab):
    # the lab inventory's IMAP password is a file `lab up` writes
    inv = load(LAB_INVENTORY)
    [seed] = open_mailboxes(inv, check=False)
    assert seed.name == "lab" and seed.recipient == "verify@inbox.test" and seed.authserv_id == "mx.inbox.test"
    assert isinstance(seed.mailbox, MaildirMailbox) or seed.mailbox.settings.host == "mx.inbox.test"


def send_rows(inventory: Path) -> list[dict]:
    proc = mailops("verify", "--json", "--only", "send", "-i", str(inventory), check=False, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)["results"]


def test_send_group_without_a_mailbox_is_inconclusive_with_the_fix(tmp_path):
    inventory = copy_inventory(tmp_path / "inv", settings=lambda s: s["mailops_verify"].pop("mailboxes"))
    rows = send_rows(inventory)
    assert [(r["subject"], r["status"]) for r in rows] == [("news.test", "inconclusive"), ("shop.test", "inconclusive")]
    assert all("no mailops_verify.mailboxes configured" in r["detail"] for r in rows), rows


def test_send_group_with_a_missing_maildir_names_it(tmp_path):
    gone = tmp_path / "no-such-Maildir"
    inventory = copy_inventory(tmp_path / "inv", settings=lambda s: s["mailops_verify"].update(
        mailboxes=[{"name": "local", "recipient": "verify@inbox.test", "authserv_id": "mx.inbox.test",
                    "maildir": str(gone)}]))
    rows = send_rows(inventory)
    assert rows and all(r["status"] == "inconclusive" and str(gone) in r["detail"]
                        and r["name"] == "local.live-send" for r in rows), rows


@pytest.mark.parametrize("change, says", [
    (lambda v: v.update(recipient="a@b.test"), "recipient moved into mailboxes: write mailboxes:"),
    (lambda v: v["mailboxes"].append(dict(v["mailboxes"][0])), "mailbox name 'lab' is used twice"),
    (lambda v: v["mailboxes"][0].update(maildir="/var/mail/x/Maildir"), "set exactly one of imap:"),
    (lambda v: v["mailboxes"][0]["imap"].update(tls="ssl"), "imap.tls: 'ssl' is not one of implicit, starttls"),
    (lambda v: v["mailboxes"][0].update(name="Gmail Seed"), "use 1-32 lower-case letters"),
])
def test_inventory_check_names_a_wrong_mailbox_setting(tmp_path, change, says):
    inventory = copy_inventory(tmp_path / "inv", settings=lambda s: change(s["mailops_verify"]))
    proc = mailops("inventory", "check", str(inventory), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    assert says in proc.stdout + proc.stderr and "mailops_verify" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_inventory_check_resolves_the_example_seed_mailbox_password(tmp_path):
    """The README's example inventory: its IMAP seed mailbox's password reference is checked
    (named at its line and field) and its value never shown."""
    import os
    import shutil

    from tests.helpers import ROOT

    inventory = tmp_path / "example"
    shutil.copytree(ROOT / "inventories" / "example", inventory)
    env = {k: v for k, v in os.environ.items() if k != "MAILOPS_GMAIL_APP_PASSWORD"}
    proc = mailops("inventory", "check", str(inventory), check=False, env=env)
    line = next(l for l in proc.stdout.splitlines() if "mailops_verify.mailboxes[0].imap.password" in l)
    assert "environment variable MAILOPS_GMAIL_APP_PASSWORD is not set" in line
    proc = mailops("inventory", "check", str(inventory), check=False,
                   env={**env, "MAILOPS_GMAIL_APP_PASSWORD": "s3cret-app-password"})
    assert "mailops_verify" not in proc.stdout and "s3cret-app-password" not in proc.stdout + proc.stderr

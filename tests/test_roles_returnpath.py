"""The return path on a real two-host fleet (role returnpath, issue 12 part A).

vps11 (mta11.shop.test) and vps12 (mta12.shop.test) are reset and converged by the full
site play (playbooks/site.yml, self-signed certificates) from one inventory with
mailops_return_path set.  Then, against the real Postfix, socketmap service and lab
receiver:

* mail submitted on 587 leaves with a token envelope sender in bounces.shop.test and
  passes DKIM, SPF and DMARC (relaxed alignment) at the lab receiver;
* a DSN sent from the lab gateway to that token address is accepted on port 25,
  classified, and its recipient is suppressed on BOTH hosts (replicated by mail) within
  a bounded time, measured;
* submission to that recipient is refused at RCPT on both hosts with why and since when,
  other recipients pass; a recipient that is not a valid token, or not a listed
  address, is rejected on port 25 and nothing relays;
* postmaster@ is forwarded to the operator address (a mailbox on the lab receiver);
* with the service stopped, submission temp-fails (4xx); a second converge changes
  nothing and the suppression survives it and a service restart.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import smtplib
import ssl
import subprocess
import time
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailops.lab import core, dns as labdns
from mailops.lab.receiver import wait_for_message
from tests.helpers import ROOT, VENV_BIN, changed_tasks, copy_inventory, playbook_env, venv_env
from tests.mailhost import ensure_lab_vps, make_keystore, publish_host_dns
from tests.test_returnpath_messages import dsn, original_message, returned_whole

pytestmark = pytest.mark.lab

# the two lab VPS numbers (MAILOPS_TEST_RETURNPATH_VPS="7,8" runs it on others)
NUMBERS = tuple(int(n) for n in os.environ.get("MAILOPS_TEST_RETURNPATH_VPS", "11,12").split(","))
SYNC_LIMIT = 60            # seconds: a suppression must hold on both hosts within this
CODE = "/usr/local/lib/mailops-returnpath"


def fqdn(number: int) -> str:
    return f"mta{number}.shop.test"


def ipv4(number: int) -> str:
    return f"198.51.100.{10 + number}"


def _ssl_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed certificates (tls mode selfsigned)
    return ctx


def _has_mx(server: str, name: str) -> bool:
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    try:
        return len(resolver.resolve(name, "MX", lifetime=5)) > 0
    except dns.exception.DNSException:
        return False


class Fleet:
    def __init__(self, lab_cfg, work: Path):
        self.lab_cfg, self.work = lab_cfg, work
        self.operator = f"ops-{uuid.uuid4().hex[:8]}@inbox.test"
        self.password = "alice-" + uuid.uuid4().hex[:12]
        self.key = secrets.token_hex(32)
        self.mx_root = core.machine_root(lab_cfg, "mx")
        keys = make_keystore(work / "keys", {"mo-rptest-a": "active"})
        for number in NUMBERS:
            publish_host_dns(lab_cfg, number, fqdn(number), keys)
        # the return-path domain: MX (relay domains need one: reject_unknown_recipient_domain)
        # and the SPF that the receiver checks for the rewritten envelope sender
        # shop.test receives report and postmaster mail: it needs an MX too; the lab's own one
        # (mta1) is kept when there is one
        if not _has_mx(lab_cfg.gateway_ipv4, "shop.test"):
            labdns.update(core.dns_config(lab_cfg), "shop.test.",
                          add=[("shop.test.", "MX", f"10 {fqdn(NUMBERS[0])}.", 60)])
        labdns.update(core.dns_config(lab_cfg), "shop.test.", replace=[
            ("bounces.shop.test.", "MX", f"10 {fqdn(NUMBERS[0])}.", 60),
            ("bounces.shop.test.", "TXT", "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:51::/64 -all", 60)])
        ssh = lab_cfg.state_dir / "ssh"

        def settings(data: dict) -> None:
            data["mailops_dkim_keystore"] = str(work / "keys")
            data["mailops_tls"] = {"mode": "selfsigned"}
            data["mailops_domains"] = {"shop.test": {
                "dns_provider": "lab-rfc2136",
                "dmarc": {"policy": "reject", "rua": ["mailto:dmarc@shop.test"]},
                "tls_rpt": {"rua": ["mailto:tlsrpt@shop.test"]}}}
            data["mailops_submission_users"] = [
                {"login": "alice@shop.test", "password": {"file": "secrets/alice.password"}}]
            data["mailops_return_path"] = {"key": {"file": "secrets/returnpath.key"},
                                           "operator_email": self.operator}

        def hosts(data: dict) -> None:
            group = data["all"]["children"]["mailhosts"]
            group["hosts"] = {fqdn(n): {
                "ansible_host": ipv4(n), "ansible_user": "root",
                "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
                "mailops_ipv4": ipv4(n), "mailops_ipv6": f"2001:db8:51::{10 + n}"} for n in NUMBERS}

        self.inv = copy_inventory(work / "inv", settings=settings, hosts=hosts)
        (self.inv / "secrets").mkdir()
        for name, value in (("alice.password", self.password), ("returnpath.key", self.key)):
            path = self.inv / "secrets" / name
            path.write_text(value + "\n")
            path.chmod(0o600)

    def converge(self) -> tuple[str, dict[str, int]]:
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inv), "playbooks/site.yml"],
                              capture_output=True, text=True, cwd=ROOT, timeout=900,
                              env=playbook_env(ANSIBLE_NOCOLOR="1", ANSIBLE_CACHE_PLUGIN="memory"))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"site play failed:\n{out[-5000:]}"
        assert self.key not in out and self.password not in out, "a secret appeared in the Ansible output"
        recap = out.split("PLAY RECAP", 1)[1]
        changed = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s*:.*?changed=(\d+)", recap, re.M)}
        return out, changed

    def ssh(self, number: int, script: str, timeout: float = 60) -> str:
        proc = core.ssh_run(self.lab_cfg, f"vps{number}", script, timeout=timeout)
        assert proc.returncode == 0, f"{script!r} on vps{number} failed: {proc.stderr[-1000:]}"
        return proc.stdout

    def suppressions(self, number: int) -> list[dict]:
        """What the host's own database holds, read as the service user (hostcli list)."""
        out = self.ssh(number, f"runuser -u mailops-rp -- env PYTHONPATH={CODE} python3 -m "
                               "mailops.returnpath.hostcli list")
        data = json.loads(out)
        return data if isinstance(data, list) else data.get("entries", data.get("suppressions", []))

    def submit(self, number: int, rcpt: str, subject: str, port: int = 587) -> dict:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@shop.test", rcpt, subject
        msg["Message-ID"] = f"<{uuid.uuid4().hex}@shop.test>"
        msg.set_content("return path test\n")
        with smtplib.SMTP(ipv4(number), port, timeout=30) as s:
            s.starttls(context=_ssl_ctx())
            s.login("alice@shop.test", self.password)
            return s.send_message(msg)


@pytest.fixture(scope="module")
def fleet(lab_cfg, tmp_path_factory):
    for number in NUMBERS:
        ensure_lab_vps(lab_cfg, number)
    for number in NUMBERS:
        core.reset(lab_cfg, f"vps{number}")
    fleet = Fleet(lab_cfg, tmp_path_factory.mktemp("returnpath"))
    started = time.monotonic()
    fleet.converge()
    fleet.first_converge = time.monotonic() - started
    return fleet


@pytest.fixture(scope="module")
def sent(fleet):
    """One message submitted on mta11 and received by the lab receiver."""
    rcpt = f"rp-{uuid.uuid4().hex[:8]}@inbox.test"
    subject = "rp " + uuid.uuid4().hex[:8]
    assert fleet.submit(NUMBERS[0], rcpt, subject) == {}
    got = wait_for_message(fleet.mx_root, recipient=rcpt, subject=subject, timeout=60)
    assert got is not None, f"{rcpt} never arrived at the lab receiver"
    return rcpt, got


def test_envelope_sender_is_a_token_and_dmarc_stays_aligned(fleet, sent):
    rcpt, got = sent
    return_path = str(got.message.get("Return-Path", "")).strip("<> ")
    assert re.fullmatch(r"b-[a-z2-7]{26}@bounces\.shop\.test", return_path), return_path
    assert str(got.message["From"]) == "alice@shop.test"                    # the header From is untouched
    results = {m: got.auth_result(m) for m in ("dkim", "spf", "dmarc")}
    assert results == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}, got.authentication_results
    # the token is recorded with its sender on the host that issued it
    token_table = fleet.ssh(NUMBERS[0], "runuser -u mailops-rp -- python3 -c \"import sqlite3; print(sqlite3.connect("
                                        "'/var/lib/mailops-returnpath/tokens.sqlite3').execute("
                                        "'select count(*) from return_tokens where sender=?', "
                                        "('alice@shop.test',)).fetchone()[0])\"")
    assert int(token_table) >= 1


def test_a_dsn_to_the_token_suppresses_on_both_hosts(fleet, sent):
    rcpt, got = sent
    token = str(got.message.get("Return-Path", "")).strip("<> ")
    failed = (f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: 5.1.1\n"
              f"Remote-MTA: dns; mx.inbox.test\nDiagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: user unknown")
    raw = dsn(failed, returned=returned_whole(original_message(to=rcpt)))
    started = time.monotonic()
    with smtplib.SMTP(ipv4(NUMBERS[0]), 25, timeout=30) as s:
        s.ehlo("mx.inbox.test")
        s.sendmail("", [token], raw)                                      # the null sender of a DSN
    seen: dict[int, float] = {}
    while len(seen) < len(NUMBERS) and time.monotonic() - started < SYNC_LIMIT:
        for number in NUMBERS:
            if number not in seen and any(e.get("target") == rcpt for e in fleet.suppressions(number)):
                seen[number] = time.monotonic() - started
        time.sleep(0.5)
    print(f"\nsuppression of {rcpt}: " + ", ".join(f"{fqdn(n)} after {t:.1f} s" for n, t in sorted(seen.items())))
    assert sorted(seen) == list(NUMBERS), f"suppressed only on {sorted(seen)} within {SYNC_LIMIT} s"
    for number in NUMBERS:
        [entry] = [e for e in fleet.suppressions(number) if e.get("target") == rcpt]
        assert entry["cause"] == "hard-bounce" and "5.1.1" in entry["detail"]
        assert entry["origin"] == fqdn(NUMBERS[0])
    fleet.suppressed = rcpt


def test_submission_to_the_suppressed_recipient_is_refused_with_the_reason(fleet):
    rcpt = fleet.suppressed
    for number in NUMBERS:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            fleet.submit(number, rcpt, "must not leave")
        code, text = refused.value.recipients[rcpt]
        assert code == 550, (code, text)
        assert re.search(rb"5\.7\.1 <[^>]+>: Recipient address rejected: recipient suppressed since \d{4}-\d\d-\d\d \(hard-bounce: 5\.1\.1", text), text
        assert fleet.submit(number, f"fine-{uuid.uuid4().hex[:6]}@inbox.test", "still fine") == {}


def test_port_25_accepts_exactly_the_return_path_and_report_addresses(fleet, sent):
    _, got = sent
    token = str(got.message.get("Return-Path", "")).strip("<> ")
    with smtplib.SMTP(ipv4(NUMBERS[1]), 25, timeout=30) as s:             # any host takes any token
        s.ehlo("mx.inbox.test")
        assert s.mail("someone@inbox.test")[0] == 250
        for ok in (token, "dmarc@shop.test", "tlsrpt@shop.test", "postmaster@shop.test", "abuse@shop.test"):
            assert s.rcpt(ok)[0] == 250, ok
        for bad in ("b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test", token.replace("b-", "b-x", 1),
                    "alice@shop.test", "info@bounces.shop.test", "someone@example.org", "x@inbox.test"):
            code, text = s.rcpt(bad)
            assert 500 <= code < 600, (bad, code, text)
        s.rset()


def test_postmaster_mail_is_forwarded_to_the_operator(fleet):
    subject = "hello postmaster " + uuid.uuid4().hex[:8]
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@inbox.test", "postmaster@shop.test", subject
    msg.set_content("your server sends me mail\n")
    with smtplib.SMTP(ipv4(NUMBERS[1]), 25, timeout=30) as s:
        s.ehlo("mx.inbox.test")
        s.send_message(msg)
    got = wait_for_message(fleet.mx_root, recipient=fleet.operator, timeout=60)
    assert got is not None, "postmaster@ mail never reached the operator's mailbox"
    assert "mail for postmaster@" in str(got.message["X-Mailops-Forwarded"])
    assert subject in got.message.as_string()


def test_service_down_submission_tempfails_and_restart_keeps_the_suppression(fleet):
    number = NUMBERS[1]
    fleet.ssh(number, "systemctl stop mailops-returnpath-map")
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            fleet.submit(number, f"any-{uuid.uuid4().hex[:6]}@inbox.test", "service down")
        (code, text), = refused.value.recipients.values()
        assert 400 <= code < 500, (code, text)
    finally:
        fleet.ssh(number, "systemctl start mailops-returnpath-map")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        fleet.submit(number, fleet.suppressed, "still suppressed after a restart")


def test_a_peer_that_was_down_gets_the_suppression_when_it_is_back(fleet):
    """Replication is mail: with Postfix stopped on the peer, the change waits in the
    sender's queue and arrives once the peer is back (here: a flush instead of the retry timer)."""
    down, up = NUMBERS[1], NUMBERS[0]
    rcpt = f"gone-{uuid.uuid4().hex[:8]}@inbox.test"
    fleet.ssh(down, "systemctl stop postfix")
    try:
        fleet.ssh(up, f"runuser -u mailops-rp -- env PYTHONPATH={CODE} python3 -m mailops.returnpath.hostcli "
                      f"--origin {fqdn(up)} add {rcpt} --cause manual --detail 'peer down test'")
        fleet.ssh(up, f"runuser -u mailops-rp -- env PYTHONPATH={CODE} python3 -m mailops.returnpath.receive --push "
                      "--config /etc/mailops/returnpath.json --key-file /etc/mailops/returnpath.keys "
                      "--suppressions /var/lib/mailops-returnpath/suppressions.sqlite3")
        deadline = time.monotonic() + 30
        while "mailops-sync@" + fqdn(down) not in fleet.ssh(up, "postqueue -p") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "mailops-sync@" + fqdn(down) in fleet.ssh(up, "postqueue -p"), "the change is not queued for the peer"
    finally:
        fleet.ssh(down, "systemctl start postfix")
    started = time.monotonic()
    fleet.ssh(up, "postqueue -f")
    while time.monotonic() - started < SYNC_LIMIT:
        if any(e.get("target") == rcpt for e in fleet.suppressions(down)):
            break
        time.sleep(0.5)
    print(f"\n{fqdn(down)} back: {rcpt} suppressed there {time.monotonic() - started:.1f} s after the flush")
    assert any(e.get("target") == rcpt for e in fleet.suppressions(down)), "the queued change never arrived"


def test_the_shipped_checks_pass(fleet):
    for number in NUMBERS:
        proc = subprocess.run([str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                               "mailops.checks.test_returnpath", f"--hosts=ansible://{fqdn(number)}",
                               f"--ansible-inventory={fleet.inv}"], cwd="/", capture_output=True, text=True,
                              timeout=300, env=venv_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
        assert proc.returncode == 0 and " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-3000:]


def test_second_converge_changes_nothing_and_keeps_the_state(fleet):
    out, changed = fleet.converge()
    assert changed == {fqdn(n): 0 for n in NUMBERS}, changed_tasks(out)
    for number in NUMBERS:
        assert any(e.get("target") == fleet.suppressed for e in fleet.suppressions(number))
        mode = fleet.ssh(number, "stat -c '%a %U' /etc/mailops/returnpath.keys /var/lib/mailops-returnpath")
        assert mode.split("\n")[:2] == ["600 mailops-rp", "700 mailops-rp"]


# --- the whole loop through the lab receiver playing the mailbox provider -----------------

LOOP_LIMIT = 120           # seconds from submission to suppression on both hosts


def mailops_json(fleet: Fleet, *args: str) -> dict:
    proc = subprocess.run([str(VENV_BIN / "mailops"), *args, "-i", str(fleet.inv), "--json"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=venv_env())
    assert proc.returncode == 0, f"mailops {' '.join(args)}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def provider(fleet, lab_cfg):
    """The receiver's complaints and reports for shop.test go to this fleet: shop.test's MX,
    DMARC rua and TLS-RPT rua point at it while the module runs (later tests publish the lab
    inventory's own records again)."""
    labdns.update(core.dns_config(lab_cfg), "shop.test.", replace=[
        ("shop.test.", "MX", f"10 {fqdn(NUMBERS[0])}.", 60),
        ("_dmarc.shop.test.", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r; rua=mailto:dmarc@shop.test", 60),
        ("_smtp._tls.shop.test.", "TXT", "v=TLSRPTv1; rua=mailto:tlsrpt@shop.test", 60)])
    return time.time()


def test_later_bounce_and_complaint_suppress_on_both_hosts_and_removal_lets_mail_through(fleet, provider):
    tag = uuid.uuid4().hex[:8]
    later, complain, normal = (f"{kind}-{tag}@inbox.test" for kind in ("later", "complain", "ok"))
    started = time.monotonic()
    for rcpt in (later, complain, normal):
        assert fleet.submit(NUMBERS[0], rcpt, f"loop {tag}") == {}
    entries: dict[str, dict] = {}
    while time.monotonic() - started < LOOP_LIMIT:
        listed = mailops_json(fleet, "suppressions", "list")
        entries = {e["target"]: e for e in listed["entries"] if e["target"] in (later, complain, normal)}
        if all(rcpt in entries and not entries[rcpt]["missing"] for rcpt in (later, complain)):
            break
        time.sleep(1)
    took = time.monotonic() - started
    print(f"\nlater-bounce and complaint suppressed on both hosts {took:.1f} s after submission")
    assert later in entries and complain in entries, f"suppressed within {LOOP_LIMIT} s: {sorted(entries)}"
    assert normal not in entries
    for rcpt, cause in ((later, "hard-bounce"), (complain, "complaint")):
        assert entries[rcpt]["cause"] == cause, entries[rcpt]
        assert sorted(entries[rcpt]["hosts"]) == sorted(fqdn(n) for n in NUMBERS), entries[rcpt]
    assert "5.2.2" in entries[later]["detail"]
    assert wait_for_message(fleet.mx_root, recipient=normal, timeout=30) is not None

    for number in NUMBERS:
        for rcpt, cause in ((later, "hard-bounce"), (complain, "complaint")):
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                fleet.submit(number, rcpt, "must not leave")
            code, text = refused.value.recipients[rcpt]
            assert code == 550 and b"suppressed" in text and cause.encode() in text, (code, text)
        assert fleet.submit(number, normal, "the normal one still goes") == {}

    scope = entries[complain]["scope"]
    mailops_json(fleet, "suppressions", "remove", complain,
                 *(["--domain", scope] if scope != "*" else []))
    for number in NUMBERS:
        assert fleet.submit(number, complain, "allowed again") == {}


def test_dmarc_report_shows_the_fleet_passing_and_a_spoofer_flagged(fleet, provider, lab_cfg):
    # a spoofed message: From shop.test, sent from the lab gateway (not a host of the inventory),
    # unsigned, envelope sender outside shop.test: DMARC fails at the receiver
    spoof = EmailMessage()
    spoof["From"], spoof["To"], spoof["Subject"] = "ceo@shop.test", "victim@inbox.test", "urgent invoice"
    spoof["Message-ID"] = f"<{uuid.uuid4().hex}@spoofer.invalid>"
    spoof.set_content("pay this\n")
    with smtplib.SMTP(lab_cfg.receiver.ipv4, 25, timeout=30) as s:
        s.ehlo("spoofer.invalid")
        s.send_message(spoof, from_addr="x@inbox.test")
    assert fleet.submit(NUMBERS[1], f"seen-{uuid.uuid4().hex[:6]}@inbox.test", "from the second host") == {}
    time.sleep(2)                                   # OpenDMARC writes its history line after delivery

    proc = subprocess.run([str(VENV_BIN / "mailops"), "lab", "reports", "--since",
                           datetime.fromtimestamp(int(provider) - 1, timezone.utc).isoformat(),
                           "--domain", "shop.test", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env=venv_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = json.loads(proc.stdout)
    assert sent["dmarc"] and sent["tls"], sent

    # each host sends over IPv6 or IPv4 (both have PTR records): either address is the host's
    ours = {**{ipv4(n): fqdn(n) for n in NUMBERS}, **{f"2001:db8:51::{10 + n}": fqdn(n) for n in NUMBERS}}
    gateway = lab_cfg.gateway_ipv4
    deadline, rows = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        rows = mailops_json(fleet, "reports", "dmarc", "--domain", "shop.test")["rows"]
        seen = {r["source_ip"] for r in rows}
        if gateway in seen and {ours[ip] for ip in seen if ip in ours} == {fqdn(n) for n in NUMBERS}:
            break
        time.sleep(2)
    by_ip = {r["source_ip"]: r for r in rows}
    assert {ours[ip] for ip in by_ip if ip in ours} == {fqdn(n) for n in NUMBERS}, rows
    for ip in set(by_ip) & set(ours):
        row = by_ip[ip]
        assert row["host"] == ours[ip] and not row["flagged"], row
        assert row["messages"] >= 1 and row["dmarc_pass"] == row["messages"], row
    assert gateway in by_ip, rows
    spoofer = by_ip[gateway]
    assert spoofer["flagged"] and spoofer["host"] is None, spoofer
    assert spoofer["dmarc_pass"] == 0 and spoofer["messages"] >= 1, spoofer

    # the receiver's own deliveries to shop.test (the complaint to abuse@) went over STARTTLS
    policies = mailops_json(fleet, "reports", "tls", "--domain", "shop.test")["policies"]
    assert [p for p in policies if p["domain"] == "shop.test" and p["successful"] >= 1], policies

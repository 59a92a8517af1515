"""Day-two commands against a real sending server: queue, stats, bounces.

A lab VPS (MAILOPS_TEST_OPS_VPS, default vps4) is converged by the mail roles.
It then sends a known mix to the lab's receiving host: 3 messages delivered,
2 deferred (the receiver answers 450 4.2.1 for defer-*@inbox.test) and 2 hard
bounces (550 5.1.1 for bounce-*@inbox.test).  The commands run through the CLI
over SSH (Fabric) and must report exactly those counts and addresses; queue
actions must act on exactly the planned messages.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from mailops.lab import core
from tests.helpers import mailops
from tests.mailhost import MailHost, ensure_lab_vps, new_password

pytestmark = pytest.mark.lab

VPS = os.environ.get("MAILOPS_TEST_OPS_VPS", "vps4")
NUMBER = int(VPS.removeprefix("vps"))
DELIVERED = [f"ok-{i}@inbox.test" for i in (1, 2, 3)]
DEFERRED = [f"defer-{i}@inbox.test" for i in (1, 2)]
BOUNCED = [f"bounce-{i}@inbox.test" for i in (1, 2)]
WARMUP_DAY1 = 50


@pytest.fixture(scope="module")
def ops(lab_cfg, tmp_path_factory):
    ensure_lab_vps(lab_cfg, NUMBER)
    core.reset(lab_cfg, VPS)
    pw = new_password("alice")
    today = datetime.now(timezone.utc).date()
    host = MailHost(lab_cfg, tmp_path_factory.mktemp("ops"), NUMBER, selectors={"mo-opstest-a": "active"},
                    users=[{"login": "alice@shop.test", "password": {"file": "secrets/alice.password"}}],
                    passwords={"alice@shop.test": pw}, roles=("sasl", "opendkim", "policyd", "postfix"),
                    # the receiver reports authentication, never rejects on it: leave shop.test's
                    # records to the tests that publish them with dns sync
                    publish_dns=False,
                    group_vars={"mailops_rate_limits": {"warmup": {"start": today.isoformat(), "schedule": [
                        {"day": 1, "volume": WARMUP_DAY1}, {"day": 3, "volume": 200}]}}})
    host.converge()
    host.alice_password = pw
    host.sender = f"root@{host.fqdn}"  # bounces come back to root's local mailbox
    host.since = (datetime.now(timezone.utc) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for rcpt in DELIVERED + DEFERRED + BOUNCED:
        inject(host, host.sender, rcpt)
    wait_for_queue(host, lambda q: sorted(_rcpts(q)) == sorted(DEFERRED) and all(
        m["queue_name"] == "deferred" for m in q), "the two deferred messages alone in the deferred queue")
    wait_for_log(host, lambda text: text.count("status=bounced") >= 2 and text.count("status=sent") >= 5,
                 "2 bounces and 5 deliveries (3 messages, 2 bounce notices to root) in the log")
    return host


def inject(host: MailHost, sender: str, rcpt: str) -> None:
    subject = "ops " + uuid.uuid4().hex[:8]
    host.ssh(f"printf 'From: {sender}\\nTo: {rcpt}\\nSubject: {subject}\\n\\nbulk test\\n' | "
             f"/usr/sbin/sendmail -f {sender} {rcpt}")


def _queue(host: MailHost) -> list[dict]:
    return [json.loads(line) for line in host.ssh("postqueue -j").splitlines() if line.strip()]


def _rcpts(q: list[dict]) -> list[str]:
    return [r["address"] for m in q for r in m["recipients"]]


def wait_for_queue(host: MailHost, ready, what: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        q = _queue(host)
        if ready(q):
            return q
        if time.monotonic() > deadline:
            pytest.fail(f"queue on {host.name} never showed {what}: {json.dumps(q)[:1500]}")
        time.sleep(1)


def wait_for_log(host: MailHost, ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        text = host.ssh("journalctl --no-pager -o cat SYSLOG_FACILITY=2 --since '-10min'")
        if ready(text):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"log on {host.name} never showed {what}:\n{text[-3000:]}")
        time.sleep(1)


def cli(host: MailHost, *args: str, input: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    return mailops(*args, "-i", str(host.inv), input=input, check=ok, timeout=180)


def test_queue_shows_the_deferred_messages_by_domain_and_reason(ops):
    data = json.loads(cli(ops, "queue", ops.fqdn, "--json").stdout)[ops.fqdn]
    assert data["by_queue"] == {"active": 0, "deferred": 2, "hold": 0}
    assert data["by_domain"] == {"inbox.test": {"deferred": 2}}
    assert sorted(r["address"] for m in data["queue"] for r in m["recipients"]) == sorted(DEFERRED)
    assert data["oldest"]["age_seconds"] >= 0 and data["oldest"]["queue"] == "deferred"
    (reason,) = data["top_deferral_reasons"]
    assert reason["count"] == 2 and "450 4.2.1" in reason["reason"] and "try again later" in reason["reason"]


def test_queue_table_is_readable(ops):
    out = cli(ops, "queue", ops.fqdn).stdout
    assert "2 message(s)" in out and "deferred 2" in out and "inbox.test" in out


def test_stats_count_exactly_the_mix(ops):
    report = json.loads(cli(ops, "stats", ops.fqdn, "--since", ops.since, "--json").stdout)
    inbox = report["by_domain"]["inbox.test"]
    assert (inbox.get("sent", 0), inbox.get("deferred", 0), inbox.get("bounced", 0), inbox.get("rejected", 0)) \
        == (3, 2, 2, 0), inbox
    # the two bounce notices went to root's local mailbox
    assert report["by_domain"][ops.fqdn].get("sent", 0) == 2
    assert report["totals"]["sent"] == 5 and report["totals"]["bounced"] == 2
    assert report["dsn"].get("5.1.1") == 2 and report["dsn"].get("4.2.1") == 2
    assert sum(h.get("sent", 0) for h in report["by_hour"].values()) == 5
    reasons = {r["status"]: r for r in report["top_reasons"]}
    assert reasons["bounced"]["count"] == 2 and "Mailbox does not exist" in reasons["bounced"]["reason"]
    assert reasons["deferred"]["count"] == 2 and "try again later" in reasons["deferred"]["reason"]


def test_stats_table(ops):
    out = cli(ops, "stats", ops.fqdn, "--since", ops.since).stdout
    assert "inbox.test" in out and "5.1.1 x2" in out


def test_bounces_export_lists_exactly_the_hard_bounces(ops, tmp_path):
    hard, soft = tmp_path / "suppress.csv", tmp_path / "soft.csv"
    cli(ops, "bounces", "export", ops.fqdn, "--since", ops.since, "-o", str(hard), "--soft-output", str(soft))
    rows = list(csv.DictReader(hard.open()))
    assert sorted(r["recipient"] for r in rows) == sorted(BOUNCED)
    for r in rows:
        assert r["dsn"] == "5.1.1" and r["class"] == "bad-mailbox", r
        assert "Mailbox does not exist" in r["reason"] and r["sender"] == ops.sender
        assert datetime.fromisoformat(r["time"].replace("Z", "+00:00")) >= datetime.fromisoformat(
            ops.since.replace("Z", "+00:00"))
    soft_rows = list(csv.DictReader(soft.open()))
    assert sorted(r["recipient"] for r in soft_rows) == sorted(DEFERRED)
    assert all(r["count"] == "1" and r["last_dsn"] == "4.2.1" for r in soft_rows), soft_rows


def test_bounces_export_to_stdout_is_plain_csv(ops):
    proc = cli(ops, "bounces", "export", ops.fqdn, "--since", ops.since)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("recipient,") and len(lines) == 1 + len(BOUNCED)
    assert "defer-1@inbox.test" in proc.stderr  # the soft list goes to stderr, not into the CSV


def test_flush_retries_exactly_the_deferred_messages(ops):
    before = {m["queue_id"] for m in _queue(ops)}
    data = json.loads(cli(ops, "queue", "flush", ops.fqdn, "--domain", "inbox.test", "--json").stdout)[ops.fqdn]
    assert set(data["result"]["done"]) == before
    # each flushed message gets a second delivery attempt, deferred again by the receiver
    wait_for_log(ops, lambda text: text.count("dsn=4.2.1, status=deferred") >= 4, "a second deferral of each")


def test_hold_and_release_by_domain(ops):
    ids = {m["queue_id"] for m in _queue(ops)}
    held = json.loads(cli(ops, "queue", "hold", ops.fqdn, "--domain", "inbox.test", "--json").stdout)[ops.fqdn]
    assert set(held["result"]["done"]) == ids
    q = _queue(ops)
    assert {m["queue_id"] for m in q if m["queue_name"] == "hold"} == ids
    released = json.loads(cli(ops, "queue", "release", ops.fqdn, "--domain", "inbox.test", "--json").stdout)
    assert set(released[ops.fqdn]["result"]["done"]) == ids
    q = _queue(ops)
    assert {m["queue_id"] for m in q} == ids and not [m for m in q if m["queue_name"] == "hold"]


def test_delete_removes_exactly_the_planned_messages(ops):
    newsletter = "newsletter@shop.test"
    for rcpt in ("defer-n1@inbox.test", "defer-n2@inbox.test"):
        inject(ops, newsletter, rcpt)
    inject(ops, ops.sender, "defer-keep@inbox.test")
    q = wait_for_queue(ops, lambda q: len(q) == 5 and all(m["queue_name"] == "deferred" for m in q),
                       "five deferred messages")
    planned = {m["queue_id"] for m in q if m["sender"] == newsletter}
    assert len(planned) == 2

    # not at a terminal and no --yes: the plan is shown, nothing is deleted
    refused = cli(ops, "queue", "delete", ops.fqdn, "--sender", newsletter, ok=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr and "Traceback" not in refused.stderr
    assert {m["queue_id"] for m in _queue(ops)} == {m["queue_id"] for m in q}

    data = json.loads(cli(ops, "queue", "delete", ops.fqdn, "--sender", newsletter, "--yes", "--json").stdout)
    entry = data[ops.fqdn]
    assert {m["queue_id"] for m in entry["plan"]["messages"]} == planned
    assert set(entry["result"]["done"]) == planned and entry["result"]["missing"] == []
    assert {m["queue_id"] for m in _queue(ops)} == {m["queue_id"] for m in q} - planned


def test_delete_needs_a_selection(ops):
    proc = cli(ops, "queue", "delete", ops.fqdn, "--yes", ok=False)
    assert proc.returncode == 1 and "--domain or --sender" in proc.stderr
    assert len(_queue(ops)) == 3


def test_bad_since_is_one_line(ops):
    proc = cli(ops, "stats", ops.fqdn, "--since", "last tuesdayish", ok=False)
    assert proc.returncode == 1 and "--since" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_host_is_one_line(ops):
    proc = cli(ops, "queue", "nosuch.example", ok=False)
    assert proc.returncode == 1 and "no mail host 'nosuch.example'" in proc.stderr


def test_warmup_status_shows_allowance_accepted_and_sent(ops):
    """Two messages submitted on 587 count against today's allowance (the policy service counts
    submissions); sent today comes from the log: the mix's 3 + 2 bounce notices + these 2."""
    import smtplib
    import ssl
    from email.message import EmailMessage

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the stand-in certificate
    with smtplib.SMTP(ops.ipv4, 587, timeout=30) as s:
        s.starttls(context=ctx)
        s.login("alice@shop.test", ops.alice_password)
        for n in (1, 2):
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = "alice@shop.test", f"ok-w{n}@inbox.test", f"warm-up {n}"
            m.set_content("counted\n")
            s.send_message(m)
    wait_for_log(ops, lambda text: text.count("status=sent") >= 7, "the two submitted messages delivered")
    data = json.loads(cli(ops, "warmup", "status", ops.fqdn, "--json").stdout)
    assert (data["day"], data["allowance"]) == (1, WARMUP_DAY1), data
    host = data["hosts"][ops.fqdn]
    assert host["enforced"] and host["accepted_today"] == 2 and host["remaining"] == WARMUP_DAY1 - 2, host
    assert host["sent_today"] == 7 and host["bounced_today"] == 2, host
    table = cli(ops, "warmup", "status", ops.fqdn).stdout
    assert "warm-up day 1" in table and f"allowance {WARMUP_DAY1}" in table


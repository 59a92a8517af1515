"""Sending limits on a lab VPS: per-destination transports, per-user limits, warm-up.

Converges a lab VPS (MAILOPS_TEST_RATELIMIT_VPS, default vps10) as
mta10.shop.test (tests/mailhost.py, without touching the shared DNS zone) with
the roles sasl, opendkim, policyd and postfix and a temporary inventory whose
mailops_rate_limits hold:

* a destination limit for inbox.test (delay 3s) and one for gmail.com;
* a per-user limit of 3 messages per 10 s; bob@shop.test has his own limit
  (100 per hour) so that he can send the messages the other tests need.

Then it proves, with real mail to the lab's receiving host:

* the 4th message of alice within 10 s gets "450 4.7.1 sending limit of 3
  messages per 10s reached for alice@shop.test; try again in Ns" and, after
  that wait, a message is accepted again;
* four messages submitted at once to inbox.test leave >= 3 s apart, through
  the rl_inbox_test transport (measured in the sending host's journal and at
  the receiver);
* with the policy service stopped, submission gets a 4xx (451 4.3.5), not
  an acceptance and not a 5xx;
* a warm-up schedule starting today whose day 1 allows two recipients more
  than the host has counted today: those two are accepted, the next gets the
  warm-up 450 at RCPT; `mailops-policyd --status` shows the counts;
* without any limit, Postfix is configured as before: no rl_ transport, no
  transport table, no policy service (stopped), and mail is not slowed.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import ssl
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import pytest

from mailops.lab import core, receiver
from tests.helpers import changed_tasks
from tests.mailhost import MailHost, ensure_lab_vps

pytestmark = pytest.mark.lab

VPS = os.environ.get("MAILOPS_TEST_RATELIMIT_VPS", "vps10")
ALICE_PW = "alice-" + uuid.uuid4().hex[:12]
BOB_PW = "bob-" + uuid.uuid4().hex[:12]
SELECTOR = "mo-ratelimit-a"
TOKEN = uuid.uuid4().hex[:8]  # recipients of this run: rl<TOKEN>-...@inbox.test
DELAY = 3  # seconds between deliveries to inbox.test
SLACK = 0.3  # journal timestamps are taken when syslog lines arrive


def _ssl_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test stands in a self-signed certificate
    return ctx


def _users(limits: bool) -> list[dict]:
    bob = {"login": "bob@shop.test", "password": {"file": "secrets/bob.password"}}
    if limits:
        bob["rate_limit"] = {"messages": 100, "window": "1h"}
    return [{"login": "alice@shop.test", "password": {"file": "secrets/alice.password"}}, bob]


LIMITS = {
    "destinations": {"inbox.test": {"concurrency": 2, "delay": f"{DELAY}s"},
                     "gmail.com": {"concurrency": 2, "delay": "1s"}},
    "per_user": {"messages": 3, "window": "10s"},
}


@pytest.fixture(scope="module")
def mailhost(lab_cfg, tmp_path_factory):
    number = int(VPS.removeprefix("vps"))
    ensure_lab_vps(lab_cfg, number)
    # publish_dns=False: nothing here needs DNS beyond the lab's inbox.test, so the
    # shared shop.test zone is left alone
    host = MailHost(lab_cfg, tmp_path_factory.mktemp("ratelimit"), number, selectors={SELECTOR: "active"},
                    users=_users(True), passwords={"alice@shop.test": ALICE_PW, "bob@shop.test": BOB_PW},
                    group_vars={"mailops_rate_limits": LIMITS}, roles=("sasl", "opendkim", "policyd", "postfix"),
                    publish_dns=False)
    return host


def _write_vars(host: MailHost, rate_limits: dict | None, user_limits: bool) -> None:
    """The host's group_vars with these rate limits (None: none) and with or without per-user limits."""
    values = {k: v for k, v in host.group_vars.items() if k != "mailops_rate_limits"}
    values["mailops_submission_users"] = _users(user_limits)
    if rate_limits is not None:
        values["mailops_rate_limits"] = rate_limits
    host.write_group_vars(values)


def _ssh(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, VPS, script)
    assert proc.returncode == 0, f"{script!r} failed: {proc.stderr}"
    return proc.stdout


def _status(lab_cfg) -> dict:
    return json.loads(_ssh(lab_cfg, "mailops-policyd --status"))


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m["Message-ID"] = f"<{uuid.uuid4().hex}@shop.test>"
    m.set_content("rate limit test\n")
    return m


def _session(host: MailHost, login: str, password: str) -> smtplib.SMTP:
    s = smtplib.SMTP(host.ipv4, 587, timeout=60)
    s.starttls(context=_ssl_ctx())
    s.login(login, password)
    return s


def _sent_lines(lab_cfg, since: float) -> list[dict]:
    """status=sent log lines of the sending host since ``since``: {time, tag, queue_id, to}."""
    out = _ssh(lab_cfg, f"journalctl -o json --since=@{int(since) - 1} --no-pager -q "
                        "| grep -F 'status=sent' || true")
    lines = []
    for raw in out.splitlines():
        entry = json.loads(raw)
        message = entry.get("MESSAGE", "")
        if not isinstance(message, str):
            continue
        sent = re.match(r"([0-9A-Za-z]+): to=<([^>]+)>.* status=sent ", message)
        if sent:
            lines.append({"time": int(entry["__REALTIME_TIMESTAMP"]) / 1e6, "tag": entry.get("SYSLOG_IDENTIFIER", ""),
                          "queue_id": sent.group(1), "to": sent.group(2)})
    return sorted(lines, key=lambda line: line["time"])


def _wait_sent(lab_cfg, since: float, recipients: list[str], timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in _sent_lines(lab_cfg, since) if line["to"] in recipients]
        if {line["to"] for line in lines} >= set(recipients) or time.monotonic() > deadline:
            return lines
        time.sleep(2)


def _postconf(lab_cfg, args: str) -> str:
    return _ssh(lab_cfg, f"postconf {args}")


def _rcpt_refusal(rcpt: str, text: str) -> str:
    """What Postfix makes of a policy service's refusal at RCPT."""
    return f"<{rcpt}>: Recipient address rejected: {text}"


# --- converge ------------------------------------------------------------------

def test_second_converge_changes_nothing(converged):
    assert converged.second["changed"] == 0, f"second converge changed: {converged.second_changed}"


def test_check_diff_on_converged_host_changes_nothing(converged):
    out, stats = converged.converge("--check", "--diff")
    assert stats["changed"] == 0 and stats["failed"] == 0, (stats, changed_tasks(out))


def test_postfix_has_a_transport_per_limited_destination(converged, lab_cfg):
    pairs = (line.partition("=") for line in _postconf(lab_cfg, "-n").splitlines())
    main = {name.strip(): value.strip() for name, _, value in pairs}
    assert main["transport_maps"] == "texthash:/etc/postfix/transport_rate_limits"
    assert main["rl_inbox_test_destination_rate_delay"] == f"{DELAY}s"
    assert main["rl_inbox_test_destination_concurrency_limit"] == "2"
    assert main["rl_inbox_test_initial_destination_concurrency"] == "2"
    assert main["rl_inbox_test_destination_concurrency_failed_cohort_limit"] == "10"
    assert main["rl_gmail_com_destination_rate_delay"] == "1s"
    assert main["smtpd_policy_service_default_action"].startswith("451 4.3.5")
    table = _ssh(lab_cfg, "postmap -q inbox.test texthash:/etc/postfix/transport_rate_limits; "
                          "postmap -q gmail.com texthash:/etc/postfix/transport_rate_limits; "
                          "postmap -q example.org texthash:/etc/postfix/transport_rate_limits || true")
    assert table.split() == ["rl_inbox_test:", "rl_gmail_com:"], table
    services = _postconf(lab_cfg, "-M")
    assert re.search(r"^rl_inbox_test\s+unix\s+-\s+-\s+y\s+-\s+-\s+smtp\b", services, re.M), services
    options = _postconf(lab_cfg, "-P")
    # the limited transports inherit smtp_bind_address(6), EHLO name and TLS from main.cf
    assert [o for o in options.splitlines() if o.startswith("rl_inbox_test/")] == \
        ["rl_inbox_test/unix/syslog_name = postfix/rl_inbox_test"]
    for service in ("submission", "submissions"):
        assert f"{service}/inet/smtpd_recipient_restrictions = check_policy_service,inet:127.0.0.1:10031," \
               "permit_sasl_authenticated,reject" in options.splitlines(), options
        assert f"{service}/inet/smtpd_end_of_data_restrictions = check_policy_service,inet:127.0.0.1:10031" \
            in options.splitlines(), options
    warnings = _ssh(lab_cfg, "{ postconf -n >/dev/null; postconf -M >/dev/null; postconf -P >/dev/null; } 2>&1")
    assert warnings.strip() == "", warnings


def test_policy_service_is_hardened_and_local(converged, lab_cfg):
    out = _ssh(lab_cfg, "systemctl show -p ActiveState,User,NoNewPrivileges,ProtectSystem mailops-policyd; "
                        "ss -Hltnp | grep -F mailops-policy || ss -Hltn")
    assert "ActiveState=active" in out and "User=mailops-policyd" in out, out
    assert "NoNewPrivileges=yes" in out and "ProtectSystem=strict" in out, out
    listening = [line.split()[3] for line in out.splitlines() if ":10031" in line]
    assert listening == ["127.0.0.1:10031"], out
    owner = _ssh(lab_cfg, "ps -o user= -C mailops-policyd || ps -eo user,args | grep -F [m]ailops-policyd")
    assert "mailops-policyd" in owner.split()[0], owner


# --- per-user limit ---------------------------------------------------------------

def test_per_user_limit_refuses_the_fourth_message_then_resets(converged, lab_cfg):
    to = f"rl{TOKEN}-user@inbox.test"
    with _session(converged, "alice@shop.test", ALICE_PW) as s:
        for i in range(3):
            s.send_message(_message("alice@shop.test", to, f"user {TOKEN} {i}"))
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            s.send_message(_message("alice@shop.test", to, f"user {TOKEN} 3"))
    refused_at = time.monotonic()
    code, text = refused.value.recipients[to]
    text = text.decode()
    assert code == 450, (code, text)
    match = re.fullmatch(re.escape("4.7.1 " + _rcpt_refusal(to, "sending limit of 3 messages per 10s reached for "
                                                                 "alice@shop.test; try again in ")) + r"(\d+)s", text)
    assert match, text
    wait = int(match.group(1))
    assert 1 <= wait <= 10, text
    status = _status(lab_cfg)
    assert status["users"]["alice@shop.test"] == {"in_window": 3, "limit": 3, "window_seconds": 10}, status
    time.sleep(max(0.0, wait + 0.5 - (time.monotonic() - refused_at)))
    with _session(converged, "alice@shop.test", ALICE_PW) as s:
        s.send_message(_message("alice@shop.test", to, f"user {TOKEN} after the window"))


# --- per-destination spacing ----------------------------------------------------------

def test_deliveries_to_a_limited_destination_are_spaced(converged, lab_cfg):
    start = time.time()
    recipients = [f"rl{TOKEN}-ok-{n}@inbox.test" for n in range(4)]
    with _session(converged, "bob@shop.test", BOB_PW) as s:
        for n, to in enumerate(recipients):
            s.send_message(_message("bob@shop.test", to, f"spacing {TOKEN} {n}"))
    submitted = time.time() - start
    assert submitted < DELAY, f"submitting took {submitted:.1f}s: too slow to show the spacing"
    lines = _wait_sent(lab_cfg, start, recipients)
    assert sorted(line["to"] for line in lines) == sorted(recipients), lines
    assert {line["tag"] for line in lines} == {"postfix/rl_inbox_test/smtp"}, lines
    ours = [line["time"] for line in lines]
    gaps = [round(b - a, 2) for a, b in zip(ours, ours[1:])]
    # every delivery to inbox.test in that time (earlier tests' messages too) keeps the distance
    # (one delivery of a message to several recipients logs a line per recipient)
    every = sorted({(line["queue_id"], line["time"]) for line in _sent_lines(lab_cfg, start)
                    if line["to"].endswith("@inbox.test")}, key=lambda d: d[1])
    all_gaps = [round(b[1] - a[1], 2) for a, b in zip(every, every[1:])]
    print(f"\nspacing of 4 deliveries to inbox.test (delay {DELAY}s): gaps {gaps} s; "
          f"all {len(every)} deliveries there: min gap {min(all_gaps)} s")
    assert min(gaps) >= DELAY - SLACK, gaps
    assert min(all_gaps) >= DELAY - SLACK, all_gaps
    # the receiver saw them arrive spaced as well
    arrived = {}
    deadline = time.monotonic() + 30
    while len(arrived) < 4 and time.monotonic() < deadline:
        for to in recipients:
            for msg in receiver.read_mailbox(converged.mx_root, to):
                arrived[to] = os.stat(msg.path).st_mtime
        time.sleep(0.5)
    times = sorted(arrived.values())
    mx_gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
    print(f"at the receiver: gaps {mx_gaps} s")
    assert len(times) == 4 and min(mx_gaps) >= DELAY - 2 * SLACK, mx_gaps


def test_counters_survive_a_restart(converged, lab_cfg):
    before = _status(lab_cfg)
    _ssh(lab_cfg, "systemctl restart mailops-policyd")
    after = _status(lab_cfg)
    assert after["warmup"]["accepted_today"] == before["warmup"]["accepted_today"] > 0, (before, after)
    assert after["users"]["bob@shop.test"]["in_window"] == before["users"]["bob@shop.test"]["in_window"] >= 4


# --- failure mode ------------------------------------------------------------------------

def test_submission_is_deferred_while_the_policy_service_is_down(converged, lab_cfg):
    to = f"rl{TOKEN}-down@inbox.test"
    _ssh(lab_cfg, "systemctl stop mailops-policyd")
    try:
        with _session(converged, "bob@shop.test", BOB_PW) as s:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                s.send_message(_message("bob@shop.test", to, f"down {TOKEN}"))
        code, text = refused.value.recipients[to]
        assert (code, text.decode()) == (451, "4.3.5 " + _rcpt_refusal(
            to, "Sending limits cannot be checked right now; try again later")), (code, text)
    finally:
        _ssh(lab_cfg, "systemctl start mailops-policyd")
    with _session(converged, "bob@shop.test", BOB_PW) as s:
        s.send_message(_message("bob@shop.test", to, f"up again {TOKEN}"))


# --- warm-up -----------------------------------------------------------------------------

def test_warmup_allowance(converged, lab_cfg):
    now = datetime.now(timezone.utc)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    if midnight - now < timedelta(minutes=3):  # the UTC day must not change under the test
        time.sleep((midnight - now).total_seconds() + 5)
    today = datetime.now(timezone.utc).date()
    counted = _status(lab_cfg)["warmup"]["accepted_today"]
    # day 1 allows two recipients more than this host has already accepted today
    volume = counted + 2
    _write_vars(converged, dict(LIMITS, destinations={"inbox.test": LIMITS["destinations"]["inbox.test"]},
                                warmup={"start": today.isoformat(),
                                        "schedule": [{"day": 1, "volume": volume}, {"day": 2, "volume": 1000}]}),
                True)
    converged.converge()
    status = _status(lab_cfg)["warmup"]
    assert (status["day"], status["allowance"], status["remaining"]) == (1, volume, 2), status
    rcpts = [f"rl{TOKEN}-warm-{n}@inbox.test" for n in range(3)]
    with _session(converged, "bob@shop.test", BOB_PW) as s:
        refused = s.sendmail("bob@shop.test", rcpts, _message("bob@shop.test", rcpts[0], f"warm {TOKEN}")
                             .as_bytes())
        assert list(refused) == [rcpts[2]], refused
        code, text = refused[rcpts[2]]
        assert (code, text.decode()) == (450, "4.7.1 " + _rcpt_refusal(
            rcpts[2], f"warm-up day 1 allowance of {volume} messages reached; try again tomorrow")), (code, text)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("bob@shop.test", [rcpts[2]], _message("bob@shop.test", rcpts[2], f"warm {TOKEN}").as_bytes())
    status = _status(lab_cfg)["warmup"]
    assert status["accepted_today"] == volume and status["remaining"] == 0 and status["configured"], status


def test_gmail_transport_is_gone_after_its_limit_was_removed(converged, lab_cfg):
    services = _postconf(lab_cfg, "-M")
    assert "rl_gmail_com" not in services and "rl_inbox_test" in services
    assert "rl_gmail_com" not in _postconf(lab_cfg, "-n")
    table = _ssh(lab_cfg, "grep -v '^#' /etc/postfix/transport_rate_limits")
    assert table.splitlines() == ["inbox.test rl_inbox_test:"], table


# --- no limits at all -----------------------------------------------------------------------

def test_without_limits_postfix_is_plain_and_mail_is_not_slowed(converged, lab_cfg):
    _write_vars(converged, None, False)
    _, stats = converged.converge()
    assert stats["failed"] == 0
    out, again = converged.converge()
    assert again["changed"] == 0, f"second converge without limits changed: {changed_tasks(out)}"
    main = _postconf(lab_cfg, "-n")
    assert "transport_maps" not in main and not re.search(r"\brl_", main) and "policy" not in main, main
    assert not re.search(r"\brl_", _postconf(lab_cfg, "-M"))
    assert "policy" not in _postconf(lab_cfg, "-P")
    gone = _ssh(lab_cfg, "test -e /etc/postfix/transport_rate_limits && echo present || echo absent; "
                         "systemctl is-active mailops-policyd || true; systemctl is-enabled mailops-policyd || true")
    assert gone.split() == ["absent", "inactive", "disabled"], gone
    start = time.time()
    recipients = [f"rl{TOKEN}-free-{n}@inbox.test" for n in range(4)]
    with _session(converged, "alice@shop.test", ALICE_PW) as s:  # more than 3 in 10 s: no per-user limit now
        for n, to in enumerate(recipients):
            s.send_message(_message("alice@shop.test", to, f"free {TOKEN} {n}"))
    lines = _wait_sent(lab_cfg, start, recipients)
    assert sorted(line["to"] for line in lines) == sorted(recipients), lines
    assert {line["tag"] for line in lines} == {"postfix/smtp"}, lines  # the default transport
    span = lines[-1]["time"] - lines[0]["time"]
    print(f"\nunlimited: 4 deliveries to inbox.test within {span:.2f} s")
    assert span < DELAY, f"deliveries without a limit took {span:.1f}s"

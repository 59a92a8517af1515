"""Streaming Postfix log statistics: real Postfix 3.7 line formats, fed one line at a time."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailops.errors import MailopsError
from mailops.ops import postfixlog
from mailops.ops.bounces import BounceStore, bounces_csv
from mailops.ops.logtime import parse_since
from mailops.ops.postfixlines import Delivery, Reject, normalise_reason
from mailops.ops.postfixlog import LogStats
from mailops.ops.tables import BoundedTable

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TS = "2026-11-22T16:50:01+0000"


def j(msg: str, program: str = "postfix/smtp[3120]", ts: str = TS) -> str:
    """A journalctl -o short-iso line."""
    return f"{ts} mta1 {program}: {msg}\n"


def smtp(qid: str, rcpt: str, dsn: str, status: str, reason: str, ts: str = TS, relay: str | None = None) -> str:
    relay = relay or f"mx.{rcpt.split('@')[1]}[198.51.100.2]:25"
    return j(f"{qid}: to=<{rcpt}>, relay={relay}, delay=0.52, delays=0.1/0/0.2/0.22, dsn={dsn}, "
             f"status={status} ({reason})", ts=ts)


def qmgr_active(qid: str, sender: str, ts: str = TS) -> str:
    return j(f"{qid}: from=<{sender}>, size=4211, nrcpt=1 (queue active)", "postfix/qmgr[900]", ts)


def feed(*lines: str, **kwargs) -> LogStats:
    kwargs.setdefault("now", NOW)
    return LogStats(**kwargs).feed_lines(lines)


# -- deliveries ----------------------------------------------------------------

def test_sent_deferred_bounced_are_counted_per_domain_hour_and_dsn():
    stats = feed(
        qmgr_active("4F9D195432C", "news@shop.test"),
        smtp("4F9D195432C", "Alice@Inbox.test", "2.0.0", "sent", "250 2.0.0 Ok: queued as 7BC2D1E0F3"),
        smtp("5A1B2C3D4E", "bob@inbox.test", "4.2.1", "deferred",
             "host mx.inbox.test[198.51.100.2] said: 450 4.2.1 <bob@inbox.test>: Recipient address rejected: "
             "try later (in reply to RCPT TO command)"),
        smtp("5A1B2C3D4E", "bob@inbox.test", "4.2.1", "deferred", "host mx.inbox.test[198.51.100.2] said: 450 4.2.1 "
             "<bob@inbox.test>: Recipient address rejected: try later (in reply to RCPT TO command)",
             ts="2026-11-22T17:20:00+0000"),
        smtp("6C1B2C3D4E", "nobody@gmail.test", "5.1.1", "bounced",
             "host mx.gmail.test[198.51.100.3] said: 550 5.1.1 <nobody@gmail.test>: Recipient address rejected: "
             "User unknown (in reply to RCPT TO command)", ts="2026-11-22T17:21:00+0000"),
    )
    report = stats.report()
    json.dumps(report)                         # the CLI prints it as JSON
    assert report["totals"] == {"sent": 1, "deferred": 2, "bounced": 1, "expired": 0, "rejected": 0}
    assert report["by_domain"]["inbox.test"] == {"sent": 1, "deferred": 2, "bounced": 0, "expired": 0, "rejected": 0}
    assert report["by_domain"]["gmail.test"]["bounced"] == 1
    assert list(report["by_hour"]) == ["2026-11-22T16:00Z", "2026-11-22T17:00Z"]
    assert report["by_hour"]["2026-11-22T17:00Z"] == {"sent": 0, "deferred": 1, "bounced": 1, "expired": 0,
                                                      "rejected": 0}
    assert report["dsn"] == {"2.0.0": 1, "4.2.1": 2, "5.1.1": 1}
    assert report["dsn_classes"] == {"2": 1, "4": 2, "5": 1}
    assert (report["lines"], report["postfix_lines"]) == (5, 5)
    assert report["first"] == "2026-11-22T16:50:01Z" and report["last"] == "2026-11-22T17:21:00Z"


def test_delivery_event_carries_sender_relay_and_final_parenthesised_reason():
    events: list = []
    feed(qmgr_active("4F9D195432C", "news@shop.test"),
         j("4F9D195432C: to=<u@inbox.test>, orig_to=<alias@shop.test>, relay=mx.inbox.test[198.51.100.2]:25, "
           "conn_use=2, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok (id 42) queued)"),
         smtp("0000AAAA11", "v@inbox.test", "2.0.0", "sent", "250 ok"),
         on_event=events.append)
    first, second = events
    assert first == Delivery(time=datetime(2026, 11, 22, 16, 50, 1, tzinfo=UTC), queue_id="4F9D195432C",
                             recipient="u@inbox.test", domain="inbox.test", sender="news@shop.test",
                             relay="mx.inbox.test[198.51.100.2]:25", dsn="2.0.0", status="sent",
                             reason="250 2.0.0 Ok (id 42) queued")
    assert second.sender is None               # its qmgr line was not in the log


def test_address_verification_probes_are_not_deliveries():
    stats = feed(smtp("1A2B3C4D5E", "probe@inbox.test", "2.1.5", "deliverable", "250 2.1.5 Ok"),
                 smtp("1A2B3C4D5F", "gone@inbox.test", "5.1.1", "undeliverable", "550 5.1.1 unknown"))
    assert stats.report()["totals"] == dict.fromkeys(postfixlog.STATUSES, 0)
    assert stats.hard_bounces() == []


def test_qmgr_expiry_turns_the_still_deferred_recipients_into_expired_hard_bounces():
    stats = feed(
        qmgr_active("C93CEB08A046", "ina@shop.test"),
        j("C93CEB08A046: to=<order@slow.test>, relay=none, delay=307136, delays=307106/0.02/30/0, dsn=4.4.1, "
          "status=deferred (connect to slow.test[192.0.2.19]:25: Connection timed out)"),
        j("C93CEB08A046: from=<ina@shop.test>, status=expired, returned to sender", "postfix/qmgr[900]",
          "2026-11-22T18:00:00+0000"),
        j("C93CEB08A046: sender non-delivery notification: B1B894562003", "postfix/bounce[455]",
          "2026-11-22T18:00:00+0000"),
        j("C93CEB08A046: removed", "postfix/qmgr[900]", "2026-11-22T18:00:00+0000"),
    )
    report = stats.report()
    assert report["totals"]["expired"] == 1 and report["by_domain"]["slow.test"]["expired"] == 1
    assert report["ndr_sent"] == 1
    assert stats.hard_bounces() == [{
        "recipient": "order@slow.test", "domain": "slow.test", "dsn": "4.4.1", "class": "expired",
        "reason": "connect to slow.test[192.0.2.19]:25: Connection timed out", "time": "2026-11-22T18:00:00Z",
        "sender": "ina@shop.test", "count": 1}]
    assert stats.soft_bounces() == []
    assert stats.inflight == 0


def test_expired_without_seen_recipients_still_counts_and_a_per_recipient_expired_line_is_a_hard_bounce():
    stats = feed(
        j("9294C8866A: from=<a@shop.test>, status=expired, returned to sender", "postfix/qmgr[900]"),
        j("I1B2C3D409: to=<d76@example.test>, relay=none, delay=432000, delays=0/0/0/0, dsn=4.4.1, "
          "status=expired, returned to sender", "postfix/error[77]"),
    )
    assert stats.report()["totals"]["expired"] == 2
    (row,) = stats.hard_bounces()
    assert (row["recipient"], row["class"], row["dsn"]) == ("d76@example.test", "expired", "4.4.1")


@pytest.mark.parametrize("dsn, cls", [("5.1.1", "bad-mailbox"), ("5.1.10", "bad-mailbox"), ("5.1.2", "bad-domain"),
                                      ("5.2.1", "mailbox-disabled"), ("5.2.2", "mailbox-full"), ("5.7.1", "policy"),
                                      ("5.7.26", "policy"), ("5.4.4", "routing"), ("5.3.0", "system"),
                                      ("5.5.0", "other")])
def test_hard_bounce_class_follows_the_dsn(dsn, cls):
    (row,) = feed(smtp("7A7A7A7A7A", "x@inbox.test", dsn, "bounced", f"550 {dsn} no")).hard_bounces()
    assert row["class"] == cls and row["dsn"] == dsn


def test_hard_bounces_are_one_row_per_recipient_sorted_with_the_last_time_and_a_count():
    stats = feed(
        qmgr_active("AAAA000001", "news@shop.test"),
        smtp("AAAA000001", "zed@inbox.test", "5.1.1", "bounced", "550 5.1.1 unknown"),
        smtp("AAAA000002", "amy@inbox.test", "5.2.2", "bounced", "552 5.2.2 mailbox full"),
        smtp("AAAA000003", "zed@inbox.test", "5.1.1", "bounced", "550 5.1.1 still unknown",
             ts="2026-11-22T19:00:00+0000"),
        smtp("AAAA000004", "soft@inbox.test", "4.4.7", "bounced", "message too old"),   # not a 5.x.x
    )
    rows = stats.hard_bounces()
    assert [r["recipient"] for r in rows] == ["amy@inbox.test", "zed@inbox.test"]
    zed = rows[1]
    # the last bounce's queue file had no qmgr line: the sender stays the last one known
    assert (zed["count"], zed["time"], zed["reason"], zed["sender"]) == (
        2, "2026-11-22T19:00:00Z", "550 5.1.1 still unknown", "news@shop.test")
    assert stats.report()["totals"]["bounced"] == 4


# -- soft bounces ----------------------------------------------------------------

DEFER = "host mx.inbox.test[198.51.100.2] said: 450 4.2.1 <{}>: Recipient address rejected: try later"


def test_a_deferral_later_delivered_is_not_a_soft_bounce():
    stats = feed(
        qmgr_active("B00000000A", "news@shop.test"),
        smtp("B00000000A", "late@inbox.test", "4.2.1", "deferred", DEFER.format("late@inbox.test")),
        smtp("B00000000B", "stuck@inbox.test", "4.2.1", "deferred", DEFER.format("stuck@inbox.test")),
        smtp("B00000000B", "stuck@inbox.test", "4.4.1", "deferred", "connect to mx.inbox.test[198.51.100.2]:25: "
             "Connection refused", ts="2026-11-22T17:50:01+0000"),
        smtp("B00000000C", "once@inbox.test", "4.2.1", "deferred", DEFER.format("once@inbox.test")),
        smtp("B00000000A", "late@inbox.test", "2.0.0", "sent", "250 2.0.0 Ok", ts="2026-11-22T18:00:00+0000"),
    )
    rows = stats.soft_bounces()
    assert [r["recipient"] for r in rows] == ["stuck@inbox.test", "once@inbox.test"]
    assert rows[0] == {"recipient": "stuck@inbox.test", "domain": "inbox.test", "count": 2, "last_dsn": "4.4.1",
                       "last_reason": "connect to mx.inbox.test[198.51.100.2]:25: Connection refused",
                       "first": "2026-11-22T16:50:01Z", "last": "2026-11-22T17:50:01Z", "sender": None}
    assert stats.report()["totals"]["deferred"] == 4     # every attempt


def test_a_deferral_later_hard_bounced_is_not_a_soft_bounce():
    stats = feed(smtp("D00000000A", "x@inbox.test", "4.2.1", "deferred", DEFER.format("x@inbox.test")),
                 smtp("D00000000A", "x@inbox.test", "5.1.1", "bounced", "550 5.1.1 unknown"))
    assert stats.soft_bounces() == [] and len(stats.hard_bounces()) == 1


# -- rejects -----------------------------------------------------------------------

def test_noqueue_relay_reject_is_a_rejected_recipient_with_its_code():
    events: list = []
    stats = feed(j("NOQUEUE: reject: RCPT from unknown[192.0.2.5]: 554 5.7.1 <x@elsewhere.test>: Relay access "
                   "denied; from=<a@b.test> to=<X@Elsewhere.test> proto=ESMTP helo=<spammer>", "postfix/smtpd[2001]"),
                 on_event=events.append)
    assert events == [Reject(time=datetime(2026, 11, 22, 16, 50, 1, tzinfo=UTC), queue_id=None, stage="RCPT",
                             code="554", dsn="5.7.1", recipient="x@elsewhere.test", domain="elsewhere.test",
                             sender="a@b.test", client="unknown[192.0.2.5]",
                             reason="<x@elsewhere.test>: Relay access denied")]
    report = stats.report()
    assert report["totals"]["rejected"] == 1 and report["by_domain"]["elsewhere.test"]["rejected"] == 1
    assert report["dsn"] == {"5.7.1": 1}
    assert report["top_reasons"] == [{"reason": "554 5.7.1 <addr>: Relay access denied", "status": "rejected",
                                      "count": 1}]


def test_a_4xx_policy_reject_is_still_a_reject_and_keeps_its_code():
    events: list = []
    stats = feed(j("NOQUEUE: reject: RCPT from mail.example.test[192.0.2.8]: 450 4.7.1 <u@inbox.test>: Recipient "
                   "address rejected: Greylisted, see http://postgrey.schweikert.ch/help/inbox.test.html; "
                   "from=<s@example.test> to=<u@inbox.test> proto=ESMTP helo=<mail.example.test>",
                   "postfix/smtpd[2001]"), on_event=events.append)
    (event,) = events
    assert (event.code, event.dsn, event.stage) == ("450", "4.7.1", "RCPT")
    assert event.reason.endswith("see http://postgrey.schweikert.ch/help/inbox.test.html")
    assert stats.report()["dsn_classes"]["4"] == 1 and stats.report()["totals"]["rejected"] == 1


def test_milter_rejects_from_cleanup_and_smtpd():
    events: list = []
    stats = feed(
        j("5B1C2D3E4F: milter-reject: END-OF-MESSAGE from app.shop.test[198.51.100.50]: 5.7.1 Rejected by DMARC "
          "policy for shop.test; from=<a@shop.test> to=<c@inbox.test> proto=ESMTP helo=<app.shop.test>",
          "postfix/cleanup[1700]"),
        j("NOQUEUE: milter-reject: RCPT from unknown[192.0.2.9]: 451 4.7.1 Service unavailable - try again later; "
          "from=<s@x.test> to=<c@inbox.test> proto=ESMTP helo=<h>", "postfix/submission/smtpd[1500]"),
        on_event=events.append)
    cleanup, smtpd = events
    assert (cleanup.queue_id, cleanup.stage, cleanup.code, cleanup.dsn, cleanup.client) == (
        "5B1C2D3E4F", "END-OF-MESSAGE", "", "5.7.1", "app.shop.test[198.51.100.50]")
    assert cleanup.reason == "Rejected by DMARC policy for shop.test"
    assert (smtpd.queue_id, smtpd.code, smtpd.dsn, smtpd.sender) == (None, "451", "4.7.1", "s@x.test")
    assert stats.report()["by_domain"]["inbox.test"]["rejected"] == 2


def test_postscreen_and_connect_and_header_check_rejects():
    events: list = []
    feed(
        j("NOQUEUE: reject: RCPT from [192.0.2.7]:5678: 550 5.7.1 Service unavailable; client [192.0.2.7] blocked "
          "using zen.spamhaus.org; from=<s@x.test>, to=<u@inbox.test>, proto=ESMTP, helo=<h>", "postfix/postscreen[5]"),
        j("NOQUEUE: reject: CONNECT from unknown[192.0.2.1]: 554 5.7.1 Service unavailable; proto=SMTP",
          "postfix/smtpd[9]"),
        j("6B1C2D3E4F: reject: header Subject: cheap pills from app.shop.test[198.51.100.50]; from=<s@shop.test> "
          "to=<u@inbox.test> proto=ESMTP helo=<app>: 5.7.1 message content rejected", "postfix/cleanup[1700]"),
        j("NOQUEUE: reject_warning: RCPT from unknown[192.0.2.5]: 554 5.7.1 would reject; proto=ESMTP",
          "postfix/smtpd[9]"),
        on_event=events.append)
    postscreen, connect, header = events              # reject_warning is not a reject
    assert (postscreen.client, postscreen.recipient, postscreen.sender) == ("[192.0.2.7]:5678", "u@inbox.test", "s@x.test")
    assert postscreen.reason == "Service unavailable; client [192.0.2.7] blocked using zen.spamhaus.org"
    assert (connect.stage, connect.recipient, connect.domain, connect.reason) == (
        "CONNECT", None, None, "Service unavailable")
    assert (header.stage, header.dsn, header.recipient, header.reason) == (
        "HEADER", "5.7.1", "u@inbox.test", "message content rejected")


# -- which lines count ---------------------------------------------------------------

def test_multi_instance_and_submission_lines_count_other_programs_are_skipped():
    stats = feed(
        smtp("E00000000A", "a@inbox.test", "2.0.0", "sent", "250 ok").replace("postfix/smtp[", "postfix-out/smtp["),
        j("connect from app.shop.test[198.51.100.50]", "postfix/submission/smtpd[1500]"),
        j("E00000000A: DKIM-Signature field added (s=mo2026, d=shop.test)", "opendkim[600]"),
        j("imap-login: Login: user=<alice>", "dovecot[1]"),
        j("E00000000A: to=<b@inbox.test>, relay=x, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (ok)",
          "postfixadmin[3]"),
        "-- Boot 2f1b0c2e8a3d4b5c --\n",
        "\n",
    )
    assert (stats.lines, stats.parsed, stats.skipped) == (7, 2, 5)
    assert stats.report()["totals"]["sent"] == 1


def test_all_three_timestamp_formats_give_the_same_utc_time():
    msg = "F00000000A: to=<a@inbox.test>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered)"
    events: list = []
    feed(f"2026-11-22T16:50:01+0000 mta1 postfix/local[1]: {msg}",
         f"2026-11-22T17:50:01.250000+01:00 mta1 postfix/local[1]: {msg}\n",
         f"Nov 22 16:50:01 mta1 postfix/local[1]: {msg}\r\n",
         f"2026-11-22T16:50:01Z mta1 postfix/local[1]: {msg}",
         on_event=events.append)
    times = [e.time for e in events]
    assert times[0] == times[2] == times[3] == datetime(2026, 11, 22, 16, 50, 1, tzinfo=UTC)
    assert times[1] == datetime(2026, 11, 22, 16, 50, 1, 250000, tzinfo=UTC)
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert events[2].reason == "delivered"              # CRLF stripped


def test_syslog_timestamps_without_a_year_roll_back_over_new_year():
    msg = "postfix/qmgr[9]: A1: removed"
    stats = feed(f"Dec 31 23:59:59 mta1 {msg}", f"Jan  1 00:00:01 mta1 {msg}",
                 now=datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert stats.first == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert stats.last == datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    explicit = feed(f"Dec 31 23:59:59 mta1 {msg}", year=2020, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert explicit.first == datetime(2020, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_since_and_until_skip_lines_but_count_them_and_keep_queued_senders():
    lines = [
        qmgr_active("G00000000A", "early@shop.test", ts="2026-11-22T15:00:00+0000"),   # before since
        smtp("G00000000A", "a@inbox.test", "2.0.0", "sent", "ok", ts="2026-11-22T15:30:00+0000"),
        smtp("G00000000A", "b@inbox.test", "2.0.0", "sent", "ok", ts="2026-11-22T16:00:00+0000"),
        smtp("G00000000A", "c@inbox.test", "5.1.1", "bounced", "550 5.1.1 unknown", ts="2026-11-22T17:00:00+0000"),
        smtp("G00000000A", "d@inbox.test", "2.0.0", "sent", "ok", ts="2026-11-22T17:00:01+0000"),  # after until
    ]
    stats = feed(*lines, since=datetime(2026, 11, 22, 16, tzinfo=UTC), until=datetime(2026, 11, 22, 17, tzinfo=UTC))
    report = stats.report()
    assert (report["lines"], report["postfix_lines"], stats.skipped) == (5, 2, 3)
    assert report["totals"]["sent"] == 1 and report["totals"]["bounced"] == 1
    assert (report["first"], report["last"]) == ("2026-11-22T16:00:00Z", "2026-11-22T17:00:00Z")
    assert stats.hard_bounces()[0]["sender"] == "early@shop.test"


# -- reasons -------------------------------------------------------------------------

def test_reason_normalisation_groups_recipients_hosts_and_ids():
    text = ("host mx.inbox.test[198.51.100.2] said: 450 4.2.1 <defer-1@inbox.test>: Recipient address rejected: "
            "try later (in reply to RCPT TO command)")
    assert normalise_reason(text) == ("host mx.inbox.test[<ip>] said: 450 4.2.1 <addr>: Recipient address rejected: "
                                      "try later (in reply to RCPT TO command)")
    assert normalise_reason("250 2.0.0 Ok: queued as 4F9D195432C at 16:50:01 size 123456") == \
        "250 2.0.0 Ok: queued as <id> at 16:50:01 size <n>"
    assert normalise_reason("connect to mx[2001:db8:51::2]:25: Network is unreachable") == \
        "connect to mx[<ip>]:25: Network is unreachable"
    stats = feed(*(smtp(f"H0000000{i}A", f"defer-{i}@inbox.test", "4.2.1", "deferred",
                        text.replace("defer-1", f"defer-{i}").replace(".2]", f".{i + 2}]")) for i in range(3)),
                 smtp("H00000009A", "x@inbox.test", "4.4.1", "deferred", "connect to mx: Connection refused"))
    top = stats.report(top=1)["top_reasons"]
    assert top == [{"reason": normalise_reason(text), "status": "deferred", "count": 3}]
    assert len(stats.report()["top_reasons"]) == 2


def test_distinct_reasons_are_capped(monkeypatch):
    monkeypatch.setattr(postfixlog, "MAX_DISTINCT_REASONS", 2)
    stats = feed(*(smtp(f"K0000000{i}A", "x@inbox.test", "4.4.1", "deferred", f"reason {word}")
                   for i, word in enumerate(["alpha", "beta", "gamma", "delta"])))
    reasons = {r["reason"]: r["count"] for r in stats.report()["top_reasons"]}
    assert reasons == {"reason alpha": 1, "reason beta": 1, "other": 2}


# -- CSV -------------------------------------------------------------------------------

def test_bounces_csv_quotes_commas_and_quotes():
    reason = 'host mx said: 550 5.1.1 "no such user", sorry (in reply to RCPT TO command)'
    rows = feed(smtp("L00000000A", "q@inbox.test", "5.1.1", "bounced", reason)).hard_bounces()
    text = bounces_csv(rows)
    assert text.splitlines()[0] == "recipient,domain,dsn,class,reason,time,sender,count"
    assert '"host mx said: 550 5.1.1 ""no such user"", sorry (in reply to RCPT TO command)"' in text
    (parsed,) = list(csv.DictReader(io.StringIO(text)))
    assert parsed == {"recipient": "q@inbox.test", "domain": "inbox.test", "dsn": "5.1.1", "class": "bad-mailbox",
                      "reason": reason, "time": "2026-11-22T16:50:01Z", "sender": "", "count": "1"}


# -- --since -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2026-11-22", datetime(2026, 11, 22, tzinfo=UTC)),
    ("2026-11-22 16:00", datetime(2026, 11, 22, 16, tzinfo=UTC)),
    ("2026-11-22T16:00:00", datetime(2026, 11, 22, 16, tzinfo=UTC)),
    ("2026-11-22T16:00:00Z", datetime(2026, 11, 22, 16, tzinfo=UTC)),
    ("2026-11-22T17:00:00+01:00", datetime(2026, 11, 22, 16, tzinfo=UTC)),
    ("now", NOW),
    ("today", datetime(2026, 11, 23, tzinfo=UTC)),
    ("yesterday", datetime(2026, 11, 22, tzinfo=UTC)),
    ("30m", NOW - timedelta(minutes=30)),
    ("2h", NOW - timedelta(hours=2)),
    ("2h ago", NOW - timedelta(hours=2)),
    ("-2h", NOW - timedelta(hours=2)),
    ("1d", NOW - timedelta(days=1)),
    ("1w", NOW - timedelta(weeks=1)),
    (" 3 hours ago ", NOW - timedelta(hours=3)),
])
def test_parse_since_forms(text, expected):
    result = parse_since(text, now=NOW)
    assert result == expected and result.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["xyz", "", "2h later", "2026-13-01", "12", "5 fortnights"])
def test_parse_since_refuses_what_is_not_a_time(text):
    with pytest.raises(MailopsError) as error:
        parse_since(text, now=NOW)
    assert str(error.value) == (f"--since '{text}': not a time; use e.g. 2026-11-01, '2026-11-01 08:00', 2h, 1d "
                                "or today")


# -- memory ----------------------------------------------------------------------------------

def _qid(n: int) -> str:
    return f"{n:011X}"


def test_removed_queue_ids_are_forgotten():
    stats = LogStats(now=NOW)
    largest = 0
    for n in range(200_000):
        stats.feed(qmgr_active(_qid(n), "news@shop.test"))
        largest = max(largest, stats.inflight)
        stats.feed(j(f"{_qid(n)}: removed", "postfix/qmgr[900]"))
    assert largest == 1 and stats.inflight == 0 and stats.evicted == 0


def test_queue_ids_never_removed_are_capped():
    stats = LogStats(now=NOW)
    for n in range(200_000):
        stats.feed(qmgr_active(_qid(n), "news@shop.test"))
    assert stats.inflight == postfixlog.MAX_INFLIGHT_QUEUE_IDS
    assert stats.evicted == 200_000 - postfixlog.MAX_INFLIGHT_QUEUE_IDS
    # the newest are kept: a delivery of the last queue file still knows its sender
    events: list = []
    stats.on_event = events.append
    stats.feed(smtp(_qid(199_999), "a@inbox.test", "2.0.0", "sent", "ok"))
    assert events[0].sender == "news@shop.test"


# -- bounded tables and recipient lists ---------------------------------------------------------

def _mixed_log(n: int) -> list[str]:
    """Deferrals, deliveries, bounces and expiries of 40 recipients, each seen many times."""
    lines = []
    for i in range(n):
        rcpt, qid = f"r{i % 40}@d{i % 7}.test", f"M{i % 13:09d}A"
        if i % 13 == 0:
            lines.append(qmgr_active(qid, f"s{i % 3}@shop.test"))
        status = ("deferred", "deferred", "sent", "bounced", "deferred", "expired")[i % 6]
        dsn = {"sent": "2.0.0", "bounced": "5.1.1", "expired": "4.4.7"}.get(status, "4.2.1")
        lines.append(smtp(qid, rcpt, dsn, status, f"reply {i % 5}", ts=f"2026-11-22T16:{i % 60:02d}:00+0000"))
    return lines


def test_recipient_lists_moved_to_the_temporary_database_are_the_same_lists():
    in_memory = feed(*_mixed_log(600))
    spilling = LogStats(now=NOW)
    spilling.bounces = BounceStore(max_in_memory=3)
    spilling.feed_lines(_mixed_log(600))
    assert spilling.bounces.spilled and not in_memory.bounces.spilled
    assert spilling.hard_bounces() == in_memory.hard_bounces() and in_memory.hard_bounces()
    assert spilling.soft_bounces() == in_memory.soft_bounces() and in_memory.soft_bounces()
    assert spilling.bounces.counts() == in_memory.bounces.counts()


def test_a_bounded_table_keeps_the_busiest_keys_and_the_columns_add_up():
    table = BoundedTable(("sent", "bounced"), capacity=10, other="(other)")
    for i in range(1000):
        table.add("busy.test", "sent")
        table.add(f"once{i}.test", "bounced")
    rows = table.rows()
    assert len(table) <= 10 and rows["busy.test"] == {"sent": 1000, "bounced": 0}
    assert sum(r["sent"] for r in rows.values()) == 1000 and sum(r["bounced"] for r in rows.values()) == 1000
    assert list(table.rows(limit=1)) == ["busy.test", "(other)"]


def test_a_small_table_has_no_other_row():
    table = BoundedTable(("count",), capacity=10, other="(other)")
    table.add("a", "count")
    assert table.rows() == {"a": {"count": 1}}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
    st.builds(lambda prog, body: f"{TS} mta1 postfix/{prog}[1]: {body}",
              st.sampled_from(["smtp", "qmgr", "smtpd", "cleanup", "bounce", "postscreen"]),
              st.lists(st.sampled_from(list("<>@,;:()[]= .-5A0x") + [
                  "ABCDE12345: ", "to=<", ">, relay=", "dsn=5.1.1", ", status=", "bounced", "deferred", " (",
                  "NOQUEUE: reject: RCPT from ", "; from=<", " to=<", ": removed", "status=expired"]),
                  max_size=40).map("".join))),
    max_size=30))
def test_any_lines_give_statistics_never_an_exception(lines):
    stats = feed(*lines)
    report = stats.report()
    json.dumps(report)
    assert report["lines"] == len(lines) == report["postfix_lines"] + report["skipped"]
    stats.hard_bounces(), stats.soft_bounces()


def test_the_journal_is_asked_for_utc_times_with_four_digit_years():
    from mailops.ops.logs import journal_command
    plus_one = timezone(timedelta(hours=1))
    command = journal_command(datetime(1, 1, 2, tzinfo=UTC), datetime(2026, 11, 2, 6, 6, 7, tzinfo=plus_one))
    assert command.endswith("--since '0001-01-02 00:00:00 UTC' --until '2026-11-02 05:06:07 UTC'")

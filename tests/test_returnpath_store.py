"""The event store (mailops.returnpath.store): each message once, reports once, raw kept
for what could not be read, and the questions the reports will ask."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

from mailops.returnpath import classify
from mailops.returnpath.events import BOUNCE, COMPLAINT, DMARC, FORWARD, TLSRPT, UNPARSED
from mailops.returnpath.store import EventStore
from tests.test_returnpath_messages import RETURN_PATH, arf, dsn, returned_whole
from tests.test_returnpath_reports import dmarc_xml, report_mail, tls_json

DAY1 = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
DAY2 = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
SOFT = "Final-Recipient: rfc822; full@example.org\nAction: delayed\nStatus: 4.2.2"


def test_the_same_message_twice_is_stored_once(tmp_path):
    store = EventStore(str(tmp_path / "events.sqlite3"))
    raw = dsn(returned=returned_whole())
    event = classify(raw, RETURN_PATH, "")
    assert store.record(event, raw, received=DAY1) is True
    assert store.record(classify(raw, RETURN_PATH, ""), raw, received=DAY2) is False
    assert store.counts() == {"bounce": 1, "complaint": 0, "dmarc": 0, "tlsrpt": 0, "forward": 0, "unparsed": 0}
    assert len(store.bounce_list()) == 1
    store.close()
    reopened = EventStore(str(tmp_path / "events.sqlite3"))               # survives a restart
    assert reopened.counts()[BOUNCE] == 1
    assert reopened.bounce_list()[0]["recipient"] == "bob@example.org"


def test_raw_is_kept_for_unparsed_and_forward_only_and_bounded():
    store = EventStore(max_raw_bytes=100)
    broken = b"Subject: x\nContent-Type: multipart/report; report-type=feedback-report; boundary=b\n\n--b\n" \
             + b"y" * 500
    event = classify(broken, "abuse@shop.test", "")
    assert event.kind == UNPARSED
    store.record(event, broken, received=DAY1)
    (kept,) = store.kept(UNPARSED)
    assert (kept["bytes"], kept["truncated"], kept["reason"]) == (len(broken), 1, event.reason)
    assert store.raw(event.digest) == broken[:100]
    bounce_raw = dsn()
    bounce = classify(bounce_raw, RETURN_PATH, "")
    store.record(bounce, bounce_raw, received=DAY1)
    assert store.raw(bounce.digest) is None                            # parsed fully: its fields are kept
    plain = b"Subject: hello\n\nfor the postmaster\n"
    forward = classify(plain, "postmaster@shop.test", "x@example.org")
    store.record(forward, plain, received=DAY1)
    assert store.raw(forward.digest) == plain and store.counts()[FORWARD] == 1


def test_bounces_and_complaints_by_domain_and_day():
    store = EventStore()
    store.record(classify(dsn(returned=returned_whole()), RETURN_PATH, ""), received=DAY1)
    store.record(classify(dsn(SOFT), "b-x@bounces.news.test", ""), received=DAY2)
    store.record(classify(dsn(SOFT, "Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.2"),
                          RETURN_PATH, ""), received=DAY2)
    store.record(classify(arf(), "abuse@shop.test", ""), received=DAY2)
    assert store.bounces_by_day() == [
        {"domain": "news.test", "day": "2026-12-03", "severity": "soft", "count": 1},
        {"domain": "shop.test", "day": "2026-12-02", "severity": "hard", "count": 1},
        {"domain": "shop.test", "day": "2026-12-03", "severity": "hard", "count": 1},
        {"domain": "shop.test", "day": "2026-12-03", "severity": "soft", "count": 1},
    ]
    assert store.bounces_by_day("shop.test", since=DAY2) == [
        {"domain": "shop.test", "day": "2026-12-03", "severity": "hard", "count": 1},
        {"domain": "shop.test", "day": "2026-12-03", "severity": "soft", "count": 1}]
    assert store.bounces_by_day(until="2026-12-02") == [
        {"domain": "shop.test", "day": "2026-12-02", "severity": "hard", "count": 1}]
    assert store.complaints_by_day("shop.test") == [
        {"domain": "shop.test", "day": "2026-12-03", "feedback_type": "abuse", "count": 1}]
    assert store.complaints_by_day("news.test") == []
    assert store.counts()[COMPLAINT] == 1


def test_dmarc_rows_by_domain_and_source_and_a_resent_report_counts_once():
    store = EventStore()
    first = report_mail(gzip.compress(dmarc_xml()), "application/gzip", "a.xml.gz")
    resent = report_mail(gzip.compress(dmarc_xml()), "application/gzip", "again.xml.gz")   # other bytes, same report
    other = report_mail(dmarc_xml(report_id="r-2", records=[("10.77.0.11", 5, "none", "pass", "fail", "shop.test")]),
                        "application/xml", "b.xml")
    for raw in (first, resent, other):
        event = classify(raw, "dmarc@shop.test", "")
        assert event.kind == DMARC
        assert store.record(event, raw, received=DAY2)
    assert store.counts()[DMARC] == 3                       # three messages ...
    rows = store.dmarc_by_source("shop.test")               # ... two reports
    assert rows == [
        {"domain": "shop.test", "source_ip": "10.77.0.11", "messages": 12, "dkim_pass": 12, "spf_pass": 7,
         "dmarc_pass": 12, "none": 12, "quarantine": 0, "reject": 0},
        {"domain": "shop.test", "source_ip": "203.0.113.9", "messages": 2, "dkim_pass": 0, "spf_pass": 0,
         "dmarc_pass": 0, "none": 0, "quarantine": 0, "reject": 2},
    ]
    assert store.dmarc_by_source("news.test") == []
    assert store.dmarc_by_source(since=1764806400) == []     # every report ended before


def test_tls_failures_by_type():
    store = EventStore()
    raw = report_mail(json.dumps(tls_json()).encode(), "application/tlsrpt+json", "r.json")
    event = classify(raw, "tlsrpt@shop.test", "")
    assert event.kind == TLSRPT
    store.record(event, raw, received=DAY2)
    assert store.record(classify(raw, "tlsrpt@shop.test", ""), raw) is False
    assert store.tls_failures_by_type() == [
        {"domain": "shop.test", "result_type": "certificate-expired", "sessions": 2, "reports": 1},
        {"domain": "shop.test", "result_type": "starttls-not-supported", "sessions": 1, "reports": 1}]
    assert store.tls_summary() == [
        {"domain": "news.test", "policy_type": "no-policy-found", "successful": 5, "failed": 0},
        {"domain": "shop.test", "policy_type": "sts", "successful": 40, "failed": 3}]
    assert store.tls_failures_by_type("news.test") == []

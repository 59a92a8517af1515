"""The lab receiver plays the mailbox provider: it bounces after accepting (later-*), answers
complain-* with an ARF complaint, and sends DMARC aggregate and TLS-RPT reports built from what
it saw.  Everything that comes back is read with mailops' own classifier.

The unit tests at the top need no lab: the report and complaint builders, fed with real-format
OpenDMARC history and Postfix log lines.  The lab test at the bottom is self-contained (no
mailops host): it sends from the gateway to mx.inbox.test with inbox.test senders, so the
DSN, the complaint and the reports are delivered back into the lab Maildir."""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import json
import smtplib
import time
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from mailops.lab import dmarc_reports as dr, feedback_loop, provider_reports as pr, receiver, tls_reports as tr
from mailops.returnpath.classifier import classify
from mailops.returnpath.events import BOUNCE, COMPLAINT, DMARC, HARD, TLSRPT
from mailops.returnpath.reports import parse_dmarc

# -- without the lab ----------------------------------------------------------------------------------

# Messages as OpenDMARC 1.4 on the lab receiver wrote them to its HistoryFile (the first block is
# copied from the lab; keys as opendmarc-import reads them)
HISTORY = """job 4dQm2x0Y1Tz9
reporter mx.inbox.test
received 1796485800
ipaddr 198.51.100.1
from inbox.test
mfrom inbox.test
dkim inbox.test t1 0
spf 7
pdomain inbox.test
policy 15
rua mailto:dmarc@inbox.test
pct 100
adkim 114
aspf 114
p 110
sp 0
align_dkim 4
align_spf 5
arc 7
arc_policy 2 json:[]
action 2
job 4dQm2x0Y1Tz8
reporter mx.inbox.test
received 1796485801
ipaddr 198.51.100.1
from inbox.test
mfrom inbox.test
spf 7
pdomain inbox.test
policy 15
rua mailto:dmarc@inbox.test
pct 100
adkim 114
aspf 114
p 110
sp 0
align_dkim 5
align_spf 5
action 2
job 4dQm2x0Y1Tz7
reporter mx.inbox.test
received 1796485802
ipaddr 198.51.100.1
from inbox.test
mfrom inbox.test
spf 7
dkim inbox.test t1 0
pdomain inbox.test
align_dkim 4
align_spf 5
action 2
job 4dQm2x0Y1Tz6
received 1796485803
ipaddr 2001:db8:51::11
from shop.test
mfrom bounces.shop.test
spf 0
dkim shop.test s2026 7
pdomain shop.test
align_dkim 5
align_spf 4
action 4
"""


def test_history_becomes_one_record_per_source_and_result_set():
    entries = dr.parse_history(HISTORY)
    assert [e.job for e in entries] == ["4dQm2x0Y1Tz9", "4dQm2x0Y1Tz8", "4dQm2x0Y1Tz7", "4dQm2x0Y1Tz6"]
    inbox = dr.dmarc_records([e for e in entries if e.pdomain == "inbox.test"])
    assert [(r["source_ip"], r["count"], r["dkim"], r["spf"]) for r in inbox] == [
        ("198.51.100.1", 2, "pass", "fail"), ("198.51.100.1", 1, "fail", "fail")]
    assert inbox[0]["dkim_results"] == [{"domain": "inbox.test", "selector": "t1", "result": "pass"}]
    assert inbox[1]["dkim_results"] == []
    assert inbox[0]["spf_result"] == {"domain": "inbox.test", "scope": "mfrom", "result": "fail"}
    shop = dr.dmarc_records([e for e in entries if e.pdomain == "shop.test"])
    assert shop == [{"source_ip": "2001:db8:51::11", "count": 1, "disposition": "quarantine", "dkim": "fail",
                     "spf": "pass", "header_from": "shop.test", "envelope_from": "bounces.shop.test",
                     "dkim_results": [{"domain": "shop.test", "selector": "s2026", "result": "fail"}],
                     "spf_result": {"domain": "bounces.shop.test", "scope": "mfrom", "result": "pass"}}]


def test_history_skips_broken_lines_and_local_submissions():
    text = "garbage before any job\njob A\nreceived soon\nipaddr 127.0.0.1x\nfrom a.test\n\njob B\n"
    entries = dr.parse_history(text)
    assert [(e.job, e.received) for e in entries] == [("A", 0), ("B", 0)]
    assert dr.dmarc_records(entries) == []      # no IP address: nothing to report


def test_dmarc_report_reads_back_with_the_classifier():
    records = dr.dmarc_records(dr.parse_history(HISTORY)[:3])
    xml = dr.dmarc_xml(report_id="1796490000.abc", begin=1796400000, end=1796490000, policy_domain="inbox.test",
                       policy={"v": "DMARC1", "p": "none", "rua": "mailto:dmarc@inbox.test"}, records=records)
    report = parse_dmarc(xml)
    assert (report.org_name, report.report_id, report.begin, report.end) == \
        ("inbox.test", "1796490000.abc", 1796400000, 1796490000)
    assert report.policy == {"domain": "inbox.test", "adkim": "r", "aspf": "r", "p": "none", "sp": "none",
                             "pct": "100"}
    raw = dr.dmarc_message(domain="inbox.test", report_id="1796490000.abc", begin=1796400000, end=1796490000,
                           xml=xml, to=["dmarc@inbox.test"])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    attachment = next(msg.iter_attachments())
    assert attachment.get_content_type() == "application/gzip"
    assert attachment.get_filename() == "inbox.test!inbox.test!1796400000!1796490000.xml.gz"
    assert gzip.decompress(attachment.get_content()) == xml
    event = classify(raw, "dmarc@inbox.test", dr.DMARC_FROM)
    assert event.kind == DMARC, event.reason
    rows = event.dmarc[0].rows
    assert [(r.source_ip, r.count, r.dkim, r.spf, r.disposition) for r in rows] == [
        ("198.51.100.1", 2, "pass", "fail", "none"), ("198.51.100.1", 1, "fail", "fail", "none")]
    assert rows[0].dkim_results == [{"domain": "inbox.test", "selector": "t1", "result": "pass"}]


# Postfix 3.7 smtp(8) lines with smtp_tls_loglevel = 1 (syslog format; the journal's short-iso is tested too)
MAIL_LOG = """\
Dec  5 15:50:00 mx postfix/smtp[100]: Untrusted TLS connection established to mta1.shop.test[198.51.100.11]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256
Dec  5 15:50:00 mx postfix/smtp[100]: 4dQm2x0Y1T01: to=<b-1@bounces.shop.test>, relay=mta1.shop.test[198.51.100.11]:25, delay=0.2, delays=0.01/0.01/0.1/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4dQm2y)
Dec  5 15:50:01 mx postfix/smtp[100]: 4dQm2x0Y1T02: to=<b-2@bounces.shop.test>, relay=mta1.shop.test[198.51.100.11]:25, conn_use=2, delay=0.1, delays=0.01/0.01/0/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4dQm2z)
Dec  5 15:50:02 mx postfix/smtp[101]: SSL_connect error to mta2.shop.test[2001:db8:51::12]:25: -1
Dec  5 15:50:02 mx postfix/smtp[101]: 4dQm2x0Y1T03: to=<b-3@bounces.shop.test>, relay=mta2.shop.test[2001:db8:51::12]:25, delay=1, delays=0.01/0.01/0.9/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4dQm30)
Dec  5 15:50:03 mx postfix/smtp[102]: 4dQm2x0Y1T04: to=<dmarc@news.test>, relay=mx.news.test[198.51.100.13]:25, delay=0.1, delays=0.01/0.01/0/0.05, dsn=2.0.0, status=sent (250 ok)
Dec  5 15:50:04 mx postfix/smtp[103]: 4dQm2x0Y1T05: to=<x@gone.test>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.gone.test[198.51.100.99]:25: Connection timed out)
Dec  5 15:50:05 mx postfix/virtual[104]: 4dQm2x0Y1T06: to=<a@inbox.test>, relay=virtual, delay=0.01, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)
"""


def test_tls_sessions_from_the_postfix_log():
    sessions = tr.tls_sessions(MAIL_LOG.splitlines(), year=2026)
    assert [(s.domain, s.mx_host, s.ip, s.result) for s in sessions] == [
        ("bounces.shop.test", "mta1.shop.test", "198.51.100.11", "success"),          # conn_use=2 is not new
        ("bounces.shop.test", "mta2.shop.test", "2001:db8:51::12", "validation-failure"),
        ("news.test", "mx.news.test", "198.51.100.13", "starttls-not-supported"),     # no TLS line: plaintext
    ]                                                                                 # relay=none, virtual: none
    assert sessions[0].time == datetime(2026, 12, 5, 15, 50, tzinfo=timezone.utc).timestamp()
    # the same lines as `journalctl -o short-iso` prints them
    journal = ["2026-12-05T15:50:00+0000 mx " + line.split(" mx ", 1)[1] for line in MAIL_LOG.splitlines()]
    assert [(s.domain, s.ip, s.result) for s in tr.tls_sessions(journal)] == \
        [(s.domain, s.ip, s.result) for s in sessions]


def test_tls_report_reads_back_with_the_classifier():
    sessions = [s for s in tr.tls_sessions(MAIL_LOG.splitlines(), year=2026) if s.domain == "bounces.shop.test"]
    report = tr.tlsrpt_json(report_id="r-1", begin=1796400000, end=1796490000, policy_domain="bounces.shop.test",
                            sessions=sessions, sending_ips=("198.51.100.2", "2001:db8:51::2"))
    doc = json.loads(report)
    assert doc["date-range"] == {"start-datetime": "2026-12-04T16:00:00Z", "end-datetime": "2026-12-05T17:00:00Z"}
    raw = tr.tlsrpt_message(domain="bounces.shop.test", report_id="r-1", begin=1796400000, end=1796490000,
                            report=report, to=["tls@shop.test"])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "bounces.shop.test" and msg["TLS-Report-Submitter"] == "inbox.test"
    part = next(msg.iter_attachments())
    assert part.get_content_type() == "application/tlsrpt+gzip"
    assert part.get_filename() == "inbox.test!bounces.shop.test!1796400000!1796490000!r-1.json.gz"
    event = classify(raw, "tls@shop.test", tr.TLSRPT_FROM)
    assert event.kind == TLSRPT, event.reason
    policy = event.tls[0].policies[0]
    assert (policy.policy_type, policy.policy_domain, policy.successful_sessions, policy.failed_sessions) == \
        ("no-policy-found", "bounces.shop.test", 1, 1)
    failure = policy.failures[0]
    assert (failure.result_type, failure.sending_mta_ip, failure.receiving_ip, failure.receiving_mx_hostname) == \
        ("validation-failure", "2001:db8:51::2", "2001:db8:51::12", "mta2.shop.test")


def test_rua_mailto_addresses():
    assert pr.mailto_addresses("mailto:a@x.test!10m, https://r.test/x ,mailto:b@Y.TEST., mailto:bad") == \
        ["a@x.test", "b@y.test"]


ORIGINAL = b"""Received: from gw.lab.test (gw.lab.test [198.51.100.1])
\tby mx.inbox.test (Postfix) with ESMTP id 4dQm2x0Y1T09
\tfor <complain-1@inbox.test>; Sat,  5 Dec 2026 15:50:00 +0000 (UTC)
Authentication-Results: mx.inbox.test; dmarc=pass (p=none dis=none) header.from=shop.test
Authentication-Results: mx.inbox.test;
\tdkim=pass (2048-bit key; unprotected) header.d=esp.test header.i=@esp.test header.s=a header.b=X;
\tdkim=pass (2048-bit key; unprotected) header.d=shop.test header.i=@shop.test header.s=b header.b=Y
Authentication-Results: elsewhere.test; dkim=pass header.d=forged.test
Authentication-Results: mx.inbox.test; spf=pass smtp.mailfrom=bounces.shop.test
From: Shop <news@shop.test>
To: complain-1@inbox.test
Subject: =?utf-8?q?Sale_=E2=82=AC?=
Message-ID: <m1@shop.test>

caf\xc3\xa9
"""


def test_complaint_goes_to_the_verified_aligned_dkim_domain():
    msg = email.message_from_bytes(ORIGINAL, policy=email.policy.compat32)
    assert feedback_loop.report_domain(msg) == ("shop.test", "DKIM d= verified by the receiver")
    assert feedback_loop.arrival_date(msg) == "Sat, 5 Dec 2026 15:50:00 +0000 (UTC)"
    unsigned = email.message_from_bytes(b"From: x@Spoofed.Test\nSubject: s\n\nbody\n", policy=email.policy.compat32)
    assert feedback_loop.report_domain(unsigned)[0] == "spoofed.test"


def test_complaint_reads_back_with_the_classifier():
    msg = email.message_from_bytes(ORIGINAL, policy=email.policy.compat32)
    raw = feedback_loop.build_arf(ORIGINAL, mail_from="rp@bounces.shop.test", rcpt_to="complain-1@inbox.test",
                                  source_ip="198.51.100.11", report_to="abuse@shop.test", reported_domain="shop.test",
                                  arrival=feedback_loop.arrival_date(msg),
                                  auth_results=feedback_loop.receiver_results(msg))
    assert b"\ncaf\xc3\xa9\n" in raw and b"Content-Transfer-Encoding: 8bit" in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report" and parsed.get_param("report-type") == "feedback-report"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "message/feedback-report",
                                                                  "message/rfc822"]
    event = classify(raw, "abuse@shop.test", feedback_loop.REPORT_FROM)
    assert event.kind == COMPLAINT, event.reason
    complaint = event.complaints[0]
    assert (complaint.feedback_type, complaint.recipient, complaint.original_mail_from, complaint.source_ip,
            complaint.reported_domain, complaint.arrival_date, complaint.message_id) == \
        ("abuse", "complain-1@inbox.test", "rp@bounces.shop.test", "198.51.100.11", "shop.test",
         "2026-12-05T15:50:00Z", "<m1@shop.test>")
    assert "header.d=forged.test" not in raw.split(b"message/rfc822")[0].decode()
    # mail submitted on the receiver itself has no SMTP client: no Source-IP rather than an empty one
    local = feedback_loop.build_arf(ORIGINAL, mail_from="", rcpt_to="complain-1@inbox.test", source_ip="",
                                    report_to="abuse@shop.test", reported_domain="shop.test", arrival="now",
                                    auth_results=[])
    assert b"Source-IP" not in local and b"Original-Mail-From: <>" in local
    assert classify(local, "abuse@shop.test", feedback_loop.REPORT_FROM).complaints[0].source_ip is None


def test_receiver_configuration_has_the_provider_patterns():
    transport = receiver._transport()
    assert "/^later-[^@]*@inbox\\.test$/ error:5.2.2 The email account" in transport
    assert "/@feedback-loop\\.invalid$/ lab-feedback:" in transport
    assert receiver._feedback_bcc().splitlines()[-1] == "/^(complain-[^@]*)@inbox\\.test$/ ${1}@feedback-loop.invalid"
    stock = "smtp      inet  n       -       y       -       -       smtpd\n"
    once = receiver._master_cf(stock)
    assert receiver._master_cf(once) == once and once.count("lab-feedback unix") == 1
    assert feedback_loop.complaint_recipient("complain-x@feedback-loop.invalid") == "complain-x@inbox.test"


# -- on the lab ---------------------------------------------------------------------------------------


def _raw(path: str) -> bytes:
    return Path(path).read_bytes()


def _wait(root, predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in receiver.read_mailbox(root) if predicate(m)]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def _message(sender: str, rcpt: str, subject: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, subject
    m["Date"], m["Message-ID"] = formatdate(), make_msgid(domain="inbox.test")
    m.set_content("hello from the mailops lab provider test\n")
    return m.as_bytes().replace(b"\n", b"\r\n")


@pytest.mark.lab
def test_receiver_bounces_later_complains_and_reports(lab, lab_cfg):
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailops.lab import core, dns as labdns
    from tests.helpers import mailops

    started = time.time() - 2
    tag = uuid.uuid4().hex[:8]
    dcfg = core.dns_config(lab_cfg)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    selector = f"t{tag}"
    rua, tls_rua, sender = f"dmarc-{tag}@inbox.test", f"tlsrpt-{tag}@inbox.test", f"sender-{tag}@inbox.test"
    records = [(f"{selector}._domainkey", "TXT", f"v=DKIM1; k=rsa; p={pub}", 60),
               ("_dmarc", "TXT", f"v=DMARC1; p=none; rua=mailto:{rua}", 60),
               ("_smtp._tls", "TXT", f"v=TLSRPTv1; rua=mailto:{tls_rua}", 60)]
    root = core.machine_root(lab_cfg, "mx")
    labdns.update(dcfg, "inbox.test.", replace=records)
    try:
        later, complain = f"later-{tag}@inbox.test", f"complain-{tag}@inbox.test"
        plain, spoof = f"plain-{tag}@inbox.test", f"spoof-{tag}@inbox.test"
        replies = {}
        with smtplib.SMTP(lab_cfg.receiver.ipv4, 25, local_hostname="gw.lab.test", timeout=30) as smtp:
            smtp.ehlo()
            for rcpt, signed in ((later, True), (complain, True), (plain, True), (spoof, False)):
                raw = _message(f"Sender <{sender}>", rcpt, f"provider {tag} {rcpt}")
                if signed:
                    raw = dkim.sign(raw, selector.encode(), b"inbox.test", pem,
                                    include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"]) + raw
                assert smtp.mail(sender)[0] == 250
                assert smtp.rcpt(rcpt)[0] == 250
                replies[rcpt] = smtp.data(raw)
        # accepted at SMTP time, every one of them: the bounce comes later
        assert all(code == 250 for code, _ in replies.values()), replies

        # 1. the DSN, from the receiver's bounce daemon to the envelope sender
        dsns = _wait(root, lambda m: m.recipient == sender and m.message.get_content_type() == "multipart/report")
        assert dsns, f"no DSN for {later} arrived at {sender}"
        event = classify(_raw(dsns[0].path), sender, "")
        assert event.kind == BOUNCE, event.reason
        bounce = event.bounces[0]
        assert (bounce.status, bounce.severity, bounce.recipient, bounce.action) == ("5.2.2", HARD, later, "failed")
        assert bounce.reporting_mta == "mx.inbox.test"
        log = "\n".join(pr.receiver_log(lab_cfg, started))
        assert f"to=<{later}>, relay=none" in log and "dsn=5.2.2, status=bounced" in log

        # 2. the complaint: the message is delivered, and an ARF report goes to abuse@ of its DKIM d=
        assert _wait(root, lambda m: m.recipient == complain), "the complained-about message was not delivered"
        arfs = _wait(root, lambda m: m.recipient == "abuse@inbox.test" and f"<{complain}>".encode()
                     in _raw(m.path))
        assert arfs, f"no feedback report for {complain} arrived at abuse@inbox.test"
        event = classify(_raw(arfs[0].path), "abuse@inbox.test", feedback_loop.REPORT_FROM)
        assert event.kind == COMPLAINT, event.reason
        complaint = event.complaints[0]
        assert (complaint.feedback_type, complaint.recipient, complaint.original_mail_from, complaint.source_ip,
                complaint.reported_domain) == ("abuse", complain, sender, lab_cfg.gateway_ipv4, "inbox.test")
        # submitted by the pipe script (user nobody) to the receiver's own Postfix
        assert b"by mx.inbox.test (Postfix, from userid 65534)" in _raw(arfs[0].path)

        # 3. the reports, through the CLI
        out = mailops("lab", "reports", "--since", datetime.fromtimestamp(started, timezone.utc).isoformat(),
                      "--domain", "inbox.test", "--json")
        sent = json.loads(out.stdout)
        assert [r["domain"] for r in sent["dmarc"]] == ["inbox.test"] and sent["dmarc"][0]["to"] == [rua]
        assert [r["domain"] for r in sent["tls"]] == ["inbox.test"] and sent["tls"][0]["to"] == [tls_rua]

        dmarc_mail = _wait(root, lambda m: m.recipient == rua)
        assert dmarc_mail, f"no DMARC report arrived at {rua}"
        event = classify(_raw(dmarc_mail[0].path), rua, dr.DMARC_FROM)
        assert event.kind == DMARC, event.reason
        report = event.dmarc[0]
        assert report.domain == "inbox.test" and report.policy["p"] == "none"
        rows = sorted((r.source_ip, r.count, r.dkim, r.spf, r.header_from,
                       tuple((d["domain"], d["selector"], d["result"]) for d in r.dkim_results),
                       tuple((s["domain"], s["result"]) for s in r.spf_results)) for r in report.rows)
        gw = lab_cfg.gateway_ipv4
        # three signed messages pass DKIM (aligned: DMARC passes on it), one unsigned fails;
        # SPF fails for all four: inbox.test publishes "v=spf1 -all"
        assert rows == [(gw, 1, "fail", "fail", "inbox.test", (), (("inbox.test", "fail"),)),
                        (gw, 3, "pass", "fail", "inbox.test", (("inbox.test", selector, "pass"),),
                         (("inbox.test", "fail"),))], rows

        tls_mail = _wait(root, lambda m: m.recipient == tls_rua)
        assert tls_mail, f"no TLS report arrived at {tls_rua}"
        event = classify(_raw(tls_mail[0].path), tls_rua, tr.TLSRPT_FROM)
        assert event.kind == TLSRPT, event.reason
        policy = event.tls[0].policies[0]
        # every message of this test was delivered locally: no outbound session to inbox.test's MX
        assert (policy.policy_type, policy.policy_domain, policy.successful_sessions, policy.failed_sessions) == \
            ("no-policy-found", "inbox.test", 0, 0)
    finally:
        labdns.update(dcfg, "inbox.test.", delete=[(name, rtype) for name, rtype, _v, _t in records])
        for m in receiver.read_mailbox(root):
            if tag in str(m.message.get("Subject", "")) or tag in m.recipient or \
                    m.recipient == "abuse@inbox.test" and tag.encode() in _raw(m.path):
                Path(m.path).unlink(missing_ok=True)


@pytest.mark.lab
def test_rua_outside_the_domain_needs_its_authorisation(lab, lab_cfg):
    """RFC 7489 7.1: reports for inbox.test go to an address in lab.test only if lab.test says so."""
    from mailops.lab import core, dns as labdns

    dcfg = core.dns_config(lab_cfg)
    resolver = pr.Resolver(lab_cfg.gateway_ipv4, dcfg.port)
    own, other = "dmarc-own@inbox.test", "dmarc@lab.test"
    labdns.update(dcfg, "inbox.test.", replace=[("_dmarc", "TXT", f"v=DMARC1; p=none; rua=mailto:{own},"
                                                 f"mailto:{other}!10m", 60)])
    try:
        policy, use, refused = pr.dmarc_destinations(resolver, "inbox.test")
        assert policy["p"] == "none" and use == [own]
        assert refused == [f"{other}: lab.test does not authorise reports for inbox.test "
                           "(inbox.test._report._dmarc.lab.test has no v=DMARC1 record)"]
        labdns.update(dcfg, "lab.test.", replace=[("inbox.test._report._dmarc", "TXT", "v=DMARC1", 60)])
        assert pr.dmarc_destinations(resolver, "inbox.test")[1:] == ([own, other], [])
    finally:
        labdns.update(dcfg, "inbox.test.", delete=[("_dmarc", "TXT")])
        labdns.update(dcfg, "lab.test.", delete=[("inbox.test._report._dmarc", "TXT")])
    assert pr.dmarc_destinations(resolver, "inbox.test") == (None, [], [])

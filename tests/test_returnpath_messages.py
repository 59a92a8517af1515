"""Bounces (RFC 3464 DSNs and plain-text ones), complaints (RFC 5965 ARF) and what is
forwarded or kept unparsed, classified by mailops.returnpath.classify.

The messages are built here with the email package, in the shapes the RFCs allow and
real receivers send.  The builders are imported by the other test_returnpath_* files."""

from __future__ import annotations

import base64
import email
import email.charset
import email.parser
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText

import pytest

from mailops.returnpath import address, classify
from mailops.returnpath import classifier as classify_module
from mailops.returnpath.events import BOUNCE, COMPLAINT, FORWARD, HARD, SOFT, UNPARSED, UNRECOGNISED

KEY = b"k" * 32
RETURN_PATH = "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test"   # well-formed, not issued with KEY


def original_message(*, to="bob@example.org", sender="alice@shop.test", queue_id="4QWxYz1abc",
                     message_id="<m1@shop.test>", body="Hello Bob\n") -> MIMEText:
    msg = MIMEText(body)
    msg["Received"] = ("from mx.example.org by mx.example.org (Exim) with esmtps id 1rAbCd-000123")
    msg["Received"] = (f"from app.shop.test (app.shop.test [192.0.2.10])\n\tby mta1.shop.test (Postfix) "
                       f"with ESMTPSA id {queue_id}\n\tfor <{to}>; Thu, 3 Dec 2026 17:00:00 +0000")
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Offer"
    msg["Message-ID"] = message_id
    return msg


def status_part(per_message: str, *recipients: str) -> MIMEBase:
    """message/delivery-status: the per-message block, then one block per recipient."""
    parser = email.parser.HeaderParser()
    part = MIMEBase("message", "delivery-status")
    part.set_payload([parser.parsestr(block.strip("\n") + "\n") for block in (per_message, *recipients)])
    return part


def report(report_type: str, human: str, machine, returned=None, *, human_encoding: str | None = None,
           subject="Undelivered Mail Returned to Sender", sender="MAILER-DAEMON@mx.example.org") -> bytes:
    msg = MIMEMultipart("report", report_type=report_type)
    msg["From"] = sender
    msg["To"] = RETURN_PATH
    msg["Subject"] = subject
    if human_encoding == "base64":
        msg.attach(MIMEText(human, "plain", "utf-8"))                     # utf-8 -> base64
    elif human_encoding == "quoted-printable":
        charset = email.charset.Charset("utf-8")
        charset.body_encoding = email.charset.QP
        text = MIMENonMultipart("text", "plain")
        text.set_payload(human + "Zustellung fehlgeschlagen, désolé\n", charset)
        msg.attach(text)
    else:
        msg.attach(MIMEText(human))
    msg.attach(machine)
    if returned is not None:
        msg.attach(returned)
    return msg.as_bytes()


def returned_whole(original=None) -> MIMEMessage:
    return MIMEMessage(original or original_message())


def returned_headers(original=None) -> MIMEText:
    original = original or original_message()
    text = "".join(f"{name}: {value}\n" for name, value in original.items())
    return MIMEText(text, "rfc822-headers")


PER_MESSAGE = """Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 9F00AB1234
X-Postfix-Sender: rfc822; b-token@bounces.shop.test
Arrival-Date: Thu,  3 Dec 2026 17:00:01 +0000"""

FAILED_BOB = """Final-Recipient: rfc822; bob@example.org
Original-Recipient: rfc822;bob@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected:
    User unknown in virtual alias table"""


def dsn(*recipients: str, returned=None, per_message: str = PER_MESSAGE, **kwargs) -> bytes:
    return report("delivery-status", "This is the mail system at host mx.example.org.\n",
                  status_part(per_message, *(recipients or (FAILED_BOB,))), returned, **kwargs)


# -- RFC 3464 DSNs ----------------------------------------------------------------------------

def test_dsn_with_returned_message_is_a_hard_bounce_with_every_field():
    event = classify(dsn(returned=returned_whole()), RETURN_PATH, "")
    assert event.kind == BOUNCE
    (bounce,) = event.bounces
    assert bounce.severity == HARD
    assert bounce.action == "failed"
    assert bounce.status == "5.1.1"
    assert bounce.category == "bad-mailbox"           # the delivery log's vocabulary
    assert bounce.recipient == "bob@example.org"
    assert bounce.recipient_source == "original-recipient"
    assert bounce.final_recipient == "bob@example.org"
    assert bounce.remote_mta == "mx.example.org"
    assert bounce.reporting_mta == "mx.example.org"
    assert bounce.diagnostic == ("550 5.1.1 <bob@example.org>: Recipient address rejected: "
                                 "User unknown in virtual alias table")     # folded header unfolded
    assert bounce.message_id == "<m1@shop.test>"
    assert bounce.queue_id == "4QWxYz1abc"             # our submission's queue ID, not Exim's
    assert bounce.reporter_queue_id == "9F00AB1234"
    assert bounce.sending_domain == "shop.test"
    assert bounce.standard is True
    assert len(event.digest) == 64


def test_dsn_with_only_the_returned_headers():
    event = classify(dsn(returned=returned_headers(original_message(queue_id="5ZZzz9XyW", message_id="<h@shop.test>"))),
                     RETURN_PATH, "")
    (bounce,) = event.bounces
    assert (bounce.message_id, bounce.queue_id, bounce.sending_domain) == ("<h@shop.test>", "5ZZzz9XyW", "shop.test")


def test_dsn_without_returned_message_takes_the_domain_from_the_return_path():
    event = classify(dsn(), "b-x@bounces.news.test", "")
    (bounce,) = event.bounces
    assert bounce.message_id is None and bounce.queue_id is None
    assert bounce.sending_domain == "news.test"


def test_several_recipients_with_mixed_actions_only_failures_and_delays_are_bounces():
    recipients = [
        FAILED_BOB,
        "Final-Recipient: rfc822; full@example.org\nAction: failed\nStatus: 4.2.2\n"
        "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full",
        "Final-Recipient: rfc822; slow@example.org\nAction: delayed\nStatus: 4.4.7\nWill-Retry-Until: "
        "Fri, 4 Dec 2026 17:00:00 +0000",
        "Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0",
        "Final-Recipient: rfc822; fwd@example.org\nAction: relayed\nStatus: 2.0.0",
        "Final-Recipient: rfc822; list@example.org\nAction: expanded\nStatus: 2.0.0",
        "Final-Recipient: rfc822; spam@example.org\nAction: failed\nStatus: 5.7.1\n"
        "Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam",
    ]
    event = classify(dsn(*recipients), RETURN_PATH, "")
    got = [(b.recipient, b.severity, b.action, b.status, b.category) for b in event.bounces]
    assert got == [("bob@example.org", HARD, "failed", "5.1.1", "bad-mailbox"),
                   ("full@example.org", SOFT, "failed", "4.2.2", None),
                   ("slow@example.org", SOFT, "delayed", "4.4.7", None),
                   ("spam@example.org", HARD, "failed", "5.7.1", "policy")]


def test_missing_optional_fields_and_case_of_field_names():
    minimal = "final-recipient: RFC822; Carol@Example.ORG\naction: FAILED\nstatus: 5.2.2"
    event = classify(dsn(minimal, per_message="Reporting-MTA: dns; mx.example.org"), RETURN_PATH, "")
    (bounce,) = event.bounces
    assert (bounce.recipient, bounce.recipient_source) == ("Carol@example.org", "final-recipient")
    assert (bounce.severity, bounce.category, bounce.diagnostic, bounce.remote_mta) == (HARD, "mailbox-full", None, None)
    assert bounce.reporter_queue_id is None


def test_original_recipient_is_preferred_over_the_final_one():
    block = ("Original-Recipient: rfc822; sales@shop-customer.example\nFinal-Recipient: rfc822; "
             "mary@mail.shop-customer.example\nAction: failed\nStatus: 5.1.1")
    (bounce,) = classify(dsn(block), RETURN_PATH, "").bounces
    assert bounce.recipient == "sales@shop-customer.example"
    assert bounce.final_recipient == "mary@mail.shop-customer.example"


def test_status_with_comment_and_failed_without_status_is_unrecognised():
    blocks = ["Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1 (bad destination mailbox address)",
              "Final-Recipient: rfc822; b@example.org\nAction: failed"]
    event = classify(dsn(*blocks), RETURN_PATH, "")
    assert [(b.status, b.severity) for b in event.bounces] == [("5.1.1", HARD), (None, UNRECOGNISED)]


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_encoded_human_part(encoding):
    raw = dsn(returned=returned_whole(), human_encoding=encoding)
    assert f"Content-Transfer-Encoding: {encoding}".encode() in raw
    (bounce,) = classify(raw, RETURN_PATH, "").bounces
    assert bounce.status == "5.1.1"


def test_8bit_returned_message():
    original = email.message_from_bytes(
        b"From: alice@shop.test\nTo: bob@example.org\nMessage-ID: <m8@shop.test>\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9fe, Bob\n")
    raw = dsn(returned=MIMEMessage(original))
    assert "Grüße".encode() in raw                                   # really 8bit on the wire
    (bounce,) = classify(raw, RETURN_PATH, "").bounces
    assert (bounce.message_id, bounce.sending_domain) == ("<m8@shop.test>", "shop.test")


def test_base64_encoded_delivery_status_part_is_read_anyway():
    # RFC 2046 forbids base64 on message/*; some MTAs do it: the blocks must still be found
    text = f"{PER_MESSAGE}\n\n{FAILED_BOB}\n"
    placeholder = MIMEBase("application", "x-placeholder")
    placeholder.set_payload(base64.encodebytes(text.encode()).decode())
    placeholder["Content-Transfer-Encoding"] = "base64"
    raw = report("delivery-status", "failed\n", placeholder)
    raw = raw.replace(b"application/x-placeholder", b"message/delivery-status")
    (bounce,) = classify(raw, RETURN_PATH, "").bounces
    assert (bounce.recipient, bounce.status) == ("bob@example.org", "5.1.1")


def test_real_postfix_dsn_text():
    raw = b"""Return-Path: <>
From: MAILER-DAEMON@mx.inbox.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: b-abc@bounces.shop.test
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="A1B2C3.1733245201/mx.inbox.test"
Message-Id: <20261203170001.A1B2C3@mx.inbox.test>

This is a MIME-encapsulated message.

--A1B2C3.1733245201/mx.inbox.test
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<quota@inbox.test>: mailbox is full

--A1B2C3.1733245201/mx.inbox.test
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.inbox.test
X-Postfix-Queue-ID: A1B2C3
X-Postfix-Sender: rfc822; b-abc@bounces.shop.test
Arrival-Date: Thu,  3 Dec 2026 17:00:00 +0000 (UTC)

Final-Recipient: rfc822; quota@inbox.test
Original-Recipient: rfc822;quota@inbox.test
Action: failed
Status: 5.2.2
Diagnostic-Code: X-Postfix; mailbox is full

--A1B2C3.1733245201/mx.inbox.test
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Received: from mta1.shop.test (mta1.shop.test [10.77.0.11])
\tby mx.inbox.test (Postfix) with ESMTPS id A1B2C3
\tfor <quota@inbox.test>; Thu,  3 Dec 2026 17:00:00 +0000 (UTC)
Received: from [10.77.0.1] by mta1.shop.test (Postfix) with ESMTPSA id 7DEF0123
\tfor <quota@inbox.test>; Thu,  3 Dec 2026 16:59:59 +0000 (UTC)
From: alice@shop.test
Message-ID: <offer-1@shop.test>

--A1B2C3.1733245201/mx.inbox.test--
"""
    event = classify(raw, "b-abc@bounces.shop.test", "")
    (bounce,) = event.bounces
    assert (bounce.recipient, bounce.severity, bounce.category) == ("quota@inbox.test", HARD, "mailbox-full")
    assert bounce.diagnostic == "mailbox is full"
    assert (bounce.queue_id, bounce.reporter_queue_id) == ("7DEF0123", "A1B2C3")
    assert bounce.message_id == "<offer-1@shop.test>"


def test_dsn_with_only_delivered_recipients_is_forwarded_not_a_bounce():
    event = classify(dsn("Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0"), RETURN_PATH, "")
    assert event.kind == FORWARD and event.bounces == []
    assert "without failures" in event.reason


def _issued_token(recipients=("bob@example.org",)):
    token = address.encode(KEY, "shop.test")
    table = address.TokenTable()
    table.issued(token, sender="alice@shop.test", recipients=recipients, queue_id="8ABC12345",
                 message_id="<t@shop.test>")
    return token, table


def test_dsn_without_status_part_is_unparsed_without_a_token_and_traced_with_one():
    broken = report("delivery-status", "Your message failed.\n", MIMEText("no machine part here"))
    assert classify(broken, RETURN_PATH, "").kind == UNPARSED
    token, table = _issued_token()
    event = classify(broken, token.address, "", keys=KEY, tokens=table)
    assert event.kind == BOUNCE
    (bounce,) = event.bounces
    assert (bounce.recipient, bounce.recipient_source, bounce.severity) == ("bob@example.org", "token", UNRECOGNISED)
    assert (bounce.queue_id, bounce.message_id, bounce.sending_domain) == ("8ABC12345", "<t@shop.test>", "shop.test")
    assert event.return_path_token == token.token_id


def test_recipient_block_without_recipient_falls_back_to_token_then_received():
    block = "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 no such user"
    token, table = _issued_token()
    (bounce,) = classify(dsn(block), token.address, "", keys=KEY, tokens=table).bounces
    assert (bounce.recipient, bounce.recipient_source) == ("bob@example.org", "token")
    # a token for a message with two recipients cannot name one: the returned Received can
    token2, table2 = _issued_token(("bob@example.org", "eve@example.org"))
    (bounce,) = classify(dsn(block, returned=returned_headers(original_message(to="eve@example.org"))),
                         token2.address, "", keys=KEY, tokens=table2).bounces
    assert (bounce.recipient, bounce.recipient_source) == ("eve@example.org", "received")


def test_a_forged_token_is_not_trusted():
    token, table = _issued_token()
    forged = address.encode(b"z" * 32, "shop.test")
    broken = report("delivery-status", "failed\n", MIMEText("nothing"))
    event = classify(broken, forged.address, "", keys=KEY, tokens=table)
    assert event.kind == UNPARSED and event.return_path_token is None


# -- plain-text bounces -------------------------------------------------------------------------

def text_bounce(body: str, *, subject="Undelivered Mail Returned to Sender",
                sender="MAILER-DAEMON@mx.example.org", attach_original=False) -> bytes:
    if attach_original:
        msg = MIMEMultipart("mixed")
        msg.attach(MIMEText(body))
        msg.attach(returned_whole())
    else:
        msg = MIMEText(body)
    msg["From"] = sender
    msg["Subject"] = subject
    return msg.as_bytes()


def test_plain_text_postfix_bounce_without_report_part():
    body = ("This is the mail system at host mx.example.org.\n\n"
            "<bob@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1\n"
            "    <bob@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)\n\n"
            "<full@example.org>: host mx.example.org[192.0.2.1] said: 452 4.2.2 Mailbox full\n")
    event = classify(text_bounce(body, attach_original=True), RETURN_PATH, "")
    assert event.kind == BOUNCE
    got = [(b.recipient, b.status, b.severity, b.standard) for b in event.bounces]
    assert got == [("bob@example.org", "5.1.1", HARD, False), ("full@example.org", "4.2.2", SOFT, False)]
    assert event.bounces[0].message_id == "<m1@shop.test>"
    assert event.bounces[0].sending_domain == "shop.test"


def test_plain_text_bounce_without_code_is_unrecognised():
    event = classify(text_bounce("Sorry, we could not deliver your message.\n", subject="failure notice"),
                     RETURN_PATH, "")
    (bounce,) = event.bounces
    assert (bounce.severity, bounce.status, bounce.recipient) == (UNRECOGNISED, None, None)


def test_exim_soft_bounce_from_the_null_sender():
    body = "  slow@example.org\n    host mx.example.org: 451 4.4.1 try again later\n"
    event = classify(text_bounce(body, subject="Mail delivery failed: returning message to sender",
                                 sender="Mail Delivery System <mailer-daemon@example.org>"), RETURN_PATH, "")
    assert [(b.status, b.severity) for b in event.bounces] == [("4.4.1", SOFT)]


def test_a_person_writing_about_a_delivery_failure_is_not_a_bounce():
    raw = text_bounce("My order says 5.1.1 delivery failure, please help", subject="Delivery failure on my order",
                      sender="Customer <cust@example.org>")
    event = classify(raw, "postmaster@shop.test", "cust@example.org")
    assert event.kind == FORWARD
    assert event.reason == "mail for postmaster@: an operator reads it"


# -- RFC 5965 ARF complaints --------------------------------------------------------------------

FEEDBACK = """Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <b-token@bounces.shop.test>
Original-Rcpt-To: <bob@example.org>
Received-Date: Thu, 3 Dec 2026 17:00:00 +0100
Source-IP: 192.0.2.11
Reported-Domain: shop.test"""


def feedback_part(text: str) -> MIMEBase:
    part = MIMEBase("message", "feedback-report")
    part.set_payload([email.parser.HeaderParser().parsestr(text.strip() + "\n")])
    return part


def arf(text: str = FEEDBACK, returned="whole", original=None) -> bytes:
    original = original or original_message()
    part = returned_whole(original) if returned == "whole" else \
        returned_headers(original) if returned == "headers" else None
    return report("feedback-report", "This is an email abuse report\n", feedback_part(text), part,
                  subject="FW: Offer", sender="feedback@fbl.example.org")


def test_arf_complaint_with_every_field():
    event = classify(arf(), "abuse@shop.test", "feedback@fbl.example.org")
    assert event.kind == COMPLAINT
    (complaint,) = event.complaints
    assert (complaint.feedback_type, complaint.user_agent, complaint.version) == ("abuse", "SomeGenerator/1.0", "1")
    assert (complaint.recipient, complaint.recipient_source) == ("bob@example.org", "original-rcpt-to")
    assert complaint.original_mail_from == "b-token@bounces.shop.test"
    assert complaint.source_ip == "192.0.2.11"
    assert complaint.arrival_date == "2026-12-03T16:00:00Z"
    assert complaint.reported_domain == "shop.test"
    assert complaint.sending_domain == "shop.test"
    assert (complaint.message_id, complaint.queue_id) == ("<m1@shop.test>", "4QWxYz1abc")


def test_arf_with_headers_only_uses_the_returned_to():
    text = "Feedback-Type: FRAUD\nUser-Agent: x/2\nVersion: 1"
    (complaint,) = classify(arf(text, "headers"), "abuse@shop.test", "").complaints
    assert (complaint.feedback_type, complaint.recipient, complaint.recipient_source) == \
        ("fraud", "bob@example.org", "returned-to")
    assert complaint.source_ip is None and complaint.arrival_date is None


def test_arf_with_redacted_recipient_is_traced_through_the_token():
    token, table = _issued_token(("carol@example.org",))
    text = "Feedback-Type: abuse\nUser-Agent: x/2\nVersion: 1"
    raw = arf(text, "headers", original_message(to="xxxxxxxx@example.org"))
    (complaint,) = classify(raw, token.address, "", keys=KEY, tokens=table).complaints
    assert (complaint.recipient, complaint.recipient_source) == ("carol@example.org", "token")
    assert complaint.queue_id == "4QWxYz1abc"


def test_arf_sent_to_abuse_is_traced_through_the_token_it_quotes():
    token, table = _issued_token(("dave@example.org",))
    text = f"Feedback-Type: abuse\nUser-Agent: x/2\nVersion: 1\nOriginal-Mail-From: <{token.address}>"
    raw = arf(text, "headers", original_message(to="redacted@example.org"))
    event = classify(raw, "abuse@shop.test", "fbl@example.org", keys=KEY, tokens=table)
    (complaint,) = event.complaints
    assert (complaint.recipient, complaint.recipient_source) == ("dave@example.org", "token")
    assert event.return_path_token == token.token_id
    # the same through the returned message's Return-Path
    original = original_message(to="redacted@example.org")
    original["Return-Path"] = f"<{token.address}>"
    (complaint,) = classify(arf("Feedback-Type: abuse\nUser-Agent: x/2\nVersion: 1", "whole", original),
                            "abuse@shop.test", "", keys=KEY, tokens=table).complaints
    assert complaint.recipient == "dave@example.org"


def test_dsn_sent_elsewhere_is_traced_through_the_returned_return_path():
    token, table = _issued_token()
    original = original_message()
    original["Return-Path"] = f"<{token.address}>"
    event = classify(dsn("Action: failed\nStatus: 5.1.1", returned=returned_headers(original)),
                     "postmaster@shop.test", "", keys=KEY, tokens=table)
    (bounce,) = event.bounces
    assert (bounce.recipient, bounce.recipient_source) == ("bob@example.org", "token")


def test_arf_without_returned_message():
    (complaint,) = classify(arf(returned=None), "abuse@shop.test", "").complaints
    assert complaint.recipient == "bob@example.org" and complaint.message_id is None
    assert complaint.sending_domain == "shop.test"          # from Reported-Domain


def test_arf_without_feedback_type_is_unparsed():
    event = classify(arf("User-Agent: x/2\nVersion: 1"), "abuse@shop.test", "")
    assert event.kind == UNPARSED and "Feedback-Type" in event.reason


# -- forward and unparsed -----------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"   "])
def test_empty_message_is_unparsed(raw):
    event = classify(raw, RETURN_PATH, "")
    assert (event.kind, event.reason) == (UNPARSED, "empty message")


def test_no_headers_is_unparsed():
    assert classify(b"\x00\xff garbage without any header\n", RETURN_PATH, "").kind == UNPARSED


def test_not_bytes_is_unparsed():
    event = classify("text, not bytes", RETURN_PATH, "")      # type: ignore[arg-type]
    assert event.kind == UNPARSED and "not bytes" in event.reason


def test_auto_reply_and_unknown_report_and_ordinary_mail_are_forwarded():
    auto = MIMEText("I am away")
    auto["Subject"] = "Out of Office: Offer"
    auto["Auto-Submitted"] = "auto-replied"
    assert classify(auto.as_bytes(), RETURN_PATH, "bob@example.org").reason == "auto-reply"
    other = report("disposition-notification", "read\n", MIMEText("x"), subject="Read: Offer",
                   sender="bob@example.org")
    event = classify(other, RETURN_PATH, "bob@example.org")
    assert event.kind == FORWARD and "disposition-notification" in event.reason
    plain = MIMEText("hi")
    plain["Subject"] = "hello"
    assert classify(plain.as_bytes(), "dmarc@shop.test", "x@example.org").reason == "not a bounce, complaint or report"


def test_oversized_message_is_unparsed(monkeypatch):
    monkeypatch.setattr(classify_module, "MAX_MESSAGE_BYTES", 1000)
    event = classify(dsn(returned=returned_whole(original_message(body="x" * 2000))), RETURN_PATH, "")
    assert event.kind == UNPARSED and "limit" in event.reason


def test_an_internal_error_becomes_unparsed_not_an_exception(monkeypatch):
    def broken(*_args):
        raise KeyError("boom")
    monkeypatch.setattr(classify_module, "parse_dsn", broken)
    event = classify(dsn(), RETURN_PATH, "")
    assert event.kind == UNPARSED and "KeyError" in event.reason and event.bounces == []


# -- hostile shapes: bounded time, an event, no exception ----------------------------------------

def test_many_encoded_words_in_a_header_are_decoded_only_as_far_as_kept():
    import time
    raw = b"Subject: " + b"=?utf-8?b?YWJj?= " * 50_000 + b"\n\nbody\n"
    started = time.monotonic()
    event = classify(raw, RETURN_PATH, "")
    assert time.monotonic() - started < 5                      # was minutes: decoding is quadratic
    assert event.kind == FORWARD and event.subject.startswith("abc")


def test_deeply_nested_mime_is_unparsed_with_the_reason():
    raw = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(3000)) + b"x\n"
    event = classify(raw, RETURN_PATH, "")
    assert (event.kind, event.reason) == (UNPARSED, "MIME parts nested too deeply to read")

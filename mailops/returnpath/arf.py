"""Complaints: RFC 5965 Abuse Reporting Format (feedback loops).

``multipart/report; report-type=feedback-report``: a human part, a
``message/feedback-report`` part (Feedback-Type, User-Agent, Version required; optional
Original-Mail-From, Original-Rcpt-To, Arrival-Date, Source-IP, Reported-Domain...), and the
original message or its headers, often with the recipient redacted - hence the fallbacks
(the returned To, then the return-path token the classifier resolves)."""

from __future__ import annotations

import email.parser
import email.policy
from email.message import Message

from mailops.returnpath import mime
from mailops.returnpath.events import Complaint


class ArfError(ValueError):
    """A feedback report that cannot be read."""


def is_arf(msg: Message) -> bool:
    return mime.content_type(msg) == "multipart/report" and mime.param(msg, "report-type") == "feedback-report"


def _report_fields(report: Message) -> Message:
    parts = report.get_payload()
    if not isinstance(parts, list):
        raise ArfError("multipart/report feedback-report without parts")
    for part in parts:
        if isinstance(part, Message) and mime.content_type(part) in ("message/feedback-report",):
            inner = part.get_payload()
            encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message) and \
                    encoding not in ("base64", "quoted-printable"):
                return inner[0]
            text = mime.payload_bytes(part).replace(b"\r\n", b"\n").decode("utf-8", "replace")
            return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.strip("\n") + "\n")
    raise ArfError("multipart/report feedback-report without a message/feedback-report part")


def _redacted(address: str | None) -> bool:
    """Receivers redact the recipient (``xxxxx@example.org``, ``redacted@...``)."""
    if not address:
        return True
    local = address.rpartition("@")[0].lower()
    return local in ("redacted", "removed", "unknown") or set(local) <= set("x*#.")


def parse_arf(report: Message, original: Message | None) -> Complaint:
    fields = _report_fields(report)
    feedback_type = (mime.header(fields, "feedback-type") or "").lower() or None
    if feedback_type is None:
        raise ArfError("the feedback report has no Feedback-Type")
    rcpt_to = mime.address_of(mime.header(fields, "original-rcpt-to"))
    returned_to = mime.address_of(mime.header(original, "to"))
    if rcpt_to and not _redacted(rcpt_to):
        recipient, source = rcpt_to, "original-rcpt-to"
    elif returned_to and not _redacted(returned_to):
        recipient, source = returned_to, "returned-to"
    else:
        recipient, source = None, None
    from_domain = mime.domain_part(mime.address_of(mime.header(original, "from")))
    return Complaint(
        feedback_type=feedback_type, recipient=recipient, recipient_source=source,
        user_agent=mime.header(fields, "user-agent"), version=mime.header(fields, "version"),
        original_rcpt_to=rcpt_to,
        original_mail_from=mime.address_of(mime.header(fields, "original-mail-from")),
        source_ip=mime.header(fields, "source-ip"),
        arrival_date=mime.iso_date(mime.header(fields, "arrival-date") or mime.header(fields, "received-date")),
        reported_domain=(mime.header(fields, "reported-domain") or "").lower() or None,
        sending_domain=from_domain, message_id=mime.header(original, "message-id"),
        queue_id=mime.originating_queue_id(original))

"""Bounces: RFC 3464 delivery status notifications and the common plain-text kind.

A DSN is ``multipart/report; report-type=delivery-status``: a human part, a
``message/delivery-status`` part (per-message fields, a blank line, then one block of
fields per recipient), and optionally the returned message (message/rfc822) or its
headers (text/rfc822-headers).  Only ``Action: failed`` (hard or soft by the status class)
and ``Action: delayed`` (soft) are bounces; delivered, relayed and expanded are not.

The hard/soft split and the category (bad-mailbox, bad-domain, mailbox-full, policy, ...)
are the delivery log's (mailops.ops.postfixlines.classify_dsn), so an asynchronous bounce
and a synchronous one of the same status suppress alike."""

from __future__ import annotations

import email.parser
import email.policy
import re
from email.message import Message

from mailops.ops.postfixlines import classify_dsn
from mailops.returnpath import mime
from mailops.returnpath.events import HARD, SOFT, UNRECOGNISED, Bounce

BOUNCE_ACTIONS = ("failed", "delayed")
NOT_BOUNCES = ("delivered", "relayed", "expanded")
MAX_RECIPIENT_BLOCKS = 1000
MAX_TEXT_SCAN = 200_000          # characters of a plain-text bounce searched for a status

_STATUS_RE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_TEXT_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Postfix and Sendmail start each failed recipient's paragraph at column 0: "<a@x>: reason"
_TEXT_RECIPIENT_RE = re.compile(r"^<([^<>\s@]+@[^<>\s@]+)>\s*(?::|\(|$)", re.MULTILINE)
# Subjects of bounces from MTAs that send no report part; matched at the start, case-insensitive
_BOUNCE_SUBJECTS = (
    "undelivered mail returned to sender",       # Postfix
    "mail delivery failed",                      # Exim
    "delivery status notification (failure)",    # Gmail, Exchange
    "delivery status notification (delay)",
    "undeliverable:", "undelivered mail", "undeliverable mail",
    "returned mail:",                            # Sendmail
    "failure notice",                            # qmail
    "delivery failure", "mail system error", "nondeliverable mail",
    "delayed mail", "warning: could not send message",
)
_DAEMON_LOCALS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")


class DsnError(ValueError):
    """A delivery-status report that cannot be read."""


def is_dsn(msg: Message) -> bool:
    return mime.content_type(msg) == "multipart/report" and mime.param(msg, "report-type") == "delivery-status"


def _status_part(report: Message) -> Message | None:
    parts = report.get_payload()
    if not isinstance(parts, list):
        return None
    for part in parts:
        if isinstance(part, Message) and mime.content_type(part) in ("message/delivery-status",
                                                                     "message/global-delivery-status"):
            return part
    return None


def _field_blocks(status_part: Message) -> list[Message]:
    """Per-message block first, then one per recipient."""
    payload = status_part.get_payload()
    if isinstance(payload, list) and payload and all(isinstance(b, Message) for b in payload) \
            and not str(status_part.get("content-transfer-encoding", "")).strip().lower() in ("base64",
                                                                                         "quoted-printable"):
        return payload[:MAX_RECIPIENT_BLOCKS + 1]
    # a base64/QP-encoded status part (not allowed for message/*, sent anyway): decode, split, parse
    text = mime.payload_bytes(status_part).replace(b"\r\n", b"\n").decode("utf-8", "replace")
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    blocks = [b for b in re.split(r"\n[ \t]*\n", text) if b.strip()]
    return [parser.parsestr(b.strip("\n") + "\n") for b in blocks[:MAX_RECIPIENT_BLOCKS + 1]]


def severity(status: str | None, action: str | None) -> str:
    if action == "delayed":
        return SOFT
    if status:
        if status.startswith("5."):
            return HARD
        if status.startswith("4."):
            return SOFT
    return UNRECOGNISED


def _status(value: str | None) -> str | None:
    if not value:
        return None
    match = _STATUS_RE.match(value)
    return ".".join(match.groups()) if match else None


def _category(status: str | None) -> str | None:
    return classify_dsn(status) if status and status.startswith("5.") else None


def parse_dsn(report: Message, original: Message | None) -> list[Bounce]:
    """The bounces of one RFC 3464 report.  Raises DsnError when there is no status part."""
    part = _status_part(report)
    if part is None:
        raise DsnError("multipart/report delivery-status without a message/delivery-status part")
    blocks = _field_blocks(part)
    if not blocks:
        raise DsnError("the message/delivery-status part is empty")
    per_message, recipients = blocks[0], blocks[1:]
    if per_message.get("final-recipient") and per_message.get("action"):
        # no per-message block at all (seen): the first block is a recipient's
        per_message, recipients = Message(), blocks
    reporting_mta = mime.strip_type(mime.header(per_message, "reporting-mta"))
    reporter_qid = mime.header(per_message, "x-postfix-queue-id")
    message_id = mime.header(original, "message-id")
    queue_id = mime.originating_queue_id(original)
    bounces = []
    for block in recipients:
        action = (mime.header(block, "action") or "").lower().split(" ")[0] or None
        if action in NOT_BOUNCES:
            continue
        status = _status(mime.header(block, "status"))
        final = mime.address_of(mime.strip_type(mime.header(block, "final-recipient")))
        original_rcpt = mime.address_of(mime.strip_type(mime.header(block, "original-recipient")))
        if action not in BOUNCE_ACTIONS and status is None and final is None:
            continue                     # a block that says nothing (stray text after the blocks)
        recipient, source = (original_rcpt, "original-recipient") if original_rcpt else \
            (final, "final-recipient") if final else (None, None)
        bounces.append(Bounce(
            severity=severity(status, action), recipient=recipient, recipient_source=source,
            action=action, status=status, category=_category(status),
            diagnostic=mime.strip_type(mime.header(block, "diagnostic-code")),
            final_recipient=final, original_recipient=original_rcpt,
            remote_mta=mime.strip_type(mime.header(block, "remote-mta")),
            reporting_mta=reporting_mta, message_id=message_id, queue_id=queue_id,
            reporter_queue_id=reporter_qid))
    return bounces


def looks_like_text_bounce(msg: Message, envelope_sender: str) -> bool:
    """A bounce without a report part: from the null sender or a mailer daemon, with a
    bounce subject.  Both are required, so an ordinary mail about "delivery failure" is not one."""
    sender = (envelope_sender or "").strip().strip("<>").strip()
    from_addr = mime.address_of(mime.header(msg, "from")) or ""
    from_local = from_addr.rpartition("@")[0].lower()
    daemon = sender == "" or sender.lower().rpartition("@")[0] in _DAEMON_LOCALS or from_local in _DAEMON_LOCALS
    subject = (mime.header(msg, "subject") or "").lower()
    return daemon and subject.startswith(_BOUNCE_SUBJECTS)


def _body_text(msg: Message) -> str:
    texts = []
    for part in mime.walk(msg):
        if part.is_multipart() or mime.content_type(part) not in ("text/plain", "text/html"):
            continue
        texts.append(mime.payload_text(part))
        if sum(map(len, texts)) > MAX_TEXT_SCAN:
            break
    return "\n".join(texts)[:MAX_TEXT_SCAN]


def parse_text_bounce(msg: Message) -> list[Bounce]:
    """One bounce per recipient found in the text (``<a@x>: ...`` lines), classified by the
    status code written nearest after it; one bounce without recipient when none is named."""
    text = _body_text(msg)
    original = _embedded_original(msg)
    message_id = mime.header(original, "message-id")
    queue_id = mime.originating_queue_id(original)
    found = list(_TEXT_RECIPIENT_RE.finditer(text))
    spans = [(m.group(1), m.end(), found[i + 1].start() if i + 1 < len(found) else len(text))
             for i, m in enumerate(found)]
    if not spans:
        spans = [(None, 0, len(text))]
    bounces = []
    for recipient, start, end in spans[:MAX_RECIPIENT_BLOCKS]:
        match = _TEXT_STATUS_RE.search(text, start, end) or (_TEXT_STATUS_RE.search(text) if len(spans) == 1 else None)
        status = ".".join(match.groups()) if match else None
        address = mime.address_of(recipient)
        diagnostic = " ".join(text[start:end].split())[:mime.MAX_HEADER_CHARS] or None
        bounces.append(Bounce(severity=severity(status, None), recipient=address,
                              recipient_source="text" if address else None, status=status,
                              category=_category(status), diagnostic=diagnostic, final_recipient=address,
                              message_id=message_id, queue_id=queue_id, standard=False))
    return bounces


def _embedded_original(msg: Message) -> Message | None:
    for part in mime.walk(msg):
        if mime.content_type(part) in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
            return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(mime.payload_bytes(part))
    return None

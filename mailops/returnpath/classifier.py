"""classify(): one message received on the return path -> one Classified event.

The order: RFC 3464 DSN, RFC 5965 ARF, DMARC/TLS-RPT reports (by the bytes of the
attachments), a plain-text bounce (null sender or mailer daemon *and* a bounce subject),
then forward (auto-replies, postmaster/abuse mail, anything else).  A message that looked
like one of these and could not be read, or that could not be read at all, is
``unparsed`` with the reason: the caller keeps the raw message and counts it.

classify never raises: whatever the bytes, the answer is an event."""

from __future__ import annotations

import hashlib
from email.message import Message

from mailops.returnpath import address, mime
from mailops.returnpath.arf import ArfError, is_arf, parse_arf
from mailops.returnpath.dsn import DsnError, is_dsn, looks_like_text_bounce, parse_dsn, parse_text_bounce, severity
from mailops.returnpath.events import (BOUNCE, COMPLAINT, DMARC, FORWARD, TLSRPT, UNPARSED, Bounce, Classified)
from mailops.returnpath.reports import (ReportError, looks_like_dmarc_xml, looks_like_tlsrpt_json, parse_dmarc,
                                        parse_tlsrpt, unpack)

MAX_MESSAGE_BYTES = 50 * 1024 * 1024
TLSRPT_TYPES = ("application/tlsrpt+json", "application/tlsrpt+gzip")
REPORT_TYPES = ("application/zip", "application/gzip", "application/x-gzip", "application/x-zip-compressed",
                "application/x-zip", "application/xml", "text/xml", "application/octet-stream")
REPORT_SUFFIXES = (".xml", ".xml.gz", ".zip", ".gz", ".json", ".json.gz")
OPERATOR_LOCALS = ("postmaster", "abuse")


def digest_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def classify(raw: bytes, recipient: str = "", sender: str = "", *, keys=None, tokens=None,
             subdomain: str = address.DEFAULT_SUBDOMAIN) -> Classified:
    """Classify one received message.

    recipient: the envelope recipient it was delivered to (a return-path, report or
    postmaster address); sender: the envelope sender ("" for the null sender).
    keys: the return-path keys (mailops.returnpath.address), to trust a token in the
    recipient; tokens: a TokenTable to turn a token into the original recipient."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return Classified(UNPARSED, "", f"the message is {type(raw).__name__}, not bytes")
    raw = bytes(raw)
    recipient = recipient if isinstance(recipient, str) else ""
    sender = sender if isinstance(sender, str) else ""
    event = Classified(UNPARSED, digest_of(raw), envelope_recipient=recipient[:320], envelope_sender=sender[:320])
    try:
        _classify(raw, event, keys, tokens, subdomain)
    except RecursionError:
        event.kind, event.reason = UNPARSED, "MIME parts nested too deeply to read"
        event.bounces, event.complaints, event.dmarc, event.tls = [], [], [], []
    except Exception as exc:     # noqa: BLE001 - the contract: keep and count, never lose the message
        event.kind = UNPARSED
        event.reason = f"internal error while classifying: {exc.__class__.__name__}: {exc}"[:500]
        event.bounces, event.complaints, event.dmarc, event.tls = [], [], [], []
    return event


class _Token:
    """What a return-path address tells: the token, and through the table, the recipient.

    The first valid one of the candidates counts: the envelope recipient (a bounce to the
    return path), else what the report quotes (a complaint sent to abuse@ names our
    envelope sender in Original-Mail-From or in the returned message's Return-Path)."""

    def __init__(self, candidates, keys, tokens, subdomain: str) -> None:
        self.path = None
        self.info = None
        if keys is None:
            return
        for candidate in candidates:
            if not candidate or not address.is_return_path(candidate):
                continue
            try:
                self.path = address.decode(keys, candidate, subdomain=subdomain)
            except address.AddressError:
                continue
            break
        if self.path is not None and tokens is not None:
            self.info = tokens.lookup(self.path.token_id)

    @property
    def recipient(self) -> str | None:
        recipients = (self.info or {}).get("recipients") or []
        return recipients[0] if len(recipients) == 1 else None

    @property
    def sending_domain(self) -> str | None:
        return self.path.sending_domain if self.path else None


def _classify(raw: bytes, event: Classified, keys, tokens, subdomain: str) -> None:
    if not raw.strip():
        event.reason = "empty message"
        return
    if len(raw) > MAX_MESSAGE_BYTES:
        event.reason = f"message of {len(raw)} bytes is over the {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB limit"
        return
    msg = mime.parse_bytes(raw)
    if not msg.keys():
        event.reason = "no message headers"
        return
    event.subject = mime.header(msg, "subject")
    token = _Token([event.envelope_recipient], keys, tokens, subdomain)
    rcpt_domain = mime.domain_part(mime.address_of(event.envelope_recipient))
    default_domain = token.sending_domain or (address.sending_domain_of(rcpt_domain, subdomain) if rcpt_domain
                                              else None)

    if is_dsn(msg):
        original = mime.returned_message(msg)
        if token.path is None:
            token = _Token([mime.header(original, "return-path")], keys, tokens, subdomain)
        event.return_path_token = token.path.token_id if token.path else None
        try:
            bounces = parse_dsn(msg, original)
        except DsnError as exc:
            if token.recipient is None:
                event.reason = f"malformed DSN: {exc}"
                return
            bounces = [Bounce(severity=severity(None, None), recipient=None, standard=False,
                              diagnostic=str(exc))]
            event.reason = f"malformed DSN ({exc}); recipient from the return-path token"
        if not bounces:
            event.kind, event.reason = FORWARD, "a delivery-status report without failures (delivered/relayed)"
            return
        from_domain = mime.domain_part(mime.address_of(mime.header(original, "from")))
        received_rcpt = mime.received_for(original)
        for bounce in bounces:
            _fill_bounce(bounce, token, token.sending_domain or from_domain or default_domain, received_rcpt)
        event.kind, event.bounces = BOUNCE, bounces
        event.reason = event.reason or "RFC 3464 delivery-status report"
        return

    if is_arf(msg):
        original = mime.returned_message(msg)
        try:
            complaint = parse_arf(msg, original)
        except ArfError as exc:
            event.reason = f"malformed feedback report: {exc}"
            return
        if token.path is None:
            token = _Token([complaint.original_mail_from, mime.header(original, "return-path")], keys, tokens,
                           subdomain)
        event.return_path_token = token.path.token_id if token.path else None
        if complaint.recipient is None and token.recipient:
            complaint.recipient, complaint.recipient_source = token.recipient, "token"
        complaint.sending_domain = token.sending_domain or complaint.sending_domain or \
            complaint.reported_domain or default_domain
        if token.info:
            complaint.queue_id = complaint.queue_id or token.info.get("queue_id")
            complaint.message_id = complaint.message_id or token.info.get("message_id")
        event.kind, event.complaints, event.reason = COMPLAINT, [complaint], "RFC 5965 feedback report"
        return

    if _reports(msg, event):
        return

    if looks_like_text_bounce(msg, event.envelope_sender):
        event.return_path_token = token.path.token_id if token.path else None
        bounces = parse_text_bounce(msg)
        for bounce in bounces:
            _fill_bounce(bounce, token, default_domain, None)
        event.kind, event.bounces = BOUNCE, bounces
        event.reason = "plain-text bounce without a delivery-status part"
        return

    event.kind = FORWARD
    event.reason = _forward_reason(msg, event.envelope_recipient)


def _fill_bounce(bounce: Bounce, token: _Token, sending_domain: str | None, received_rcpt: str | None) -> None:
    if bounce.recipient is None:
        if token.recipient:
            bounce.recipient, bounce.recipient_source = token.recipient, "token"
        elif received_rcpt:
            bounce.recipient, bounce.recipient_source = received_rcpt, "received"
    bounce.sending_domain = bounce.sending_domain or sending_domain
    if token.info:
        bounce.queue_id = bounce.queue_id or token.info.get("queue_id")
        bounce.message_id = bounce.message_id or token.info.get("message_id")


def _report_parts(msg: Message):
    """(part, labelled) for each leaf part that may carry a report; labelled: its type or
    file name says it is one (a failure to read it is then an unparsed report)."""
    for part in mime.walk(msg):
        if part.is_multipart() or mime.content_type(part).startswith("message/"):
            continue
        kind = mime.content_type(part)
        name = mime.filename(part)
        labelled = kind in TLSRPT_TYPES or name.endswith(REPORT_SUFFIXES) or \
            (kind in REPORT_TYPES and kind != "application/octet-stream")
        if labelled or kind == "application/octet-stream" or part is msg:
            yield part, labelled


def _reports(msg: Message, event: Classified) -> bool:
    """Parse every report attachment; True when the event is decided (reports or unparsed)."""
    errors, dmarc, tls = [], [], []
    for part, labelled in _report_parts(msg):
        data = mime.payload_bytes(part)
        if not data.strip():
            if labelled:
                errors.append(f"{mime.filename(part) or mime.content_type(part)}: empty attachment")
            continue
        try:
            members = unpack(data, mime.filename(part))
        except ReportError as exc:
            if labelled or data[:2] == b"\x1f\x8b" or data[:2] == b"PK":
                errors.append(str(exc))
            continue
        is_tls = mime.content_type(part) in TLSRPT_TYPES or bool(msg.get("tls-report-domain"))
        for name, content in members:
            try:
                if looks_like_dmarc_xml(content):
                    dmarc.append(parse_dmarc(content))
                elif is_tls or looks_like_tlsrpt_json(content):
                    tls.append(parse_tlsrpt(content))
                elif labelled:
                    errors.append(f"{name or mime.content_type(part)}: neither a DMARC nor a TLS-RPT report")
            except ReportError as exc:
                errors.append(str(exc))
    if dmarc or tls:
        event.dmarc, event.tls = dmarc, tls
        event.kind = DMARC if dmarc else TLSRPT
        event.reason = f"{len(dmarc)} DMARC and {len(tls)} TLS-RPT report(s)"
        if errors:
            event.reason += f"; also unreadable: {'; '.join(errors)}"[:400]
        return True
    if errors:
        event.kind, event.reason = UNPARSED, "; ".join(errors)[:500]
        return True
    return False


def _forward_reason(msg: Message, envelope_recipient: str) -> str:
    auto = (mime.header(msg, "auto-submitted") or "").lower()
    subject = (mime.header(msg, "subject") or "").lower()
    if (auto and auto != "no") or msg.get("x-autoreply") or msg.get("x-autorespond") or \
            (mime.header(msg, "precedence") or "").lower() == "auto_reply" or \
            subject.startswith(("auto:", "automatic reply", "out of office", "autoreply", "auto-reply")):
        return "auto-reply"
    local = (mime.address_of(envelope_recipient) or "").rpartition("@")[0].lower()
    if local in OPERATOR_LOCALS:
        return f"mail for {local}@: an operator reads it"
    if mime.content_type(msg) == "multipart/report":
        return f"a report of type {mime.param(msg, 'report-type') or '(none)'} that mailops does not read"
    return "not a bounce, complaint or report"

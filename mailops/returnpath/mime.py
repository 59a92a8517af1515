"""Reading the parts of a received message with the email package, tolerant of what real
senders do wrong (a base64 message/* part, a missing boundary, undecodable headers).

The compat32 policy is used throughout: it never parses a header until asked and keeps
any bytes it cannot decode, so a broken header cannot stop a report from being read."""

from __future__ import annotations

import binascii
import email
import email.header
import email.parser
import email.policy
import email.utils
import quopri
import re
from datetime import timezone
from email.message import Message

MAX_HEADER_CHARS = 2000        # one header value as we store it
_ADDR_TYPE_RE = re.compile(r"^\s*[A-Za-z0-9-]+\s*;\s*")
_RECEIVED_POSTFIX_RE = re.compile(r"\(Postfix\)(?:\s+with\s+\S+)?\s+id\s+([0-9A-Za-z]{5,20})\b")
_RECEIVED_FOR_RE = re.compile(r"\bfor\s+<([^<>\s]+@[^<>\s]+)>")


def parse_bytes(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header(msg: Message | None, name: str) -> str | None:
    """One header as text (RFC 2047 words decoded, unfolded, trimmed); None if absent or empty."""
    if msg is None:
        return None
    value = msg.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, email.header.Header):
            text = str(value)
        else:
            # decoding RFC 2047 words is quadratic in their number: decode only what we keep
            text = str(email.header.make_header(email.header.decode_header(str(value)[:4 * MAX_HEADER_CHARS])))
    except (ValueError, LookupError, UnicodeError, binascii.Error, TypeError):
        text = str(value)
    text = " ".join(text.split())
    return text[:MAX_HEADER_CHARS] or None


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except (ValueError, AttributeError, TypeError):
        return "text/plain"


def param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except (ValueError, TypeError, IndexError):
        return None
    if isinstance(value, tuple):                  # RFC 2231 (charset, language, text)
        try:
            value = email.utils.collapse_rfc2231_value(value)
        except (LookupError, UnicodeError):
            value = value[2]
    return str(value).strip().lower() if value is not None else None


def filename(part: Message) -> str:
    try:
        name = part.get_filename() or param(part, "name") or ""
    except (ValueError, TypeError, LookupError, UnicodeError, IndexError):
        name = ""
    return str(name).strip().lower()


def payload_bytes(part: Message) -> bytes:
    """The decoded body of a part (base64, quoted-printable, 7bit/8bit).  For a message/*
    part the parser has split into messages, their text joined (then decoded, for the
    base64 message/* parts that RFC 2046 forbids and some MTAs send)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        try:
            raw = b"".join(m.as_bytes() for m in payload if isinstance(m, Message))
        except (ValueError, TypeError, LookupError, UnicodeError, AttributeError):
            return b""
    elif isinstance(payload, str):
        raw = payload.encode("ascii", "surrogateescape") if _is_ascii_safe(payload) else \
            payload.encode("utf-8", "surrogateescape")
    else:
        return b""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        try:
            return binascii.a2b_base64(b"".join(raw.split()))
        except (binascii.Error, ValueError):
            # truncated or padded wrongly: decode what there is, a part of a report is better
            cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
            cleaned = cleaned[:len(cleaned) - len(cleaned) % 4]
            return binascii.a2b_base64(cleaned) if cleaned else b""
    if encoding == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _is_ascii_safe(text: str) -> bool:
    try:
        text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def payload_text(part: Message) -> str:
    data = payload_bytes(part)
    charset = param(part, "charset") or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def walk(msg: Message, limit: int = 500):
    """The parts of a message, depth first, at most ``limit`` (a message of 10 000 parts is hostile)."""
    count = 0
    for part in msg.walk():
        count += 1
        if count > limit:
            return
        yield part


def returned_message(report: Message) -> Message | None:
    """The returned original in a multipart/report: message/rfc822 (whole) or
    text/rfc822-headers (headers only), as a Message; None when there is none."""
    parts = report.get_payload() if report.is_multipart() else []
    if not isinstance(parts, list):
        return None
    for part in parts[1:]:
        if not isinstance(part, Message):
            continue
        kind = content_type(part)
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
            return parse_bytes(payload_bytes(part))          # a base64 message/rfc822 (not allowed, seen)
        if kind in ("text/rfc822-headers", "message/global-headers", "message/rfc822-headers"):
            text = payload_bytes(part).replace(b"\r\n", b"\n")
            return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(text)
    return None


def strip_type(value: str | None) -> str | None:
    """``rfc822; alice@x`` -> ``alice@x`` (address and diagnostic types of RFC 3464)."""
    if value is None:
        return None
    text = _ADDR_TYPE_RE.sub("", value, count=1).strip()
    return text or None


def address_of(value: str | None) -> str | None:
    """The bare address of a header value (``Alice <a@x>`` -> ``a@x``), lower-cased domain."""
    if not value:
        return None
    try:
        _name, addr = email.utils.parseaddr(value)
    except (ValueError, TypeError, IndexError):
        addr = ""
    addr = addr.strip().strip("<>")
    if "@" not in addr:
        candidate = value.strip().strip("<>").strip()
        if "@" in candidate and not any(c.isspace() for c in candidate):
            addr = candidate
        else:
            return None
    local, _, domain = addr.rpartition("@")
    if not local or not domain:
        return None
    return f"{local}@{domain.lower()}"[:320]


def domain_part(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower() or None


def iso_date(value: str | None) -> str | None:
    """An RFC 5322 date as ISO 8601 UTC; the text itself when it cannot be read."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return value[:100]
    if moment is None:
        return value[:100]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def originating_queue_id(original: Message | None) -> str | None:
    """The queue ID of the first Postfix that handled the returned message: the bottom-most
    Received header saying ``(Postfix) with ... id QUEUEID`` (the submission on our host)."""
    if original is None:
        return None
    found = None
    for value in original.get_all("received", []) or []:
        match = _RECEIVED_POSTFIX_RE.search(" ".join(str(value).split()))
        if match:
            found = match.group(1)                 # keep going: the last one is the earliest hop
    return found


def received_for(original: Message | None) -> str | None:
    """The recipient named in the earliest Received header's ``for <...>`` clause."""
    if original is None:
        return None
    found = None
    for value in original.get_all("received", []) or []:
        match = _RECEIVED_FOR_RE.search(" ".join(str(value).split()))
        if match:
            found = address_of(match.group(1))
    return found

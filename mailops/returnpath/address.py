"""The envelope sender of outgoing mail: an address in the return-path domain that lets an
asynchronous bounce be traced back, and that the server can tell apart from a forgery.

Design: an HMAC token, ``b-<token>@bounces.<domain>``, not VERP.

VERP (Postfix appends the recipient to the sender per recipient when MAIL FROM carries
XVERP, e.g. added for every message by an ``smtpd_command_filter``) gives
``b+alice=example.org@bounces.shop.test``.  It needs no state, but:

* length: the local part is ``prefix + rcpt-local + "=" + rcpt-domain``.  RFC 5321 limits a
  local part to 64 octets; a recipient of 60 characters already overflows it, and receivers
  that enforce the limit reject the message or mangle the return path;
* ambiguity: recipients whose local part contains ``+`` or ``=`` (``a+tag=x@example.org``) can
  only be decoded by convention (split at the first ``+`` and the last ``=``), and a
  receiver that lower-cases or re-quotes the address breaks the round trip;
* forgery: every VERP address is valid, so anyone can send a fake DSN to
  ``b+victim=example.org@bounces.shop.test`` and get ``victim`` suppressed (suppression
  poisoning), and the server cannot refuse return-path addresses it never issued;
* privacy: the recipient is readable by every relay and in every bounce that quotes it;
* cost: XVERP makes Postfix deliver each recipient in its own SMTP transaction.

The token is a fixed 28-octet local part (``b-`` and 26 base32 letters) whatever the
recipient, case-insensitive (receivers that fold case do not break it), opaque, and carries
a truncated HMAC-SHA256 over the sending domain, the issue day and a random id.  So:

* ``validate`` refuses, without any table, a return-path address this fleet never issued
  (wrong MAC), one issued for another sending domain, and one older than ``max_age_days``
  (bounces come within the queue lifetime; older tokens are replays);
* the recipient, queue ID and Message-ID live in a local table (:class:`TokenTable`,
  sqlite) keyed by the token id, filled when the token is issued and completed from the
  delivery log (Postfix logs ``from=<b-...@bounces...>`` and each ``to=`` with the queue
  ID), so a malformed DSN still names its recipient.

The price is state: the key must be the same on every host of the fleet (any host may be
the MX of the bounce domain), and the table must be reachable where the bounce arrives, or
the DSN's own recipient fields are used (they usually exist).  Keys rotate: ``encode`` uses
the first key, ``validate`` accepts any of the keys given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone

PREFIX = "b-"
DEFAULT_SUBDOMAIN = "bounces"
MAX_LOCAL_PART = 64            # RFC 5321 4.5.3.1.1
MIN_KEY_BYTES = 16
DEFAULT_MAX_AGE_DAYS = 30
_EPOCH = date(2020, 1, 1)      # days are counted from here in two bytes (good until 2199)
_ID_BYTES = 6
_MAC_BYTES = 8
_TOKEN_BYTES = 2 + _ID_BYTES + _MAC_BYTES
_TOKEN_CHARS = 26              # base32 of 16 bytes without padding
_B32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class AddressError(ValueError):
    """A return-path address that this fleet did not issue, or cannot be read."""


@dataclass(frozen=True, slots=True)
class ReturnPath:
    """What a valid return-path address says."""
    address: str
    token_id: str              # hex of the random id: the key of the TokenTable
    sending_domain: str
    issued: date


def return_path_domain(sending_domain: str, subdomain: str = DEFAULT_SUBDOMAIN) -> str:
    """The default return-path domain of a sending domain: ``bounces.<domain>``."""
    domain = _clean_domain(sending_domain)
    return f"{subdomain}.{domain}" if subdomain else domain


def _clean_domain(domain: str) -> str:
    if not isinstance(domain, str):
        raise AddressError("a domain must be text")
    domain = domain.strip().rstrip(".").lower()
    if not domain or len(domain) > 253 or any(c.isspace() or c in "@<>\"\\" for c in domain):
        raise AddressError(f"{domain!r} is not a domain name")
    return domain


def _check_keys(keys) -> list[bytes]:
    if isinstance(keys, (bytes, bytearray)):
        keys = [keys]
    keys = [bytes(k) for k in keys]
    if not keys:
        raise AddressError("no return-path key given")
    for key in keys:
        if len(key) < MIN_KEY_BYTES:
            raise AddressError(f"a return-path key must have at least {MIN_KEY_BYTES} bytes, found {len(key)}")
    return keys


def _mac(key: bytes, sending_domain: str, head: bytes) -> bytes:
    return hmac.new(key, b"mailops-rp1|" + sending_domain.encode("ascii", "replace") + b"|" + head,
                    hashlib.sha256).digest()[:_MAC_BYTES]


def _day_number(day: date) -> int:
    number = (day - _EPOCH).days
    if not 0 <= number < 1 << 16:
        raise AddressError(f"{day} is outside the range a token can carry")
    return number


def encode(keys, sending_domain: str, *, return_domain: str | None = None, today: date | None = None,
           token_id: bytes | None = None) -> ReturnPath:
    """A new return-path address for one message (or recipient) of ``sending_domain``.

    keys: one key (bytes) or a list, newest first; the first signs.  token_id: 6 random bytes
    by default (tests pass their own)."""
    key = _check_keys(keys)[0]
    domain = _clean_domain(sending_domain)
    rp_domain = _clean_domain(return_domain) if return_domain else return_path_domain(domain)
    day = today or datetime.now(timezone.utc).date()
    ident = token_id if token_id is not None else os.urandom(_ID_BYTES)
    if len(ident) != _ID_BYTES:
        raise AddressError(f"a token id has {_ID_BYTES} bytes")
    head = _day_number(day).to_bytes(2, "big") + ident
    token = base64.b32encode(head + _mac(key, domain, head)).decode("ascii").rstrip("=").lower()
    local = PREFIX + token
    assert len(local) <= MAX_LOCAL_PART
    return ReturnPath(f"{local}@{rp_domain}", ident.hex(), domain, day)


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of an address, angle brackets and surrounding space removed."""
    if not isinstance(address, str):
        raise AddressError("an address must be text")
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    at = text.rfind("@")
    if at <= 0 or at == len(text) - 1:
        raise AddressError(f"{address[:100]!r} is not an address (local@domain)")
    return text[:at], text[at + 1:].lower()


def is_return_path(address: str) -> bool:
    """Whether an address has the form of a return path (not whether it is valid)."""
    try:
        local, _domain = split_address(address)
    except AddressError:
        return False
    return _token_text(local) is not None


def _token_text(local: str) -> str | None:
    local = local.lower()
    if not local.startswith(PREFIX):
        return None
    token = local[len(PREFIX):]
    if len(token) != _TOKEN_CHARS or not set(token) <= _B32_ALPHABET:
        return None
    return token


def sending_domain_of(return_domain: str, subdomain: str = DEFAULT_SUBDOMAIN) -> str:
    """The sending domain a default return-path domain belongs to (``bounces.x`` -> ``x``)."""
    domain = _clean_domain(return_domain)
    prefix = f"{subdomain}." if subdomain else ""
    if prefix and domain.startswith(prefix) and len(domain) > len(prefix):
        return domain[len(prefix):]
    return domain


def decode(keys, address: str, *, sending_domain: str | None = None, today: date | None = None,
           max_age_days: int = DEFAULT_MAX_AGE_DAYS, subdomain: str = DEFAULT_SUBDOMAIN) -> ReturnPath:
    """The ReturnPath of a valid address; AddressError saying why not otherwise.

    sending_domain: the domain the token was issued for; by default the address's domain
    without the ``bounces.`` label (set it when the return-path domain is shared)."""
    checked = _check_keys(keys)
    local, rp_domain = split_address(address)
    if len(local) > MAX_LOCAL_PART:
        raise AddressError("the local part is longer than 64 octets: not a return path we issue")
    token = _token_text(local)
    if token is None:
        raise AddressError(f"{local[:80]!r} is not a return-path token (b- and 26 base32 letters)")
    try:
        raw = base64.b32decode(token.upper() + "======")
    except (ValueError, TypeError):
        raise AddressError("the token is not base32") from None
    if len(raw) != _TOKEN_BYTES:
        raise AddressError("the token has the wrong length")
    if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != token:
        # the last letter carries 2 unused bits: one token, one spelling
        raise AddressError("the token is not in its canonical spelling")
    domain = _clean_domain(sending_domain) if sending_domain else sending_domain_of(rp_domain, subdomain)
    head, mac = raw[:2 + _ID_BYTES], raw[2 + _ID_BYTES:]
    if not any(hmac.compare_digest(mac, _mac(key, domain, head)) for key in checked):
        raise AddressError(f"the token was not issued for {domain} by this fleet (wrong MAC)")
    issued = _EPOCH.fromordinal(_EPOCH.toordinal() + int.from_bytes(head[:2], "big"))
    now = today or datetime.now(timezone.utc).date()
    age = (now - issued).days
    if age > max_age_days:
        raise AddressError(f"the token was issued {age} days ago, over the {max_age_days}-day limit")
    if age < -1:                                  # one day of clock skew between hosts
        raise AddressError(f"the token is dated {issued}, in the future")
    return ReturnPath(f"{local.lower()}@{rp_domain}", head[2:].hex(), domain, issued)


def validate(keys, address: str, **kwargs) -> bool:
    """True when the address is a return path this fleet issued and still accepts."""
    try:
        decode(keys, address, **kwargs)
    except AddressError:
        return False
    return True


class TokenTable:
    """token id -> what was sent with it (sqlite): the fallback when a DSN is malformed.

    One message may have several recipients; ``recipients`` lists them all, and a bounce
    traced through the token can name its recipient only when there is one."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS return_tokens (
        token_id TEXT PRIMARY KEY,
        sending_domain TEXT NOT NULL,
        sender TEXT NOT NULL DEFAULT '',
        issued REAL NOT NULL,
        queue_id TEXT,
        message_id TEXT
    );
    CREATE TABLE IF NOT EXISTS return_token_recipients (
        token_id TEXT NOT NULL REFERENCES return_tokens(token_id) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        PRIMARY KEY (token_id, recipient)
    );
    """

    def __init__(self, path: str = ":memory:") -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(self.SCHEMA)

    def close(self) -> None:
        self.db.close()

    def issued(self, token: ReturnPath, *, sender: str = "", recipients=(), queue_id: str | None = None,
               message_id: str | None = None, now: float | None = None) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO return_tokens(token_id, sending_domain, sender, issued, queue_id, message_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(token_id) DO UPDATE SET"
                " queue_id = coalesce(excluded.queue_id, queue_id),"
                " message_id = coalesce(excluded.message_id, message_id)",
                (token.token_id, token.sending_domain, sender, time.time() if now is None else now,
                 queue_id, message_id))
            self.db.executemany("INSERT OR IGNORE INTO return_token_recipients VALUES (?, ?)",
                                [(token.token_id, r.strip().lower()) for r in recipients])

    def delivered(self, token_id: str, recipient: str, queue_id: str | None = None) -> bool:
        """Add what the delivery log says about a token (a to= line); False if the token is unknown."""
        with self.db:
            if self.db.execute("SELECT 1 FROM return_tokens WHERE token_id = ?", (token_id,)).fetchone() is None:
                return False
            if queue_id:
                self.db.execute("UPDATE return_tokens SET queue_id = coalesce(queue_id, ?) WHERE token_id = ?",
                                (queue_id, token_id))
            self.db.execute("INSERT OR IGNORE INTO return_token_recipients VALUES (?, ?)",
                            (token_id, recipient.strip().lower()))
        return True

    def lookup(self, token_id: str) -> dict | None:
        row = self.db.execute("SELECT sending_domain, sender, issued, queue_id, message_id FROM return_tokens"
                              " WHERE token_id = ?", (token_id,)).fetchone()
        if row is None:
            return None
        recipients = [r for (r,) in self.db.execute(
            "SELECT recipient FROM return_token_recipients WHERE token_id = ? ORDER BY recipient", (token_id,))]
        return {"sending_domain": row[0], "sender": row[1], "issued": row[2], "queue_id": row[3],
                "message_id": row[4], "recipients": recipients}

    def expire(self, older_than_days: int = DEFAULT_MAX_AGE_DAYS, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        with self.db:
            return self.db.execute("DELETE FROM return_tokens WHERE issued < ?", (cutoff,)).rowcount

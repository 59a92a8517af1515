"""Delivery statistics and bounce lists from Postfix logs, read as a stream.

Lines arrive one at a time (``journalctl -o short-iso`` over SSH, or
/var/log/mail.log), so nothing here keeps lines: memory grows only with the
number of distinct domains, hours, reasons and failing recipients.  Per-queue
state (the envelope sender, recipients still deferred) is dropped when qmgr
logs ``removed`` and is capped as an LRU map for queue files whose removal we
never see.

Timestamps are recognised per line: journalctl short-iso
(``2026-11-22T16:50:01+0000``), rsyslog RFC 3339 (Debian 12's mail.log,
``2026-11-22T16:50:01.123456+00:00``) and traditional syslog
(``Nov 22 16:50:01``, no year and no zone: see LogStats).
"""

from __future__ import annotations

import csv
import io
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Iterable

from mailops.errors import MailopsError

UTC = timezone.utc
STATUSES = ("sent", "deferred", "bounced", "expired", "rejected")
MAX_INFLIGHT_QUEUE_IDS = 100_000     # queue files seen "queue active" but not yet "removed"
MAX_PENDING_PER_QUEUE_ID = 1_000     # deferred recipients remembered per queue file (for expiry)
MAX_DISTINCT_REASONS = 10_000        # after this, new reasons are counted as "other"
MAX_REASON_CHARS = 300
OTHER_REASON = "other"
CSV_COLUMNS = ("recipient", "domain", "dsn", "class", "reason", "time", "sender", "count")

# A syslog line without a year may be a little ahead of `now` (clock skew, a
# local-time log read as UTC) without being last year's.
_FUTURE_SLACK = timedelta(days=1)

# ---------------------------------------------------------------------------
# --since / --until
# ---------------------------------------------------------------------------

_RELATIVE_RE = re.compile(
    r"-?\s*(\d+)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)(?:\s+ago)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (servers provisioned by mailops run in UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_since(text: str, now: datetime | None = None, option: str = "--since") -> datetime:
    """A point in time from what an operator types: a date, a date and time, today,
    yesterday, now, or a span back from now (30m, 2h, 1d, 1w, "2h ago", -2h)."""
    now = _as_utc(now) if now is not None else datetime.now(UTC)
    word = text.strip().lower()
    if word == "now":
        return now
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    relative = _RELATIVE_RE.fullmatch(word)
    if relative:
        return now - timedelta(seconds=int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)[0]])
    if word[:4].isdigit():
        try:
            return _as_utc(datetime.fromisoformat(text.strip().upper()))
        except ValueError:
            pass
    raise MailopsError(f"{option} '{text}': not a time; use e.g. 2026-11-01, '2026-11-01 08:00', 2h, 1d or today")


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    """One ``status=`` line of a delivery agent (smtp, lmtp, local, virtual, pipe, error...)."""
    time: datetime
    queue_id: str
    recipient: str
    domain: str
    sender: str | None      # None: the qmgr from= line was not seen; "" is the null sender <>
    relay: str
    dsn: str
    status: str             # sent, deferred, bounced or expired
    reason: str             # the text inside the final parentheses


@dataclass(slots=True)
class Reject:
    """A refusal by smtpd/postscreen (``reject:``), a milter (``milter-reject:``) or
    cleanup's header/body checks.  4xx refusals are rejects too; code tells them apart."""
    time: datetime
    queue_id: str | None    # None for NOQUEUE
    stage: str              # CONNECT, HELO, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE, HEADER, BODY...
    code: str               # SMTP reply code ("554"); "" when Postfix logged only the DSN (milters)
    dsn: str
    recipient: str | None
    domain: str | None
    sender: str | None
    client: str             # "name[address]", as logged
    reason: str             # reply text after the code and DSN


def classify_dsn(dsn: str) -> str:
    """What a permanent failure says about the address (RFC 3463), for suppression lists."""
    if dsn in ("5.1.1", "5.1.0", "5.1.10", "5.1.3"):
        return "bad-mailbox"
    if dsn == "5.1.2":
        return "bad-domain"
    if dsn == "5.2.1":
        return "mailbox-disabled"
    if dsn == "5.2.2":
        return "mailbox-full"
    if dsn.startswith("5.7."):
        return "policy"      # blocked or judged spam: not a problem with the address
    if dsn.startswith("5.4."):
        return "routing"
    if dsn.startswith("5.3."):
        return "system"
    return "other"


# ---------------------------------------------------------------------------
# Reason normalisation: the same failure for different recipients, hosts and
# queue files must land in one group.
# ---------------------------------------------------------------------------

_ADDRESS_RE = re.compile(r"<?[^\s<>@(),;:\"\[\]]+@[^\s<>@(),;:\"\[\]]+>?")
_IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:.])")
_IPV4_RE = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")
# queue ids (hex, or Postfix long ids) and other tokens from remote logs, e.g. Gmail's
# "d9443c01a7336-2a4ff9d6a5bsi12345"; a digit is required so plain words survive
_ID_RE = re.compile(r"\b(?:(?=[A-Fa-f]*\d)[0-9A-Fa-f]{8,}|(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{10,})\b")
_LONG_NUMBER_RE = re.compile(r"\d{4,}")


def _ipv6_or_same(match: re.Match) -> str:
    token = match.group(0)
    # "16:50:01" is a time, not an address: require a "::" or most of the eight groups
    return "<ip>" if "::" in token or token.count(":") >= 5 else token


def normalise_reason(reason: str) -> str:
    """Replace addresses, IPs, ids and long numbers so that reasons group."""
    text = reason
    if "@" in text:
        text = _ADDRESS_RE.sub("<addr>", text)
    if ":" in text:
        text = _IPV6_RE.sub(_ipv6_or_same, text)
    text = _IPV4_RE.sub("<ip>", text)
    text = _ID_RE.sub("<id>", text)
    text = _LONG_NUMBER_RE.sub("<n>", text)
    return text[:MAX_REASON_CHARS]


# ---------------------------------------------------------------------------
# Line formats (see log_adhoc.c, smtpd.c log_whatsup, cleanup_milter.c, cleanup_message.c)
# ---------------------------------------------------------------------------

_DELIVERY_RE = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>.*?)>, (?:orig_to=<.*?>, )?relay=(?P<relay>[^,]*), "
    r".*?dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>[a-z]+)"
    r"(?: \((?P<reason>.*)\)|, (?P<tail>.*))?$")
_QMGR_EXPIRED_RE = re.compile(r"(?P<qid>[0-9A-Za-z]+): from=<(?P<sender>.*?)>, status=expired")
_REJECT_RE = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): (?:milter-)?reject: (?P<stage>[A-Z][A-Z-]*) from "
    r"(?P<client>\S*?\[[^\]]*\](?::\d+)?|\S+): (?P<rest>.*)$")
# cleanup header_checks/body_checks: "reject: header Subject: x from host[ip]; from=<> to=<> ...: 5.7.1 text"
_CONTENT_REJECT_RE = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): reject: (?P<stage>[a-z][a-z-]*) .*? from (?P<client>\S+);"
    r"(?P<trailer>(?: (?:from|to)=<[^>]*>| proto=\S+| helo=<[^>]*>)*)(?:: (?P<rest>.*))?$")
# the "; from=<..> to=<..> proto=.. helo=<..>" that ends smtpd's and postscreen's (comma separated) lines
_TRAILER_RE = re.compile(r";((?:,? (?:from|to)=<[^>]*>|,? proto=[^\s,]+|,? helo=<[^>]*>)*)$")
_REPLY_RE = re.compile(r"(?:(?P<code>[245]\d\d)[ -])?(?:(?P<dsn>[245]\.\d{1,3}\.\d{1,3})\s*)?(?P<text>.*)$", re.S)
_FROM_RE = re.compile(r"from=<([^>]*)>")
_TO_RE = re.compile(r"to=<([^>]*)>")

_POSTFIX_PREFIXES = frozenset(("postfix/", "postfix-", "postfix["))
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _domain_of(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1:].lower() if at >= 0 else ""


class _Queued:
    """What we know about one queue file between qmgr's 'queue active' and 'removed'."""
    __slots__ = ("sender", "pending")

    def __init__(self, sender: str | None) -> None:
        self.sender = sender
        self.pending: dict[str, tuple[str, str]] | None = None   # recipient -> (dsn, reason) of the last deferral


class _Soft:
    __slots__ = ("domain", "count", "last_dsn", "last_reason", "first", "last", "sender")

    def __init__(self, domain: str, moment: datetime) -> None:
        self.domain, self.count, self.first, self.last = domain, 0, moment, moment
        self.last_dsn = self.last_reason = ""
        self.sender: str | None = None


class _Hard:
    __slots__ = ("domain", "dsn", "cls", "reason", "time", "sender", "count")

    def __init__(self, domain: str) -> None:
        self.domain, self.count = domain, 0
        self.dsn = self.cls = self.reason = ""
        self.time: datetime | None = None
        self.sender: str | None = None


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(STATUSES, 0)


class LogStats:
    """Incremental statistics over Postfix log lines.

    since/until: lines outside the window are skipped (still counted in `lines`).
    year: year of traditional syslog timestamps; without it the year is taken from
    `now`, and a date that would lie in the future is last year's (a Dec-Jan log).
    syslog_tz: zone of traditional syslog timestamps (they carry none); UTC by default.
    on_event: called with each Delivery and Reject inside the window.
    """

    def __init__(self, since: datetime | None = None, until: datetime | None = None, year: int | None = None,
                 now: datetime | None = None, *, syslog_tz: tzinfo = UTC,
                 on_event: Callable[[Delivery | Reject], None] | None = None,
                 max_inflight: int = MAX_INFLIGHT_QUEUE_IDS) -> None:
        self.since = _as_utc(since) if since is not None else None
        self.until = _as_utc(until) if until is not None else None
        self.year = year
        self.now = _as_utc(now) if now is not None else datetime.now(UTC)
        self.syslog_tz = syslog_tz
        self.on_event = on_event
        self.max_inflight = max_inflight

        self.lines = 0
        self.parsed = 0          # Postfix lines inside the window
        self.skipped = 0         # everything else: not Postfix, no timestamp, outside the window
        self.ndr_sent = 0        # non-delivery notifications sent back to senders
        self.evicted = 0         # queue ids dropped from the in-flight map by the cap
        self.first: datetime | None = None
        self.last: datetime | None = None

        self.totals = _zero_counts()
        self.by_domain: dict[str, dict[str, int]] = {}
        self.by_hour: dict[str, dict[str, int]] = {}
        self.dsn: dict[str, int] = {}
        self.reasons: dict[tuple[str, str], int] = {}

        self._inflight: OrderedDict[str, _Queued] = OrderedDict()
        self._soft: dict[str, _Soft] = {}
        self._hard: dict[str, _Hard] = {}

        # one-entry timestamp cache: consecutive lines mostly share their second
        self._ts_text = ""
        self._ts: datetime | None = None
        self._hour = ""
        self._in_window = False

    # -- feeding ------------------------------------------------------------

    def feed_lines(self, lines: Iterable[str]) -> "LogStats":
        feed = self.feed
        for line in lines:
            feed(line)
        return self

    def feed(self, line: str) -> None:
        self.lines += 1
        first_char = line[:1]
        if "0" <= first_char <= "9":                  # ISO 8601: journalctl short-iso, rsyslog
            parts = line.split(" ", 3)
            if len(parts) < 4:
                self.skipped += 1
                return
            ts_text, _host, program, msg = parts
        elif line[3:4] == " " and line[:3] in _MONTHS:  # "Nov 22 16:50:01 host prog[pid]: msg"
            ts_text = line[:15]
            parts = line[16:].split(" ", 2)
            if len(parts) < 3:
                self.skipped += 1
                return
            _host, program, msg = parts
        else:                                          # "-- Boot ... --", blank lines, noise
            self.skipped += 1
            return
        # postfix/smtp, postfix/submission/smtpd, postfix-out/smtp (multi-instance); not postfixadmin
        if program[:8] not in _POSTFIX_PREFIXES:
            self.skipped += 1
            return
        if ts_text != self._ts_text and not self._set_time(ts_text):
            self.skipped += 1
            return
        if msg[-1:] in ("\n", "\r"):
            msg = msg.rstrip("\r\n")
        if not self._in_window:
            if "/qmgr[" in program:    # keep senders of mail queued before --since
                self._qmgr(msg)
            self.skipped += 1
            return
        self.parsed += 1
        # cheapest tests first: most lines are connect/disconnect/TLS noise
        if "status=" in msg:
            if ": to=<" in msg:
                self._delivery(msg)
            elif "/qmgr[" in program and "status=expired" in msg:
                self._qmgr_expired(msg)
        elif "/qmgr[" in program:
            self._qmgr(msg)
        elif "reject: " in msg:       # also milter-reject; never reject_warning
            self._reject(msg)
        elif "/bounce[" in program and "sender non-delivery notification" in msg:
            self.ndr_sent += 1

    def _set_time(self, ts_text: str) -> bool:
        """Parse a timestamp not seen on the previous line; False if it is not one."""
        try:
            if ts_text[:1].isdigit():
                moment = _as_utc(datetime.fromisoformat(ts_text))
            else:
                moment = self._syslog_time(ts_text)
        except (ValueError, KeyError):
            return False
        self._ts_text, self._ts = ts_text, moment
        self._hour = moment.strftime("%Y-%m-%dT%H:00Z")
        self._in_window = not ((self.since is not None and moment < self.since)
                               or (self.until is not None and moment > self.until))
        if self._in_window:
            if self.first is None or moment < self.first:
                self.first = moment
            if self.last is None or moment > self.last:
                self.last = moment
        return True

    def _syslog_time(self, ts_text: str) -> datetime:
        month = _MONTHS[ts_text[:3]]
        day, hour, minute, second = int(ts_text[4:6]), int(ts_text[7:9]), int(ts_text[10:12]), int(ts_text[13:15])
        year = self.year if self.year is not None else self.now.year
        moment = datetime(year, month, day, hour, minute, second, tzinfo=self.syslog_tz).astimezone(UTC)
        if self.year is None and moment > self.now + _FUTURE_SLACK:
            moment = datetime(year - 1, month, day, hour, minute, second, tzinfo=self.syslog_tz).astimezone(UTC)
        return moment

    # -- bookkeeping ---------------------------------------------------------

    def _count(self, status: str, domain: str | None, n: int = 1) -> None:
        self.totals[status] += n
        if domain:
            counts = self.by_domain.get(domain)
            if counts is None:
                counts = self.by_domain[domain] = _zero_counts()
            counts[status] += n
        counts = self.by_hour.get(self._hour)
        if counts is None:
            counts = self.by_hour[self._hour] = _zero_counts()
        counts[status] += n

    def _count_dsn(self, dsn: str) -> None:
        if dsn:
            self.dsn[dsn] = self.dsn.get(dsn, 0) + 1

    def _count_reason(self, status: str, reason: str) -> None:
        key = (status, normalise_reason(reason))
        count = self.reasons.get(key)
        if count is None and len(self.reasons) >= MAX_DISTINCT_REASONS:
            key = (status, OTHER_REASON)
            count = self.reasons.get(key)
        self.reasons[key] = (count or 0) + 1

    def _remember(self, queue_id: str, sender: str | None) -> _Queued:
        queued = self._inflight.get(queue_id)
        if queued is None:
            queued = self._inflight[queue_id] = _Queued(sender)
            if len(self._inflight) > self.max_inflight:
                self._inflight.popitem(last=False)
                self.evicted += 1
        else:
            if sender is not None:
                queued.sender = sender
            self._inflight.move_to_end(queue_id)
        return queued

    def _hard_bounce(self, recipient: str, domain: str, dsn: str, cls: str, reason: str,
                     sender: str | None) -> None:
        hard = self._hard.get(recipient)
        if hard is None:
            hard = self._hard[recipient] = _Hard(domain)
        hard.count += 1
        hard.dsn, hard.cls, hard.reason, hard.time = dsn, cls, reason[:MAX_REASON_CHARS], self._ts
        if sender is not None:
            hard.sender = sender

    # -- events --------------------------------------------------------------

    def _qmgr(self, msg: str) -> None:
        if msg.endswith(": removed"):
            self._inflight.pop(msg[:-9], None)
            return
        start = msg.find(": from=<")
        if start > 0:
            end = msg.find(">, size=", start)
            if end > 0:
                self._remember(msg[:start], msg[start + 8:end])

    def _qmgr_expired(self, msg: str) -> None:
        """The queue file outlived maximal_queue_lifetime: its deferred recipients are lost."""
        match = _QMGR_EXPIRED_RE.match(msg)
        if not match:
            return
        queued = self._inflight.get(match["qid"])
        sender = match["sender"]
        pending = queued.pending if queued is not None else None
        if not pending:
            self._count("expired", None)     # recipients unknown: we did not see them deferred
            return
        for recipient, (dsn, reason) in pending.items():
            domain = _domain_of(recipient)
            self._count("expired", domain)
            self._soft.pop(recipient, None)
            self._hard_bounce(recipient, domain, dsn, "expired", reason, sender)
        queued.pending = None

    def _delivery(self, msg: str) -> None:
        match = _DELIVERY_RE.match(msg)
        if match is None:
            return
        status = match["status"]
        if status not in ("sent", "deferred", "bounced", "expired"):
            return                          # deliverable/undeliverable: address probes, not mail
        queue_id, recipient, dsn = match["qid"], match["rcpt"].lower(), match["dsn"]
        reason = match["reason"] or match["tail"] or ""
        domain = _domain_of(recipient)
        queued = self._inflight.get(queue_id)
        sender = queued.sender if queued is not None else None
        self._count(status, domain)
        self._count_dsn(dsn)
        if status == "sent":
            self._soft.pop(recipient, None)
            if queued is not None and queued.pending:
                queued.pending.pop(recipient, None)
        elif status == "deferred":
            self._count_reason(status, reason)
            soft = self._soft.get(recipient)
            if soft is None:
                soft = self._soft[recipient] = _Soft(domain, self._ts)
            soft.count += 1
            soft.last, soft.last_dsn, soft.last_reason = self._ts, dsn, reason[:MAX_REASON_CHARS]
            if sender is not None:
                soft.sender = sender
            if queued is None:
                queued = self._remember(queue_id, None)
            if queued.pending is None:
                queued.pending = {}
            if recipient in queued.pending or len(queued.pending) < MAX_PENDING_PER_QUEUE_ID:
                queued.pending[recipient] = (dsn, reason[:MAX_REASON_CHARS])
        else:                               # bounced or expired: final
            self._count_reason(status, reason)
            soft = self._soft.pop(recipient, None)
            if queued is not None and queued.pending:
                queued.pending.pop(recipient, None)
            if status == "expired":
                last_reason = soft.last_reason if soft is not None else ""
                self._hard_bounce(recipient, domain, dsn, "expired", last_reason or reason, sender)
            elif dsn.startswith("5"):
                self._hard_bounce(recipient, domain, dsn, classify_dsn(dsn), reason, sender)
        if self.on_event is not None:
            self.on_event(Delivery(self._ts, queue_id, recipient, domain, sender, match["relay"], dsn,
                                   status, reason))

    def _reject(self, msg: str) -> None:
        match = _REJECT_RE.match(msg)
        if match is not None:
            stage, rest = match["stage"], match["rest"]
            trailer = _TRAILER_RE.search(rest)
            reply, trailer_text = (rest[:trailer.start()], trailer.group(1)) if trailer else (rest, "")
        else:
            match = _CONTENT_REJECT_RE.match(msg)
            if match is None:
                return
            stage, reply, trailer_text = match["stage"].upper(), match["rest"] or "", match["trailer"]
        parts = _REPLY_RE.match(reply.strip())
        code, dsn, text = parts["code"] or "", parts["dsn"] or "", parts["text"]
        sender_match, recipient_match = _FROM_RE.search(trailer_text), _TO_RE.search(trailer_text)
        recipient = recipient_match.group(1).lower() if recipient_match else None
        domain = _domain_of(recipient) if recipient else None
        self._count("rejected", domain)
        self._count_dsn(dsn)
        self._count_reason("rejected", " ".join(p for p in (code, dsn, text) if p))
        if self.on_event is not None:
            queue_id = match["qid"]
            self.on_event(Reject(self._ts, None if queue_id == "NOQUEUE" else queue_id, stage, code, dsn,
                                 recipient, domain, sender_match.group(1) if sender_match else None,
                                 match["client"], text))

    # -- results -------------------------------------------------------------

    def report(self, top: int = 10) -> dict:
        dsn_classes = {"2": 0, "4": 0, "5": 0}
        for dsn, count in self.dsn.items():
            dsn_classes[dsn[0]] = dsn_classes.get(dsn[0], 0) + count
        reasons = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0][1], item[0][0]))
        return {
            "lines": self.lines,
            "postfix_lines": self.parsed,
            "skipped": self.skipped,
            "first": _iso(self.first),
            "last": _iso(self.last),
            "totals": dict(self.totals),
            "ndr_sent": self.ndr_sent,
            "by_domain": {domain: dict(self.by_domain[domain]) for domain in sorted(self.by_domain)},
            "by_hour": {hour: dict(self.by_hour[hour]) for hour in sorted(self.by_hour)},
            "dsn": dict(sorted(self.dsn.items())),
            "dsn_classes": dsn_classes,
            "top_reasons": [{"reason": reason, "status": status, "count": count}
                            for (status, reason), count in reasons[:top]],
        }

    def hard_bounces(self) -> list[dict]:
        """One row per recipient with a permanent failure (5.x.x bounce or expiry), by recipient."""
        return [{"recipient": recipient, "domain": hard.domain, "dsn": hard.dsn, "class": hard.cls,
                 "reason": hard.reason, "time": _iso(hard.time), "sender": hard.sender, "count": hard.count}
                for recipient, hard in sorted(self._hard.items())]

    def soft_bounces(self) -> list[dict]:
        """Recipients deferred and, within the log read, neither delivered nor bounced since."""
        rows = [{"recipient": recipient, "domain": soft.domain, "count": soft.count, "last_dsn": soft.last_dsn,
                 "last_reason": soft.last_reason, "first": _iso(soft.first), "last": _iso(soft.last),
                 "sender": soft.sender}
                for recipient, soft in self._soft.items()]
        rows.sort(key=lambda row: (-row["count"], row["recipient"]))
        return rows

    @property
    def inflight(self) -> int:
        """Queue ids currently remembered (bounded by max_inflight)."""
        return len(self._inflight)


def bounces_csv(rows: list[dict]) -> str:
    """hard_bounces() rows as CSV (header recipient,domain,dsn,class,reason,time,sender,count)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in CSV_COLUMNS})
    return out.getvalue()

"""Delivery statistics and bounce lists from Postfix logs, read as a stream.

Lines arrive one at a time (``journalctl -o short-iso`` over SSH, or
/var/log/mail.log), so nothing here keeps lines, and memory is bounded
whatever the log holds: the tables by domain, hour, DSN and reason keep a
fixed number of keys and count the rest as "other"; failing recipients beyond
a fixed number move to a temporary database (mailops.ops.bounces).  Per-queue
state (the envelope sender, recipients still deferred) is dropped when qmgr
logs ``removed`` and is capped as an LRU map for queue files whose removal we
never see.  The line formats are parsed in mailops.ops.postfixlines.

Timestamps are recognised per line: journalctl short-iso
(``2026-11-22T16:50:01+0000``), rsyslog RFC 3339 (Debian 12's mail.log,
``2026-11-22T16:50:01.123456+00:00``) and traditional syslog
(``Nov 22 16:50:01``, no year and no zone: see LogStats).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice
from typing import Callable, Iterable

from mailops.ops.bounces import BounceStore
from mailops.ops.logtime import as_utc
# _USUAL_DELIVERY_RE: parse_delivery's first pattern, run by the block loop on a line in place
from mailops.ops.postfixlines import (_USUAL_DELIVERY_RE, MAX_REASON_CHARS, QMGR_EXPIRED_RE, Delivery, Reject,
                                      classify_dsn, domain_of, normalise_reason, parse_delivery, parse_reject)
from mailops.ops.tables import BoundedTable

UTC = timezone.utc
STATUSES = ("sent", "deferred", "bounced", "expired", "rejected")
_DELIVERY_STATUSES = frozenset(("sent", "deferred", "bounced", "expired"))
MAX_INFLIGHT_QUEUE_IDS = 100_000     # queue files seen "queue active" but not yet "removed"
MAX_PENDING_PER_QUEUE_ID = 1_000     # deferred recipients remembered per queue file (for expiry)
MAX_DISTINCT_REASONS = 10_000        # after this, new reasons are counted as "other"
OTHER_REASON = "other"
# the tables by domain, hour and DSN keep at most this many keys; the rest is counted as OTHER_KEY
MAX_DOMAINS = 5_000
MAX_HOURS = 20_000                   # over two years of hours
MAX_DSN_CODES = 1_000
OTHER_KEY = "(other)"
REPORTED_DOMAINS = 1_000             # the busiest domains a report lists by name

# A syslog line without a year may be a little ahead of `now` (clock skew, a
# local-time log read as UTC) without being last year's.
_FUTURE_SLACK = timedelta(days=1)

_POSTFIX_PREFIXES = frozenset(("postfix/", "postfix-", "postfix["))
_POSTFIX_STARTS = tuple(_POSTFIX_PREFIXES)
# what _event does with a program's lines, by the program field ("postfix/qmgr[812]:")
_NOT_POSTFIX, _POSTFIX, _QMGR, _BOUNCE = 0, 1, 2, 3
_MAX_PROGRAMS = 4_096
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.year >= 1000:     # what strftime gives, three times faster (it runs once per second of log)
        return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (moment.year, moment.month, moment.day, moment.hour,
                                                   moment.minute, moment.second)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")    # %Y of a year before 1000 has no padding


class _Queued:
    """What we know about one queue file between qmgr's 'queue active' and 'removed'."""
    __slots__ = ("sender", "pending")

    def __init__(self, sender: str | None) -> None:
        self.sender = sender
        self.pending: dict[str, tuple[str, str]] | None = None   # recipient -> (dsn, reason) of the last deferral



class LogStats:
    """Incremental statistics over Postfix log lines.

    since/until: lines outside the window are skipped (still counted in `lines`).
    year: year of traditional syslog timestamps; without it the year is taken from
    `now`, and a date that would lie in the future is last year's (a Dec-Jan log).
    syslog_tz: zone of traditional syslog timestamps (they carry none); UTC by default.
    on_event: called with each Delivery and Reject inside the window.
    prefilter: look at each whole line first (see feed); False runs every line through the
    full per-line path, which gives the same statistics, only slower (tests compare the two).
    """

    def __init__(self, since: datetime | None = None, until: datetime | None = None, year: int | None = None,
                 now: datetime | None = None, *, syslog_tz: tzinfo = UTC,
                 on_event: Callable[[Delivery | Reject], None] | None = None,
                 max_inflight: int = MAX_INFLIGHT_QUEUE_IDS, prefilter: bool = True) -> None:
        self.since = as_utc(since) if since is not None else None
        self.until = as_utc(until) if until is not None else None
        self.year = year
        self.now = as_utc(now) if now is not None else datetime.now(UTC)
        self.syslog_tz = syslog_tz
        self.on_event = on_event
        self.max_inflight = max_inflight

        self.lines = 0
        self.parsed = 0          # Postfix lines inside the window
        self.skipped = 0         # everything else: not Postfix, no timestamp, outside the window, too long
        self.too_long = 0        # lines over the reader's length cap (mailops.ops.logs), skipped unread
        self.ndr_sent = 0        # non-delivery notifications sent back to senders
        self.evicted = 0         # queue ids dropped from the in-flight map by the cap
        self.first: datetime | None = None
        self.last: datetime | None = None

        self.totals = dict.fromkeys(STATUSES, 0)
        self.by_domain = BoundedTable(STATUSES, MAX_DOMAINS, OTHER_KEY)
        self.by_hour = BoundedTable(STATUSES, MAX_HOURS, OTHER_KEY)
        self.dsn = BoundedTable(("count",), MAX_DSN_CODES, OTHER_KEY)
        self.reasons: dict[tuple[str, str], int] = {}
        self.bounces = BounceStore()

        self._inflight: OrderedDict[str, _Queued] = OrderedDict()

        # one-entry timestamp cache: consecutive lines mostly share their second
        self._ts_text = ""
        self._ts: datetime | None = None
        self._ts_iso: str | None = None
        self._hour = ""
        self._in_window = False
        # "<timestamp> <host> " of the last line whose timestamp was taken: the pre-filter's key
        self._prefilter = prefilter
        self._prefix: str | None = None
        self._program_kinds: dict[str, int] = {}

    # -- feeding ------------------------------------------------------------

    def feed_lines(self, lines: Iterable[str]) -> "LogStats":
        """Feed many lines: the pre-filter of feed, with its state in local variables."""
        if not self._prefilter:
            for line in lines:
                self._feed(line)
            return self
        if isinstance(lines, list):
            self._feed_many(lines)
        else:                           # a stream: a list at a time, never all of it
            lines = iter(lines)
            while batch := list(islice(lines, 1024)):
                self._feed_many(batch)
        return self

    def feed_block(self, text: str) -> "LogStats":
        """Feed a run of whole lines as one string (lines end at "\\n"; the last one may lack it),
        e.g. a block read from a file: the same statistics as feeding its lines one by one."""
        lines = text.split("\n")
        if lines[-1] == "":          # the text ends with a newline, or is empty
            lines.pop()
        return self.feed_lines(lines)

    def _program_kind(self, program: str) -> int:
        """What _event does with a program's lines (cached: a log names few programs)."""
        kinds = self._program_kinds
        if len(kinds) >= _MAX_PROGRAMS:     # pids make many names over a long log: stay bounded
            kinds.clear()
        # postfix/smtp, postfix/submission/smtpd, postfix-out/smtp (multi-instance); not postfixadmin
        kind = (_NOT_POSTFIX if program[:8] not in _POSTFIX_PREFIXES else _QMGR if "/qmgr[" in program
                else _BOUNCE if "/bounce[" in program else _POSTFIX)
        kinds[program] = kind
        return kind

    def _feed_many(self, lines: list[str]) -> None:
        # The pre-filter of feed with its state in local variables: a line that starts with
        # the "<timestamp> <host> " of the last timed line is inside or outside the window as
        # that line was, and its program starts right after that prefix.  A line of a Postfix
        # program that holds none of the words its events look for is only counted (_event
        # would do nothing with it); the usual delivery line and qmgr's lines are handled here
        # (the hot paths: a third of a busy log), other event lines go straight to _event with
        # their program and message; any other line takes the full path.  A line with a
        # trailing "\n" or without one gives the same result.
        full = self._feed
        remaining = iter(lines)
        if self._prefix is None:
            for line in remaining:
                full(line)
                if self._prefix is not None:
                    break
            else:
                return
        given = remaining.__length_hint__()      # lines left for the loop below
        prefix, in_window = self._prefix, self._in_window
        start = len(prefix)
        kinds, program_kind, plain = self._program_kinds, self._program_kind, _POSTFIX
        event, qmgr, delivered = self._event, self._qmgr, self._delivered
        usual_delivery = _USUAL_DELIVERY_RE.match
        inflight = self._inflight
        forget, known, max_inflight = inflight.pop, inflight.get, self.max_inflight
        # counted as lines read here, minus those of the full path (it counts its own); the
        # skipped ones are counted, the others were parsed (fewer additions per line)
        fulls = other = 0
        try:
            for line in remaining:
                if not line.startswith(prefix):
                    full(line)
                    fulls += 1
                    if self._prefix is not prefix:
                        prefix, in_window = self._prefix, self._in_window
                        start = len(prefix)
                    continue
                end = line.find(" ", start)     # the program is line[start:end], the message after it
                if end < 0:                     # no message
                    other += 1
                    continue
                program = line[start:end]
                try:
                    kind = kinds[program]
                except KeyError:
                    kind = program_kind(program)
                if kind == plain and in_window and "status=" not in line and "reject: " not in line:
                    continue                    # most lines: only counted, as parsed
                if not kind:                    # not Postfix's
                    other += 1
                elif not in_window:
                    other += 1
                    if kind == _QMGR:           # keep senders of mail queued before --since
                        msg = line[end + 1:]
                        qmgr(msg.rstrip("\r\n") if msg[-1:] in ("\n", "\r") else msg)
                elif "status=" in line:
                    # the usual delivery line, matched in place (no copy of its message); a line
                    # ending in "\r" or "\n" would carry it into the reason: _event strips it
                    usual = usual_delivery(line, end + 1)
                    if usual is not None and not line.endswith(("\n", "\r")):
                        queue_id, recipient, relay, dsn, status, in_parens, after_comma = usual.groups()
                        delivered(queue_id, recipient, relay, dsn, status,
                                  in_parens if in_parens is not None else after_comma or "")
                    else:
                        msg = line[end + 1:]
                        event(program, msg.rstrip("\r\n") if msg[-1:] in ("\n", "\r") else msg)
                elif kind == _QMGR:
                    # qmgr's "queue active" and "removed", as _qmgr takes them
                    if line.endswith(": removed", end + 1):
                        forget(line[end + 1:-9], None)
                    elif line.endswith(("\n", "\r")):
                        qmgr(line[end + 1:].rstrip("\r\n"))
                    else:
                        at = line.find(": from=<", end + 1)
                        if at > end + 1:
                            stop = line.find(">, size=", at)
                            if stop > 0:
                                sender = line[at + 8:stop]
                                queue_id = line[end + 1:at]
                                queued = known(queue_id)    # _remember, inlined
                                if queued is None:
                                    inflight[queue_id] = _Queued(sender)
                                    if len(inflight) > max_inflight:
                                        inflight.popitem(last=False)
                                        self.evicted += 1
                                else:
                                    queued.sender = sender
                                    inflight.move_to_end(queue_id)
                elif kind == _BOUNCE or "reject: " in line:
                    msg = line[end + 1:]
                    event(program, msg.rstrip("\r\n") if msg[-1:] in ("\n", "\r") else msg)
        finally:
            taken = given - remaining.__length_hint__() - fulls
            self.lines += taken
            self.parsed += taken - other
            self.skipped += other

    def feed(self, line: str) -> None:
        # Whole-line pre-filter: most lines (connect, TLS, cleanup, client=, other programs) can
        # only be counted.  A line without any text the events below look for, starting with the
        # same "<timestamp> <host> " as the last line whose time was taken, is counted here with
        # what that line established (the time and whether it is inside the window); every other
        # line takes the full path.  LogStats(prefilter=False) gives the same results.
        prefix = self._prefix
        if (prefix is not None and line.startswith(prefix) and "status=" not in line and "reject: " not in line
                and "/qmgr[" not in line and "non-delivery" not in line):
            self.lines += 1
            start = len(prefix)
            # a Postfix program name and a message after it (split's fourth part)
            if self._in_window and line.startswith(_POSTFIX_STARTS, start) and line.find(" ", start + 8) >= 0:
                self.parsed += 1
            else:
                self.skipped += 1
            return
        self._feed(line)

    def _feed(self, line: str) -> None:
        self.lines += 1
        first_char = line[:1]
        if "0" <= first_char <= "9":                  # ISO 8601: journalctl short-iso, rsyslog
            parts = line.split(" ", 3)
            if len(parts) < 4:
                self.skipped += 1
                return
            ts_text, host, program, msg = parts
            prefix_len = len(ts_text) + len(host) + 2
        elif line[3:4] == " " and line[:3] in _MONTHS:  # "Nov 22 16:50:01 host prog[pid]: msg"
            ts_text = line[:15]
            parts = line[16:].split(" ", 2)
            if len(parts) < 3:
                self.skipped += 1
                return
            host, program, msg = parts
            prefix_len = 17 + len(host)
        else:                                          # "-- Boot ... --", blank lines, noise
            self.skipped += 1
            return
        # postfix/smtp, postfix/submission/smtpd, postfix-out/smtp (multi-instance); not postfixadmin
        if program[:8] not in _POSTFIX_PREFIXES:
            self.skipped += 1
            return
        if ts_text != self._ts_text:
            if not self._set_time(ts_text):
                self.skipped += 1
                return
            if self._prefilter:     # lines of another host with the same time just take this path
                self._prefix = line[:prefix_len]
        self._message(program, msg)

    def _message(self, program: str, msg: str) -> None:
        """A Postfix line's program and message, its time already taken (self._in_window)."""
        if msg[-1:] in ("\n", "\r"):
            msg = msg.rstrip("\r\n")
        if not self._in_window:
            if "/qmgr[" in program:    # keep senders of mail queued before --since
                self._qmgr(msg)
            self.skipped += 1
            return
        self.parsed += 1
        self._event(program, msg)

    def _event(self, program: str, msg: str) -> None:
        """What a Postfix line inside the window says (msg without its line end), counted already."""
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

    def skip_too_long(self) -> None:
        """Count a line the reader did not keep because it is longer than any Postfix line."""
        self.lines += 1
        self.skipped += 1
        self.too_long += 1

    def _set_time(self, ts_text: str) -> bool:
        """Parse a timestamp not seen on the previous line; False if it is not one."""
        try:
            if ts_text[:1].isdigit():
                moment = as_utc(datetime.fromisoformat(ts_text))
            else:
                moment = self._syslog_time(ts_text)
        except (ValueError, KeyError, OverflowError):    # OverflowError: a zone pushes it past year 1 or 9999
            return False
        self._ts_text, self._ts, self._ts_iso = ts_text, moment, _iso(moment)
        self._hour = self._ts_iso[:-6] + "00Z"     # "...T16:50:01Z" -> "...T16:00Z" (%Y may be short)
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
            self.by_domain.add(domain, status, n)
        self.by_hour.add(self._hour, status, n)

    def _count_dsn(self, dsn: str) -> None:
        if dsn:
            self.dsn.add(dsn, "count")

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
        self.bounces.hard(recipient, domain, dsn, cls, reason[:MAX_REASON_CHARS], self._ts_iso, sender)

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
        match = QMGR_EXPIRED_RE.match(msg)
        if not match:
            return
        queued = self._inflight.get(match["qid"])
        sender = match["sender"]
        pending = queued.pending if queued is not None else None
        if not pending:
            self._count("expired", None)     # recipients unknown: we did not see them deferred
            return
        for recipient, (dsn, reason) in pending.items():
            domain = domain_of(recipient)
            self._count("expired", domain)
            self.bounces.resolve(recipient)
            self._hard_bounce(recipient, domain, dsn, "expired", reason, sender)
        queued.pending = None

    def _delivery(self, msg: str) -> None:
        parsed = parse_delivery(msg)
        if parsed is not None:
            self._delivered(*parsed)

    def _delivered(self, queue_id: str, recipient: str, relay: str, dsn: str, status: str, reason: str) -> None:
        """A delivery line's fields (parse_delivery's tuple)."""
        if status not in _DELIVERY_STATUSES:
            return                          # deliverable/undeliverable: address probes, not mail
        recipient = recipient.lower()
        at = recipient.rfind("@")                       # domain_of, inlined (the text is lowercase already)
        domain = recipient[at + 1:] if at >= 0 else ""
        queued = self._inflight.get(queue_id)
        sender = queued.sender if queued is not None else None
        self.totals[status] += 1                        # _count and _count_dsn, inlined
        if domain:
            self.by_domain.add(domain, status)
        self.by_hour.add(self._hour, status)
        if dsn:
            self.dsn.add(dsn, "count")
        if status == "sent":
            self.bounces.resolve(recipient)
            if queued is not None and queued.pending:
                queued.pending.pop(recipient, None)
            if self.on_event is not None:
                self.on_event(Delivery(self._ts, queue_id, recipient, domain, sender, relay, dsn, status, reason))
            return
        if status == "deferred":
            self._count_reason(status, reason)
            self.bounces.defer(recipient, domain, dsn, reason[:MAX_REASON_CHARS], self._ts_iso, sender)
            if queued is None:
                queued = self._remember(queue_id, None)
            if queued.pending is None:
                queued.pending = {}
            if recipient in queued.pending or len(queued.pending) < MAX_PENDING_PER_QUEUE_ID:
                queued.pending[recipient] = (dsn, reason[:MAX_REASON_CHARS])
        else:                               # bounced or expired: final
            self._count_reason(status, reason)
            last_reason = self.bounces.resolve(recipient)
            if queued is not None and queued.pending:
                queued.pending.pop(recipient, None)
            if status == "expired":
                self._hard_bounce(recipient, domain, dsn, "expired", last_reason or reason, sender)
            elif dsn.startswith("5"):
                self._hard_bounce(recipient, domain, dsn, classify_dsn(dsn), reason, sender)
        if self.on_event is not None:
            self.on_event(Delivery(self._ts, queue_id, recipient, domain, sender, relay, dsn, status, reason))

    def _reject(self, msg: str) -> None:
        parsed = parse_reject(msg)
        if parsed is None:
            return
        queue_id, stage, client, code, dsn, text, sender, recipient = parsed
        recipient = recipient.lower() if recipient else None
        domain = domain_of(recipient) if recipient else None
        self._count("rejected", domain)
        self._count_dsn(dsn)
        self._count_reason("rejected", " ".join(p for p in (code, dsn, text) if p))
        if self.on_event is not None:
            self.on_event(Reject(self._ts, None if queue_id == "NOQUEUE" else queue_id, stage, code, dsn,
                                 recipient, domain, sender, client, text))

    # -- results -------------------------------------------------------------

    def report(self, top: int = 10, domains: int = REPORTED_DOMAINS) -> dict:
        """The counts as plain data: the ``domains`` busiest destination domains by name
        (the rest as OTHER_KEY), the ``top`` most frequent reasons."""
        dsn = {code: row["count"] for code, row in self.dsn.rows().items()}
        dsn_classes = {"2": 0, "4": 0, "5": 0}
        for code, count in dsn.items():
            if code != OTHER_KEY:
                dsn_classes[code[0]] = dsn_classes.get(code[0], 0) + count
        reasons = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0][1], item[0][0]))
        return {
            "lines": self.lines,
            "postfix_lines": self.parsed,
            "skipped": self.skipped,
            "too_long": self.too_long,
            "first": _iso(self.first),
            "last": _iso(self.last),
            "totals": dict(self.totals),
            "ndr_sent": self.ndr_sent,
            "by_domain": self.by_domain.rows(limit=domains),
            "by_hour": self.by_hour.rows(),
            "dsn": dsn,
            "dsn_classes": dsn_classes,
            "top_reasons": [{"reason": reason, "status": status, "count": count}
                            for (status, reason), count in reasons[:top]],
        }

    def hard_bounces(self) -> list[dict]:
        """One row per recipient with a permanent failure (5.x.x bounce or expiry), by recipient
        (the whole list in memory: mailops.ops.export streams it instead)."""
        return list(self.bounces.hard_rows())

    def soft_bounces(self) -> list[dict]:
        """Recipients deferred and, within the log read, neither delivered nor bounced since."""
        return list(self.bounces.soft_rows())

    @property
    def inflight(self) -> int:
        """Queue ids currently remembered (bounded by max_inflight)."""
        return len(self._inflight)


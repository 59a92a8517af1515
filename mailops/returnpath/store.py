"""The event store: every classified message once, in sqlite (standard library).

Idempotent: a message is keyed by the sha256 of its bytes, so the same message delivered
twice (a retry after a crash, a second MX) is stored once; a DMARC or TLS-RPT report is
also keyed by (organisation, report id), since reporters resend the same report in a new
message.  Forward and unparsed messages keep their raw bytes (up to MAX_RAW_BYTES; the
full size and a truncation flag are kept too) so nothing is lost and an operator, or a
later parser, can read them again.

Days are UTC dates (YYYY-MM-DD) of when the message was received."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

from mailops.returnpath.events import FORWARD, KINDS, UNPARSED, Classified

MAX_RAW_BYTES = 10_240_000     # Postfix's default message_size_limit: nothing it accepts is cut
KEEP_RAW_KINDS = (FORWARD, UNPARSED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    received TEXT NOT NULL,
    day TEXT NOT NULL,
    envelope_recipient TEXT NOT NULL DEFAULT '',
    envelope_sender TEXT NOT NULL DEFAULT '',
    subject TEXT,
    reason TEXT NOT NULL DEFAULT '',
    token TEXT,
    raw BLOB,
    raw_bytes INTEGER,
    raw_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_kind_day ON messages(kind, day);
CREATE TABLE IF NOT EXISTS bounces (
    digest TEXT NOT NULL REFERENCES messages(digest) ON DELETE CASCADE,
    day TEXT NOT NULL,
    severity TEXT NOT NULL,
    recipient TEXT,
    recipient_source TEXT,
    action TEXT,
    status TEXT,
    category TEXT,
    diagnostic TEXT,
    sending_domain TEXT,
    remote_mta TEXT,
    reporting_mta TEXT,
    message_id TEXT,
    queue_id TEXT,
    standard INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bounces_domain_day ON bounces(sending_domain, day);
CREATE TABLE IF NOT EXISTS complaints (
    digest TEXT NOT NULL REFERENCES messages(digest) ON DELETE CASCADE,
    day TEXT NOT NULL,
    feedback_type TEXT NOT NULL,
    recipient TEXT,
    recipient_source TEXT,
    sending_domain TEXT,
    reported_domain TEXT,
    source_ip TEXT,
    arrival_date TEXT,
    user_agent TEXT,
    message_id TEXT,
    queue_id TEXT
);
CREATE INDEX IF NOT EXISTS complaints_domain_day ON complaints(sending_domain, day);
CREATE TABLE IF NOT EXISTS dmarc_reports (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL REFERENCES messages(digest) ON DELETE CASCADE,
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    begin INTEGER NOT NULL,
    end INTEGER NOT NULL,
    domain TEXT,
    email TEXT,
    policy TEXT NOT NULL,
    UNIQUE (org_name, report_id)
);
CREATE TABLE IF NOT EXISTS dmarc_rows (
    report INTEGER NOT NULL REFERENCES dmarc_reports(id) ON DELETE CASCADE,
    source_ip TEXT NOT NULL,
    count INTEGER NOT NULL,
    disposition TEXT,
    dkim TEXT,
    spf TEXT,
    header_from TEXT,
    envelope_from TEXT,
    auth_results TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dmarc_rows_ip ON dmarc_rows(source_ip);
CREATE TABLE IF NOT EXISTS tls_reports (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL REFERENCES messages(digest) ON DELETE CASCADE,
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    UNIQUE (org_name, report_id)
);
CREATE TABLE IF NOT EXISTS tls_policies (
    id INTEGER PRIMARY KEY,
    report INTEGER NOT NULL REFERENCES tls_reports(id) ON DELETE CASCADE,
    policy_type TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    successful INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tls_failures (
    policy INTEGER NOT NULL REFERENCES tls_policies(id) ON DELETE CASCADE,
    result_type TEXT NOT NULL,
    sessions INTEGER NOT NULL,
    sending_mta_ip TEXT,
    receiving_mx_hostname TEXT,
    receiving_ip TEXT,
    failure_reason_code TEXT
);
"""


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(timezone.utc)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _day(value) -> str | None:
    """A bound of a day range: a date, a datetime or 'YYYY-MM-DD'."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value).strftime("%Y-%m-%d")
    return str(value)[:10]


class EventStore:
    def __init__(self, path: str = ":memory:", *, max_raw_bytes: int = MAX_RAW_BYTES) -> None:
        self.max_raw_bytes = max_raw_bytes
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")   # the receiver writes while the CLI reads
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- writing ------------------------------------------------------------------------

    def record(self, event: Classified, raw: bytes | None = None, *, received: datetime | None = None) -> bool:
        """Store one event (and the raw message for forward/unparsed ones) in one
        transaction.  False when this message was stored before."""
        moment = _utc(received)
        day = moment.strftime("%Y-%m-%d")
        digest = event.digest or ""
        keep = raw is not None and event.kind in KEEP_RAW_KINDS
        blob = bytes(raw[:self.max_raw_bytes]) if keep else None
        with self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO messages(digest, kind, received, day, envelope_recipient, envelope_sender,"
                " subject, reason, token, raw, raw_bytes, raw_truncated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (digest, event.kind, moment.strftime("%Y-%m-%dT%H:%M:%SZ"), day, event.envelope_recipient,
                 event.envelope_sender, event.subject, event.reason, event.return_path_token, blob,
                 len(raw) if raw is not None else None, int(keep and len(raw) > self.max_raw_bytes)))
            if cursor.rowcount == 0:
                return False
            for b in event.bounces:
                self.db.execute(
                    "INSERT INTO bounces VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (digest, day, b.severity, b.recipient, b.recipient_source, b.action, b.status, b.category,
                     b.diagnostic, b.sending_domain, b.remote_mta, b.reporting_mta, b.message_id, b.queue_id,
                     int(b.standard)))
            for c in event.complaints:
                self.db.execute(
                    "INSERT INTO complaints VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (digest, day, c.feedback_type, c.recipient, c.recipient_source, c.sending_domain,
                     c.reported_domain, c.source_ip, c.arrival_date, c.user_agent, c.message_id, c.queue_id))
            for report in event.dmarc:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO dmarc_reports(digest, org_name, report_id, begin, end, domain, email,"
                    " policy) VALUES (?,?,?,?,?,?,?,?)",
                    (digest, report.org_name, report.report_id, report.begin, report.end, report.domain,
                     report.email, json.dumps(report.policy, sort_keys=True)))
                if cursor.rowcount == 0:
                    continue                          # the same report, resent in another message
                self.db.executemany(
                    "INSERT INTO dmarc_rows VALUES (?,?,?,?,?,?,?,?,?)",
                    [(cursor.lastrowid, r.source_ip, r.count, r.disposition, r.dkim, r.spf, r.header_from,
                      r.envelope_from, json.dumps({"dkim": r.dkim_results, "spf": r.spf_results,
                                                   "reasons": r.reasons}, sort_keys=True))
                     for r in report.rows])
            for report in event.tls:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO tls_reports(digest, org_name, report_id, start, end) VALUES (?,?,?,?,?)",
                    (digest, report.org_name, report.report_id, report.start, report.end))
                if cursor.rowcount == 0:
                    continue
                report_row = cursor.lastrowid
                for p in report.policies:
                    policy_row = self.db.execute(
                        "INSERT INTO tls_policies(report, policy_type, policy_domain, successful, failed)"
                        " VALUES (?,?,?,?,?)",
                        (report_row, p.policy_type, p.policy_domain, p.successful_sessions,
                         p.failed_sessions)).lastrowid
                    self.db.executemany(
                        "INSERT INTO tls_failures VALUES (?,?,?,?,?,?,?)",
                        [(policy_row, f.result_type, f.failed_sessions, f.sending_mta_ip, f.receiving_mx_hostname,
                          f.receiving_ip, f.failure_reason_code) for f in p.failures])
        return True

    # -- reading ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Messages stored per kind (every kind present, 0 when none)."""
        found = dict(self.db.execute("SELECT kind, count(*) FROM messages GROUP BY kind"))
        return {kind: found.get(kind, 0) for kind in KINDS}

    def raw(self, digest: str) -> bytes | None:
        row = self.db.execute("SELECT raw FROM messages WHERE digest = ?", (digest,)).fetchone()
        return row[0] if row else None

    def kept(self, kind: str = UNPARSED) -> list[dict]:
        """The forward or unparsed messages: digest, when, why, size, truncated."""
        rows = self.db.execute("SELECT digest, received, envelope_recipient, envelope_sender, subject, reason,"
                               " raw_bytes, raw_truncated FROM messages WHERE kind = ? ORDER BY received, digest",
                               (kind,))
        names = ("digest", "received", "envelope_recipient", "envelope_sender", "subject", "reason", "bytes",
                 "truncated")
        return [dict(zip(names, row)) for row in rows]

    def _per_day(self, table: str, extra: str, domain, since, until) -> list[dict]:
        where, args = ["1=1"], []
        if domain:
            where.append("sending_domain = ?")
            args.append(domain.lower())
        if since is not None:
            where.append("day >= ?")
            args.append(_day(since))
        if until is not None:
            where.append("day <= ?")
            args.append(_day(until))
        rows = self.db.execute(
            f"SELECT coalesce(sending_domain, ''), day, {extra}, count(*) FROM {table} WHERE {' AND '.join(where)}"
            f" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", args)
        return [{"domain": d, "day": day, extra: value, "count": n} for d, day, value, n in rows]

    def bounces_by_day(self, domain: str | None = None, since=None, until=None) -> list[dict]:
        """Bounces per sending domain, day and severity."""
        return self._per_day("bounces", "severity", domain, since, until)

    def complaints_by_day(self, domain: str | None = None, since=None, until=None) -> list[dict]:
        """Complaints per sending domain, day and feedback type."""
        return self._per_day("complaints", "feedback_type", domain, since, until)

    def bounce_list(self, domain: str | None = None) -> list[dict]:
        names = ("day", "severity", "recipient", "status", "category", "sending_domain", "diagnostic", "queue_id")
        sql = f"SELECT {', '.join(names)} FROM bounces" + (" WHERE sending_domain = ?" if domain else "") + \
            " ORDER BY day, recipient"
        return [dict(zip(names, row)) for row in self.db.execute(sql, (domain.lower(),) if domain else ())]

    def dmarc_by_source(self, domain: str | None = None, since: int | None = None) -> list[dict]:
        """Per reported domain and source IP: messages, aligned DKIM/SPF passes, dispositions.
        since: epoch seconds; reports whose range ends before it are left out."""
        where, args = ["1=1"], []
        if domain:
            where.append("coalesce(r.domain, w.header_from) = ?")
            args.append(domain.lower())
        if since is not None:
            where.append("r.end >= ?")
            args.append(int(since))
        rows = self.db.execute(
            "SELECT coalesce(r.domain, w.header_from, ''), w.source_ip, sum(w.count),"
            " sum(CASE WHEN w.dkim = 'pass' THEN w.count ELSE 0 END),"
            " sum(CASE WHEN w.spf = 'pass' THEN w.count ELSE 0 END),"
            " sum(CASE WHEN w.dkim = 'pass' OR w.spf = 'pass' THEN w.count ELSE 0 END),"
            " sum(CASE WHEN w.disposition = 'none' THEN w.count ELSE 0 END),"
            " sum(CASE WHEN w.disposition = 'quarantine' THEN w.count ELSE 0 END),"
            " sum(CASE WHEN w.disposition = 'reject' THEN w.count ELSE 0 END)"
            " FROM dmarc_rows w JOIN dmarc_reports r ON r.id = w.report"
            f" WHERE {' AND '.join(where)} GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2", args)
        names = ("domain", "source_ip", "messages", "dkim_pass", "spf_pass", "dmarc_pass", "none", "quarantine",
                 "reject")
        return [dict(zip(names, row)) for row in rows]

    def tls_failures_by_type(self, domain: str | None = None) -> list[dict]:
        """Failed TLS sessions per policy domain and result type."""
        sql = ("SELECT p.policy_domain, f.result_type, sum(f.sessions), count(DISTINCT r.id)"
               " FROM tls_failures f JOIN tls_policies p ON p.id = f.policy JOIN tls_reports r ON r.id = p.report"
               + (" WHERE p.policy_domain = ?" if domain else "") + " GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2")
        return [{"domain": d, "result_type": t, "sessions": s, "reports": n}
                for d, t, s, n in self.db.execute(sql, (domain.lower(),) if domain else ())]

    def tls_summary(self, domain: str | None = None) -> list[dict]:
        """Successful and failed sessions per policy domain and policy type."""
        sql = ("SELECT policy_domain, policy_type, sum(successful), sum(failed) FROM tls_policies"
               + (" WHERE policy_domain = ?" if domain else "") + " GROUP BY 1, 2 ORDER BY 1, 2")
        return [{"domain": d, "policy_type": t, "successful": s, "failed": f}
                for d, t, s, f in self.db.execute(sql, (domain.lower(),) if domain else ())]


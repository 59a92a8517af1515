"""The suppression list: recipients mail must not be sent to again, and why (sqlite).

An entry blocks one address or a whole domain (target ``alice@example.org`` or
``example.org``), for one sending domain or for all (scope ``shop.test`` or ``*``), with a
cause (hard-bounce, complaint, soft-bounce, manual), since when (UTC), a detail (the DSN
status and diagnostic, the feedback type...) and an optional expiry.  ``lookup(recipient,
sending_domain)`` answers the policy service at RCPT: the entry that blocks the recipient,
or None; :func:`reply` is the 5.x.x text it sends back.

Soft bounces suppress only after ``soft_threshold`` of them within ``soft_window`` for the
same recipient and scope, and such an entry expires after ``soft_expiry``.

Replication between hosts.  Every change (add, update, remove) stamps ``updated`` (UTC,
microseconds) and ``origin`` (the host that made it); a removal is kept as a tombstone
(``removed``), so it is a change like any other.  :meth:`SuppressionList.merge` takes
entries from another host and keeps, per (target, scope), the one with the newest
(updated, origin) - last writer wins, the same result whatever the order the hosts merge
in, and merging twice changes nothing.  :meth:`changes_since` gives what changed after a
stamp, so replication is incremental.

How a later session should wire it: each host keeps its own database (the policy service
answers from it locally, so a peer being down never blocks or opens submission).  A host
that records a suppression (the return-path receiver, ``mailops suppressions add``)
pushes ``changes_since(last pushed)`` as JSON to every peer at once (over SSH, as the
rest of mailops talks to hosts), and a systemd timer on each host pulls from every peer
every 60 s to catch up after an outage.  So a suppression holds on all hosts within
seconds normally, and within a minute after a peer was unreachable; tombstones are
purged (:meth:`purge_tombstones`) only after they are older than any host can lag
(90 days by default).  The database lives under /var/lib (never rewritten by a
re-converge) and sqlite commits are durable, so reboots and restarts lose nothing.
"""

from __future__ import annotations

import csv
import json
import re
import socket
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, TextIO

from mailops.errors import MailopsError
from mailops.returnpath.suppression_files import csv_rows, json_rows

GLOBAL = "*"
HARD_BOUNCE = "hard-bounce"
COMPLAINT = "complaint"
SOFT_BOUNCE = "soft-bounce"
MANUAL = "manual"
CAUSES = (HARD_BOUNCE, COMPLAINT, SOFT_BOUNCE, MANUAL)
COLUMNS = ("target", "scope", "cause", "since", "detail", "expires", "updated", "removed", "origin")
MAX_DETAIL = 300
MAX_IMPORT_ROWS = 1_000_000
DEFAULT_SOFT_THRESHOLD = 3
DEFAULT_SOFT_WINDOW = timedelta(days=7)
DEFAULT_SOFT_EXPIRY = timedelta(days=30)
DEFAULT_TOMBSTONE_DAYS = 90

_DOMAIN_RE = re.compile(r"(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOCAL_RE = re.compile(r"[^\s@<>()\[\],;:\"\\]{1,64}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    target TEXT NOT NULL,
    scope TEXT NOT NULL,
    cause TEXT NOT NULL,
    since TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    expires TEXT,
    updated TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (target, scope)
);
CREATE INDEX IF NOT EXISTS suppressions_updated ON suppressions(updated);
CREATE TABLE IF NOT EXISTS soft_bounces (
    recipient TEXT NOT NULL,
    scope TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS soft_bounces_key ON soft_bounces(recipient, scope, at);
"""


class EntryError(ValueError):
    """One field of an entry is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def stamp(moment: datetime) -> str:
    """UTC with microseconds, fixed width, so that text order is time order."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str, field: str) -> datetime:
    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise EntryError(field, f"{text[:40]!r} is not a UTC time (write 2026-12-03 or 2026-12-03T17:00:00Z)") \
            from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def normalise_target(value: str) -> str:
    """``Alice@Example.ORG`` -> ``alice@example.org`` (local parts are case-sensitive by the
    RFC, never in practice: one entry must block every spelling); a domain (``@example.org``
    or ``example.org``) -> ``example.org``."""
    if not isinstance(value, str):
        raise EntryError("target", "must be an address or a domain")
    text = value.strip().strip("<>").strip()
    if text.startswith("@"):
        text = text[1:]
    local, at, domain = text.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not _DOMAIN_RE.fullmatch(domain) or "." not in domain:
        raise EntryError("target", f"{value[:80]!r} is not an address or a domain (alice@example.org, example.org)")
    if not at:
        return domain
    if not _LOCAL_RE.fullmatch(local):
        raise EntryError("target", f"{value[:80]!r} has an invalid local part")
    return f"{local.lower()}@{domain}"


def normalise_scope(value: str | None) -> str:
    if value is None or str(value).strip() in ("", GLOBAL, "global"):
        return GLOBAL
    domain = str(value).strip().rstrip(".").lower()
    if not _DOMAIN_RE.fullmatch(domain) or "." not in domain:
        raise EntryError("scope", f"{str(value)[:80]!r} is not a sending domain or * (global)")
    return domain


def _clean_detail(value) -> str:
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else " " for c in " ".join(text.split()))[:MAX_DETAIL]


@dataclass(slots=True)
class Entry:
    target: str
    scope: str
    cause: str
    since: str
    detail: str = ""
    expires: str | None = None
    updated: str = ""
    removed: bool = False
    origin: str = ""

    @property
    def is_domain(self) -> bool:
        return "@" not in self.target

    def active(self, now: datetime) -> bool:
        return not self.removed and (self.expires is None or self.expires > stamp(now))

    def as_dict(self) -> dict:
        return asdict(self)

    def version(self) -> tuple[str, str]:
        """What merge compares: the newest change wins, the origin breaks a tie the same way everywhere."""
        return self.updated, self.origin


def entry_from_mapping(data: dict, now: datetime) -> Entry:
    """An Entry from an imported row (strings), every field checked; EntryError names the first bad one."""
    if not isinstance(data, dict):
        raise EntryError("(row)", "must be an object with target, scope, cause ...")
    unknown = set(data) - set(COLUMNS)
    if unknown:
        raise EntryError(sorted(unknown)[0], f"unknown field; the fields are {', '.join(COLUMNS)}")
    target = normalise_target(data.get("target") or "")
    scope = normalise_scope(data.get("scope"))
    cause = str(data.get("cause") or MANUAL).strip().lower()
    if cause not in CAUSES:
        raise EntryError("cause", f"{cause[:40]!r} is not one of {', '.join(CAUSES)}")
    since = stamp(parse_time(data["since"], "since")) if data.get("since") else stamp(now)
    expires = stamp(parse_time(data["expires"], "expires")) if data.get("expires") else None
    updated = stamp(parse_time(data["updated"], "updated")) if data.get("updated") else stamp(now)
    removed = data.get("removed", False)
    if isinstance(removed, str):
        flag = removed.strip().lower()
        if flag not in ("", "0", "1", "true", "false", "yes", "no"):
            raise EntryError("removed", f"{removed[:20]!r} is not true or false")
        removed = flag in ("1", "true", "yes")
    elif not isinstance(removed, bool):
        raise EntryError("removed", f"{removed!r} is not true or false")
    origin = data.get("origin") or ""
    if not isinstance(origin, str):
        raise EntryError("origin", "must be a host name")
    return Entry(target, scope, cause, since, _clean_detail(data.get("detail")), expires, updated, removed,
                 origin.strip()[:253])


def reply(entry: Entry, recipient: str) -> str:
    """The policy service's answer for a suppressed recipient: why, and since when."""
    what = "domain" if entry.is_domain else "recipient"
    detail = f": {entry.detail}" if entry.detail else ""
    scope = "" if entry.scope == GLOBAL else f" for mail from {entry.scope}"
    text = f"550 5.7.1 <{recipient}>: {what} suppressed{scope} since {entry.since[:10]} ({entry.cause}{detail})"
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:500]


class SuppressionList:
    def __init__(self, path: str = ":memory:", *, origin: str | None = None,
                 soft_threshold: int = DEFAULT_SOFT_THRESHOLD, soft_window: timedelta = DEFAULT_SOFT_WINDOW,
                 soft_expiry: timedelta = DEFAULT_SOFT_EXPIRY, clock=None) -> None:
        if soft_threshold < 1:
            raise MailopsError(f"soft-bounce threshold {soft_threshold} must be at least 1")
        self.origin = origin if origin is not None else socket.gethostname()
        self.soft_threshold = soft_threshold
        self.soft_window = soft_window
        self.soft_expiry = soft_expiry
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.db = sqlite3.connect(path)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")    # the policy service reads while others write
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _now(self, now: datetime | None) -> datetime:
        moment = now or self.clock()
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)

    def _next_stamp(self, target: str, scope: str, now: datetime) -> str:
        """now, or just after the entry's last change (a clock behind a peer's must not lose)."""
        row = self.db.execute("SELECT updated FROM suppressions WHERE target = ? AND scope = ?",
                              (target, scope)).fetchone()
        current = stamp(now)
        if row and row[0] >= current:
            return stamp(parse_time(row[0], "updated") + timedelta(microseconds=1))
        return current

    def _get(self, target: str, scope: str) -> Entry | None:
        row = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM suppressions WHERE target = ? AND scope = ?",
                              (target, scope)).fetchone()
        return _entry(row) if row else None

    def _put(self, entry: Entry) -> None:
        self.db.execute(
            f"INSERT INTO suppressions({', '.join(COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(target, scope) DO UPDATE SET cause = excluded.cause, since = excluded.since,"
            " detail = excluded.detail, expires = excluded.expires, updated = excluded.updated,"
            " removed = excluded.removed, origin = excluded.origin",
            (entry.target, entry.scope, entry.cause, entry.since, entry.detail, entry.expires, entry.updated,
             int(entry.removed), entry.origin))

    # -- changes ------------------------------------------------------------------------

    def add(self, target: str, scope: str | None = GLOBAL, cause: str = MANUAL, detail: str = "", *,
            expires: datetime | None = None, now: datetime | None = None) -> Entry:
        """Suppress; an entry already in force keeps its ``since`` and takes the new cause and detail."""
        if cause not in CAUSES:
            raise MailopsError(f"suppression cause {cause!r} is not one of {', '.join(CAUSES)}")
        target, scope = _key(target, scope)
        moment = self._now(now)
        with self.db:
            old = self._get(target, scope)
            since = old.since if old is not None and old.active(moment) else stamp(moment)
            entry = Entry(target, scope, cause, since, _clean_detail(detail),
                          stamp(expires) if expires is not None else None,
                          self._next_stamp(target, scope, moment), False, self.origin)
            self._put(entry)
        return entry

    def remove(self, target: str, scope: str | None = GLOBAL, *, now: datetime | None = None) -> bool:
        """Lift a suppression (a tombstone that replicates); False if none was in force."""
        target, scope = _key(target, scope)
        moment = self._now(now)
        with self.db:
            old = self._get(target, scope)
            if old is None or old.removed:
                return False
            old.removed, old.updated, old.origin = True, self._next_stamp(target, scope, moment), self.origin
            self._put(old)
            self.db.execute("DELETE FROM soft_bounces WHERE recipient = ? AND scope = ?", (target, scope))
        return True

    def record_soft_bounce(self, recipient: str, scope: str | None = GLOBAL, detail: str = "", *,
                           now: datetime | None = None) -> Entry | None:
        """Count one soft bounce; the entry once the threshold within the window is reached."""
        try:
            target, scope = normalise_target(recipient), normalise_scope(scope)
        except EntryError as exc:
            raise MailopsError(f"suppression {exc.field}: {exc}") from None
        moment = self._now(now)
        with self.db:
            self.db.execute("DELETE FROM soft_bounces WHERE recipient = ? AND scope = ? AND at < ?",
                            (target, scope, stamp(moment - self.soft_window)))
            self.db.execute("INSERT INTO soft_bounces VALUES (?, ?, ?)", (target, scope, stamp(moment)))
            (count,) = self.db.execute("SELECT count(*) FROM soft_bounces WHERE recipient = ? AND scope = ?",
                                       (target, scope)).fetchone()
        if count < self.soft_threshold:
            return None
        blocking = self.lookup(target, None if scope == GLOBAL else scope, now=moment)
        if blocking is not None and blocking.cause != SOFT_BOUNCE:
            return blocking                            # a hard bounce or complaint already holds
        return self.add(target, scope, SOFT_BOUNCE,
                        f"{count} soft bounces in {_days(self.soft_window)}" + (f"; last: {detail}" if detail else ""),
                        expires=moment + self.soft_expiry, now=moment)

    def apply(self, event, *, now: datetime | None = None) -> list[Entry]:
        """Suppress for a classified return-path event (mailops.returnpath.events.Classified):
        a hard bounce globally (the mailbox is gone for every sender), a complaint for the
        sending domain complained about, soft bounces towards the threshold."""
        made = []
        for bounce in getattr(event, "bounces", []):
            if not bounce.recipient:
                continue
            detail = " ".join(x for x in (bounce.status, bounce.diagnostic) if x)
            try:
                if bounce.severity == "hard" and bounce.category != "policy":
                    made.append(self.add(bounce.recipient, GLOBAL, HARD_BOUNCE, detail, now=now))
                elif bounce.severity == "soft":
                    entry = self.record_soft_bounce(bounce.recipient, GLOBAL, detail, now=now)
                    if entry is not None:
                        made.append(entry)
            except MailopsError:
                continue                                 # a recipient we cannot store is no address
        for complaint in getattr(event, "complaints", []):
            if not complaint.recipient or complaint.feedback_type == "not-spam":
                continue
            try:
                made.append(self.add(complaint.recipient, complaint.sending_domain or GLOBAL, COMPLAINT,
                                     f"feedback-type {complaint.feedback_type}", now=now))
            except MailopsError:
                continue
        return made

    # -- questions ----------------------------------------------------------------------

    def lookup(self, recipient: str, sending_domain: str | None = None, *,
               now: datetime | None = None) -> Entry | None:
        """The entry that blocks ``recipient`` for mail from ``sending_domain`` (address
        before domain, the sending domain's own before global), or None."""
        try:
            address = normalise_target(recipient)
        except EntryError:
            return None
        if "@" not in address:
            return None
        domain = address.rpartition("@")[2]
        try:
            scopes = [normalise_scope(sending_domain), GLOBAL] if sending_domain else [GLOBAL]
        except EntryError:
            scopes = [GLOBAL]
        moment = self._now(now)
        for target in (address, domain):
            for scope in dict.fromkeys(scopes):
                entry = self._get(target, scope)
                if entry is not None and entry.active(moment):
                    return entry
        return None

    def entries(self, *, scope: str | None = None, cause: str | None = None, include_inactive: bool = False,
                now: datetime | None = None) -> Iterator[Entry]:
        """Entries in force (or all, with tombstones and expired ones), ordered by target."""
        where, args = ["1=1"], []
        if scope is not None:
            where.append("scope = ?")
            args.append(normalise_scope(scope))
        if cause is not None:
            where.append("cause = ?")
            args.append(cause)
        moment = self._now(now)
        for row in self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM suppressions WHERE {' AND '.join(where)}"
                                   " ORDER BY target, scope", args):
            entry = _entry(row)
            if include_inactive or entry.active(moment):
                yield entry

    def changes_since(self, updated: str = "") -> list[Entry]:
        """Every entry (tombstones included) changed after the stamp: what a peer has not seen."""
        return [_entry(row) for row in self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM suppressions WHERE updated > ? ORDER BY updated", (updated,))]

    # -- replication --------------------------------------------------------------------

    def merge(self, incoming: Iterable[Entry]) -> int:
        """Take entries from another host; per key the newest change wins.  Returns how many changed here."""
        changed = 0
        with self.db:
            for entry in incoming:
                local = self._get(entry.target, entry.scope)
                if local is None or entry.version() > local.version():
                    self._put(entry)
                    changed += 1
        return changed

    def purge_tombstones(self, older_than_days: int = DEFAULT_TOMBSTONE_DAYS, *, now: datetime | None = None) -> int:
        cutoff = stamp(self._now(now) - timedelta(days=older_than_days))
        with self.db:
            return self.db.execute("DELETE FROM suppressions WHERE removed = 1 AND updated < ?", (cutoff,)).rowcount

    # -- import / export ----------------------------------------------------------------

    def export(self, out: TextIO, fmt: str = "json", *, include_inactive: bool = False,
               now: datetime | None = None) -> int:
        """Write entries as CSV (header row) or JSON (an array, one entry per line), row by row."""
        count = 0
        rows = self.entries(include_inactive=include_inactive, now=now)
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(COLUMNS)
            for entry in rows:
                data = entry.as_dict()
                writer.writerow(["" if data[c] is None else ("true" if data[c] is True else
                                                            "false" if data[c] is False else data[c])
                                 for c in COLUMNS])
                count += 1
            return count
        if fmt != "json":
            raise MailopsError(f"export format {fmt!r} is not csv or json")
        out.write("[")
        for entry in rows:
            out.write(("," if count else "") + "\n" + json.dumps(entry.as_dict(), sort_keys=True))
            count += 1
        out.write("\n]\n")
        return count

    def import_file(self, path: str, fmt: str | None = None, *, now: datetime | None = None) -> int:
        """Import a CSV or JSON file: every row is checked first, then all are applied in one
        transaction (a row newer than the local entry wins, as in merge), or none.
        MailopsError ``file:line: field: problem`` for the first bad row."""
        fmt = fmt or ("csv" if str(path).lower().endswith(".csv") else "json")
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                text = handle.read()
        except OSError as exc:
            raise MailopsError(f"{path}: cannot read the suppression file ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise MailopsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        moment = self._now(now)
        entries, errors = [], []
        for line, data in (csv_rows(path, text, COLUMNS) if fmt == "csv" else json_rows(path, text)):
            try:
                entries.append(entry_from_mapping(data, moment))
            except EntryError as exc:
                errors.append(f"{path}:{line}: {exc.field}: {exc}")
            if len(entries) + len(errors) > MAX_IMPORT_ROWS:
                raise MailopsError(f"{path}: more than {MAX_IMPORT_ROWS} rows; split the file")
        if errors:
            more = f" (and {len(errors) - 1} more bad rows)" if len(errors) > 1 else ""
            raise MailopsError(errors[0] + more + "; nothing was imported")
        for entry in entries:
            entry.origin = entry.origin or self.origin
        self.merge(entries)
        return len(entries)


def _key(target: str, scope: str | None) -> tuple[str, str]:
    try:
        return normalise_target(target), normalise_scope(scope)
    except EntryError as exc:
        raise MailopsError(f"suppression {exc.field}: {exc}") from None


def _days(delta: timedelta) -> str:
    return f"{delta.days} days" if delta.days and not delta.seconds else f"{int(delta.total_seconds())} s"


def _entry(row) -> Entry:
    data = dict(zip(COLUMNS, row))
    data["removed"] = bool(data["removed"])
    return Entry(**data)

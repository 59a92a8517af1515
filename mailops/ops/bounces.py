"""Hard and soft bounces per recipient in bounded memory, and their CSV suppression lists.

Up to ``max_in_memory`` recipients of each kind are kept in dicts.  Beyond that they are
moved into a private temporary SQLite database (``sqlite3.connect("")``: a file SQLite
unlinks as it opens it, so nothing is left behind whatever happens) and merged there, so
a log with millions of failing recipients costs disk, not memory.  The lists come out
sorted either way, read row by row."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Iterator
from typing import TextIO

HARD_COLUMNS = ("recipient", "domain", "dsn", "class", "reason", "time", "sender", "count")
SOFT_COLUMNS = ("recipient", "domain", "count", "last_dsn", "last_reason", "first", "last", "sender")
MAX_IN_MEMORY = 5_000         # recipients of each kind; more go to the temporary database

_SCHEMA = """
CREATE TABLE hard (recipient TEXT PRIMARY KEY, domain TEXT, dsn TEXT, class TEXT, reason TEXT, time TEXT,
                   sender TEXT, count INTEGER) WITHOUT ROWID;
CREATE TABLE soft (recipient TEXT PRIMARY KEY, domain TEXT, count INTEGER, last_dsn TEXT, last_reason TEXT,
                   first TEXT, last TEXT, sender TEXT) WITHOUT ROWID;
CREATE INDEX soft_order ON soft (count DESC, recipient);
"""
# rows moved out of memory are newer than what the database holds: their values win, counts add up
_MERGE_HARD = """INSERT INTO hard VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recipient) DO UPDATE SET
    dsn = excluded.dsn, class = excluded.class, reason = excluded.reason, time = excluded.time,
    sender = coalesce(excluded.sender, hard.sender), count = hard.count + excluded.count"""
_MERGE_SOFT = """INSERT INTO soft VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recipient) DO UPDATE SET
    count = soft.count + excluded.count, last_dsn = excluded.last_dsn, last_reason = excluded.last_reason,
    last = excluded.last, sender = coalesce(excluded.sender, soft.sender)"""


class BounceStore:
    """Per recipient: the last permanent failure (hard), and deferrals that neither a
    delivery nor a permanent failure has resolved yet (soft).  Times are ISO strings."""

    def __init__(self, max_in_memory: int = MAX_IN_MEMORY) -> None:
        self.max_in_memory = max_in_memory
        # lists in the column order of HARD_COLUMNS / SOFT_COLUMNS, without the recipient
        self._hard: dict[str, list] = {}
        self._soft: dict[str, list] = {}
        self._db: sqlite3.Connection | None = None

    @property
    def spilled(self) -> bool:
        """Whether recipients were moved to the temporary database."""
        return self._db is not None

    def hard(self, recipient: str, domain: str, dsn: str, cls: str, reason: str, time: str | None,
             sender: str | None) -> None:
        row = self._hard.get(recipient)
        if row is None:
            self._hard[recipient] = [domain, dsn, cls, reason, time, sender, 1]
            if len(self._hard) > self.max_in_memory:
                self._spill()
            return
        row[1:5] = dsn, cls, reason, time
        if sender is not None:
            row[5] = sender
        row[6] += 1

    def defer(self, recipient: str, domain: str, dsn: str, reason: str, time: str | None,
              sender: str | None) -> None:
        row = self._soft.get(recipient)
        if row is None:
            self._soft[recipient] = [domain, 1, dsn, reason, time, time, sender]
            if len(self._soft) > self.max_in_memory:
                self._spill()
            return
        row[1] += 1
        row[2], row[3], row[5] = dsn, reason, time
        if sender is not None:
            row[6] = sender

    def resolve(self, recipient: str) -> str | None:
        """Forget the recipient's deferrals (delivered or failed for good); the last deferral
        reason, or None if it had none."""
        row = self._soft.pop(recipient, None)
        if self._db is not None:
            stored = self._db.execute("DELETE FROM soft WHERE recipient = ? RETURNING last_reason",
                                      (recipient,)).fetchone()
            if row is None and stored is not None:
                return stored[0]
        return row[3] if row is not None else None

    def _spill(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("", isolation_level=None)
            self._db.executescript("PRAGMA cache_size = -4096; PRAGMA temp_store = FILE; " + _SCHEMA)
            self._db.execute("BEGIN")
        self._db.executemany(_MERGE_HARD, ((key, *row) for key, row in self._hard.items()))
        self._db.executemany(_MERGE_SOFT, ((key, *row) for key, row in self._soft.items()))
        self._hard.clear()
        self._soft.clear()

    def hard_rows(self) -> Iterator[dict]:
        """One row per hard-bounced recipient, sorted by recipient."""
        if self._db is None:
            rows: Iterable = ((key, *row) for key, row in sorted(self._hard.items()))
        else:
            self._spill()
            rows = self._db.execute(f"SELECT {', '.join(HARD_COLUMNS)} FROM hard ORDER BY recipient")
        for row in rows:
            yield dict(zip(HARD_COLUMNS, row))

    def soft_rows(self) -> Iterator[dict]:
        """One row per recipient still deferred, most deferrals first."""
        if self._db is None:
            rows: Iterable = ((key, *row) for key, row in
                              sorted(self._soft.items(), key=lambda item: (-item[1][1], item[0])))
        else:
            self._spill()
            rows = self._db.execute(f"SELECT {', '.join(SOFT_COLUMNS)} FROM soft ORDER BY count DESC, recipient")
        for row in rows:
            yield dict(zip(SOFT_COLUMNS, row))

    def counts(self) -> tuple[int, int]:
        """(hard-bounced, soft-bounced) recipients."""
        if self._db is None:
            return len(self._hard), len(self._soft)
        self._spill()
        (hard,), (soft,) = (self._db.execute(f"SELECT count(*) FROM {table}").fetchone() for table in ("hard", "soft"))
        return hard, soft


def write_csv(rows: Iterable[dict], columns: tuple[str, ...], out: TextIO) -> int:
    """Rows as CSV with a header (None as empty); the number of rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row[key] for key in columns])
        n += 1
    return n


def bounces_csv(rows: Iterable[dict]) -> str:
    """Hard-bounce rows as CSV text (header recipient,domain,dsn,class,reason,time,sender,count)."""
    out = io.StringIO()
    write_csv(rows, HARD_COLUMNS, out)
    return out.getvalue()

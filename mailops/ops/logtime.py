"""Points in time for ``--since`` / ``--until``, and the UTC rule for log timestamps."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from mailops.errors import MailopsError

UTC = timezone.utc

_RELATIVE_RE = re.compile(
    r"-?\s*(\d+)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)(?:\s+ago)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# datetime's own range, less a day either side so that any zone offset still fits
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (servers provisioned by mailops run in UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_since(text: str, now: datetime | None = None, option: str = "--since") -> datetime:
    """A point in time from what an operator types: a date, a date and time, today,
    yesterday, now, or a span back from now (30m, 2h, 1d, 1w, "2h ago", -2h).

    A time outside what Python's datetime holds (years 1 to 9999, in UTC) is refused,
    not clamped: a span of a million days back is a typing error, not "everything"."""
    now = as_utc(now) if now is not None else datetime.now(UTC)
    word = text.strip().lower()
    if word == "now":
        return now
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    out_of_range = MailopsError(
        f"{option} '{text}': out of range; give a time between 0001-01-02 and 9999-12-30 (UTC)")
    relative = _RELATIVE_RE.fullmatch(word)
    if relative:
        seconds = int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)[0]]
        if seconds > (now - _EARLIEST).total_seconds():
            raise out_of_range
        return now - timedelta(seconds=seconds)
    if word[:4].isdigit():
        try:
            moment = datetime.fromisoformat(text.strip().upper())
        except ValueError:
            pass
        else:
            try:
                moment = as_utc(moment)
            except OverflowError:        # the zone offset pushes it past year 1 or 9999
                raise out_of_range from None
            if not _EARLIEST <= moment <= _LATEST:
                raise out_of_range
            return moment
    raise MailopsError(f"{option} '{text}': not a time; use e.g. 2026-11-01, '2026-11-01 08:00', 2h, 1d or today")

"""Read the Postfix log of mail hosts into delivery statistics, streaming.

Source: the systemd journal (Debian 12 without rsyslog: Postfix logs to
syslog, journald keeps it with SYSLOG_FACILITY=2) or a log file on the host
(``/var/log/mail.log`` with rsyslog), or a local file. Lines are parsed as
they arrive over SSH and never kept, so a month of logs costs no more memory
than an hour, and a line longer than any Postfix line (MAX_LINE_BYTES) is read in
bounded chunks and counted as skipped, never held whole.  A local file is read
in blocks of BLOCK_BYTES, and the whole lines of each parsed as one string
(LogStats.feed_block): the same lines, cut the same way, a block at a time.
"""

from __future__ import annotations

import gzip
import shlex
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from mailops.errors import MailopsError
from mailops.ops.logtime import parse_since
from mailops.ops.postfixlog import LogStats

if TYPE_CHECKING:
    from mailops.ops.remote import MailHost

# Postfix's own log lines are a few KiB at most (a long SMTP reply, many recipients);
# a longer line is not one of them and is skipped rather than held
MAX_LINE_BYTES = 64 * 1024
# a local file is read this much at a time and its whole lines parsed as one string
BLOCK_BYTES = 128 * 1024

# progress(host, lines_so_far, bytes_so_far, total_bytes_or_None)
Progress = Callable[[str, int, int, "int | None"], None]


def journal_command(since: datetime | None, until: datetime | None = None) -> str:
    cmd = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "SYSLOG_FACILITY=2"]
    if since:
        cmd += ["--since", _journal_time(since)]
    if until:
        cmd += ["--until", _journal_time(until)]
    return shlex.join(cmd)


def _journal_time(moment: datetime) -> str:
    # journalctl reads times in the host's zone unless told: say UTC explicitly; the year
    # padded by hand, as strftime's %Y writes year 1 as "1"
    moment = moment.astimezone(timezone.utc)
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S} UTC"


def file_command(path: str) -> str:
    quoted = shlex.quote(path)
    return f"zcat -f -- {quoted}" if path.endswith(".gz") else f"cat -- {quoted}"


def read(*, inventory: str, host: str | None = None, since: str | None = None, until: str | None = None,
         log_file: str | None = None, local_file: Path | None = None, progress: Progress | None = None,
         now: datetime | None = None) -> LogStats:
    """The statistics the ``stats`` and ``bounces`` commands show: ``since``/``until`` as the
    operator typed them (see parse_since), from a local file or else the inventory's hosts."""
    now = now or datetime.now(timezone.utc)
    since_at = parse_since(since, now) if since is not None else None
    until_at = parse_since(until, now, option="--until") if until is not None else None
    if since_at and until_at and since_at > until_at:
        raise MailopsError(f"--since '{since}' is after --until '{until}': nothing could match; swap them")
    if local_file is not None:
        return collect_local(local_file, since=since_at, until=until_at, progress=progress, now=now)
    from mailops.inventory import resolve_inventory_path     # not needed for a local file: imported late
    from mailops.ops.remote import mail_hosts

    hosts = mail_hosts(resolve_inventory_path(inventory), host)
    return collect(hosts, since=since_at, until=until_at, log_file=log_file, progress=progress, now=now)


def collect(hosts: list[MailHost], *, since: datetime | None = None, until: datetime | None = None,
            log_file: str | None = None, progress: Progress | None = None, now: datetime | None = None,
            on_event: Callable | None = None) -> LogStats:
    """Stream each host's Postfix log through one LogStats (``on_event``: see LogStats)."""
    from mailops.ops.remote import Remote

    stats = LogStats(since=since, until=until, now=now, on_event=on_event)
    for host in hosts:
        with Remote(host) as remote:
            total = None
            if log_file:
                code, out, _ = remote.run_with_stderr(f"stat -c %s -- {shlex.quote(log_file)}")
                if code != 0:
                    raise MailopsError(f"{host.name}: no log file {log_file} (use the journal: leave out --log-file)")
                total = int(out.strip() or 0)
            command = file_command(log_file) if log_file else journal_command(since, until)
            _stream(stats, host.name, remote.stream_lines, command, total, progress)
    return stats


def collect_local(path: Path, *, since: datetime | None = None, until: datetime | None = None,
                  progress: Progress | None = None, now: datetime | None = None,
                  on_event: Callable | None = None) -> LogStats:
    """Parse a log file on this machine (e.g. one copied off a host, or rotated; .gz is
    decompressed). A damaged or truncated .gz is an error naming the file, not a partial result."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not a regular file" if path.exists() else "no such log file"
        raise MailopsError(f"{path}: {what}; give the path of a log file (plain or .gz)")
    stats = LogStats(since=since, until=until, now=now, on_event=on_event)
    compressed = path.suffix == ".gz"
    total = path.stat().st_size
    name = str(path)
    read = [0]

    def on_bytes(n: int) -> None:
        read[0] += n

    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as fh:
            for block in line_blocks(fh, on_bytes):
                if block is None:
                    stats.skip_too_long()
                else:
                    stats.feed_block(block)
                if progress:
                    progress(name, stats.lines, read[0], total)
        if progress:
            progress(name, stats.lines, read[0], total)
    except gzip.BadGzipFile as exc:
        if stats.lines == 0 and "Not a gzipped file" in str(exc):
            raise MailopsError(f"{path}: not gzip data although the name ends in .gz; "
                               "decompress it properly or rename it") from None
        raise MailopsError(f"{path}: damaged gzip data after {stats.lines} line(s) ({exc})") from None
    except EOFError:
        raise MailopsError(f"{path}: the gzip data ends early after {stats.lines} line(s) (truncated, or still "
                           "being written); copy it again") from None
    except zlib.error as exc:
        raise MailopsError(f"{path}: damaged gzip data after {stats.lines} line(s) ({exc})") from None
    except OSError as exc:
        raise MailopsError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return stats


def bounded_lines(fh: BinaryIO, on_bytes: Callable[[int], None]) -> Iterator[str | None]:
    """The lines of a binary stream, decoded; None for a line over MAX_LINE_BYTES, whose
    rest is read and dropped chunk by chunk."""
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        on_bytes(len(raw))
        if len(raw) <= MAX_LINE_BYTES:
            yield raw.decode("utf-8", "replace")
            continue
        while raw and not raw.endswith(b"\n"):
            raw = fh.readline(MAX_LINE_BYTES)
            on_bytes(len(raw))
        yield None


def line_blocks(fh: BinaryIO, on_bytes: Callable[[int], None],
                block_bytes: int | None = None) -> Iterator[str | None]:
    """The lines of a binary stream as bounded_lines splits them, but whole runs of them at a
    time: each string holds whole lines, decoded (every one ends in "\\n" but the stream's
    last); None stands for a line over MAX_LINE_BYTES, whose rest is read and dropped.  At
    most one read and one partial line (up to MAX_LINE_BYTES) are held."""
    block_bytes = block_bytes or BLOCK_BYTES
    carry = b""             # the start of a line the next read continues
    skipping = False        # inside an over-long line: drop up to its newline
    while True:
        chunk = fh.read(block_bytes)
        if not chunk:
            break
        on_bytes(len(chunk))
        if skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                continue
            skipping = False
            chunk = chunk[newline + 1:]
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n") + 1          # after the last whole line
        # whole lines, each checked against the cap: a newline within the next
        # MAX_LINE_BYTES bytes of a line's start ends that line and every line before it
        run = start = 0
        while start < end:
            last = data.rfind(b"\n", start, min(start + MAX_LINE_BYTES, end))
            if last >= 0:
                start = last + 1
                continue
            if run < start:
                yield data[run:start].decode("utf-8", "replace")
            yield None
            start = run = data.find(b"\n", start + MAX_LINE_BYTES) + 1    # found: end > start + cap
        if run < end:
            yield data[run:end].decode("utf-8", "replace")
        carry = data[end:]
        if len(carry) > MAX_LINE_BYTES:
            yield None
            carry, skipping = b"", True
    if carry:
        yield carry.decode("utf-8", "replace")


def _stream(stats: LogStats, name: str, source, command: str, total: int | None, progress: Progress | None) -> None:
    seen = [0, 0]

    def on_bytes(n: int) -> None:
        seen[1] += n

    for line in source(command, on_bytes):
        if line is None:
            stats.skip_too_long()
        else:
            stats.feed(line)
        seen[0] += 1
        if progress and seen[0] % 5000 == 0:
            progress(name, seen[0], seen[1], total)
    if progress:
        progress(name, seen[0], seen[1], total)

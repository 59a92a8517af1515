"""Read the Postfix log of mail hosts into delivery statistics, streaming.

Source: the systemd journal (Debian 12 without rsyslog: Postfix logs to
syslog, journald keeps it with SYSLOG_FACILITY=2) or a log file on the host
(``/var/log/mail.log`` with rsyslog), or a local file. Lines are parsed as
they arrive over SSH and never kept, so a month of logs costs no more memory
than an hour.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mailops.errors import MailopsError
from mailops.ops.postfixlog import LogStats
from mailops.ops.remote import MailHost, Remote

# progress(host, lines_so_far, bytes_so_far, total_bytes_or_None)
Progress = Callable[[str, int, int, "int | None"], None]


def journal_command(since: datetime | None, until: datetime | None = None) -> str:
    cmd = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "SYSLOG_FACILITY=2"]
    # journalctl reads times in the host's zone unless told: say UTC explicitly
    if since:
        cmd += ["--since", since.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")]
    if until:
        cmd += ["--until", until.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")]
    return shlex.join(cmd)


def file_command(path: str) -> str:
    quoted = shlex.quote(path)
    return f"zcat -f -- {quoted}" if path.endswith(".gz") else f"cat -- {quoted}"


def collect(hosts: list[MailHost], *, since: datetime | None = None, until: datetime | None = None,
            log_file: str | None = None, progress: Progress | None = None, now: datetime | None = None) -> LogStats:
    """Stream each host's Postfix log through one LogStats."""
    stats = LogStats(since=since, until=until, now=now)
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
                  progress: Progress | None = None, now: datetime | None = None) -> LogStats:
    """Parse a log file on this machine (e.g. one copied off a host, or rotated)."""
    import gzip

    if not path.is_file():
        raise MailopsError(f"{path}: no such log file")
    stats = LogStats(since=since, until=until, now=now)
    opener = gzip.open if path.suffix == ".gz" else open
    total = path.stat().st_size

    def lines(_cmd: str, on_bytes=None):
        with opener(path, "rb") as fh:
            for raw in fh:
                if on_bytes:
                    on_bytes(len(raw))
                yield raw.decode("utf-8", "replace")

    _stream(stats, str(path), lines, "", total, progress)
    return stats


def _stream(stats: LogStats, name: str, source, command: str, total: int | None, progress: Progress | None) -> None:
    seen = [0, 0]

    def on_bytes(n: int) -> None:
        seen[1] += n

    for line in source(command, on_bytes):
        stats.feed(line)
        seen[0] += 1
        if progress and seen[0] % 5000 == 0:
            progress(name, seen[0], seen[1], total)
    if progress:
        progress(name, seen[0], seen[1], total)

"""``mailops stats``: delivery statistics from the Postfix logs (logic in mailops.ops.logs
and mailops.ops.postfixlog); `source_options` and `read_stats` serve `mailops bounces` too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailops.cli.base import inventory_option
from mailops.ops import logs
from mailops.ops.postfixlog import STATUSES, LogStats

if TYPE_CHECKING:
    from rich.table import Table

# rich is imported where something is drawn: `stats --json` draws nothing and starts faster without it


def source_options(fn):
    fn = click.option("--file", "local_file", type=click.Path(path_type=Path),
                      help="Parse this local log file instead of asking the hosts.")(fn)
    fn = click.option("--log-file", metavar="PATH",
                      help="Read this log file on the host (e.g. /var/log/mail.log) instead of the journal.")(fn)
    fn = click.option("--until", metavar="TIME", help="Ignore lines after this time.")(fn)
    fn = click.option("--since", metavar="TIME",
                      help="Only lines since this time: 2026-11-01, '2026-11-01 08:00', 2h, 1d, today.")(fn)
    fn = inventory_option(fn)
    return click.argument("host", required=False)(fn)


def read_stats(host, inventory_name, since, until, log_file, local_file, quiet: bool) -> LogStats:
    if quiet:           # no progress bar to draw
        return logs.read(inventory=inventory_name, host=host, since=since, until=until, log_file=log_file,
                         local_file=local_file)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(stderr=True)
    # a progress bar only where a person watches and the log is long enough to wait for
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[lines]} lines"),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, lines: int, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"reading {name}", total=total, lines=0)
            bar.update(tasks[name], completed=done, lines=lines)

        return logs.read(inventory=inventory_name, host=host, since=since, until=until, log_file=log_file,
                         local_file=local_file, progress=progress)


def _counts_table(title: str, rows: dict, key_name: str) -> Table:
    from rich.table import Table

    t = Table(key_name, *STATUSES, title=title, title_justify="left")
    for key, c in rows.items():
        t.add_row(key, *(str(c.get(s, 0)) for s in STATUSES))
    return t


@click.command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--top", default=10, show_default=True, help="How many reasons to show.")
def stats(host, inventory_name, since, until, log_file, local_file, as_json, top) -> None:
    """Sent, deferred, bounced and rejected counts by destination and hour, DSN codes, top reasons."""
    result = read_stats(host, inventory_name, since, until, log_file, local_file, quiet=as_json)
    report = result.report(top=top)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console

    console = Console()
    totals = ", ".join(f"{s} {report['totals'].get(s, 0)}" for s in STATUSES)
    console.print(f"{report['postfix_lines']} Postfix lines of {report['lines']} "
                  f"({report['first'] or '-'} .. {report['last'] or '-'}): {totals}")
    if report["too_long"]:
        console.print(f"{report['too_long']} line(s) longer than {logs.MAX_LINE_BYTES // 1024} KiB skipped "
                      "(not Postfix's)")
    if report["by_domain"]:
        console.print(_counts_table("by destination domain", report["by_domain"], "domain"))
    if report["by_hour"]:
        console.print(_counts_table("by hour (UTC)", report["by_hour"], "hour"))
    if report["dsn"]:
        console.print("DSN codes: " + ", ".join(f"{code} x{n}" for code, n in sorted(report["dsn"].items())))
    for r in report["top_reasons"]:
        console.print(f"  {r['count']:>6} {r['status']:<9} {r['reason'][:150]}")

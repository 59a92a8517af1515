"""``mailops bounces``: bounced recipients from the Postfix logs as suppression lists
(logic in mailops.ops.postfixlog)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup
from mailops.cli.stats import read_stats, source_options
from mailops.ops.postfixlog import bounces_csv


@click.group(cls=MailopsGroup)
def bounces() -> None:
    """Bounced recipients from the Postfix logs, as suppression lists."""


@bounces.command("export")
@source_options
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the hard-bounce CSV here (default: standard output).")
@click.option("--soft-output", type=click.Path(path_type=Path),
              help="Write the soft bounces (deferred, never delivered) as CSV here; "
                   "without it they are listed on standard error.")
def export(host, inventory_name, since, until, log_file, local_file, output, soft_output) -> None:
    """Hard bounces (5.x.x) as a CSV suppression list; soft bounces listed separately."""
    result = read_stats(host, inventory_name, since, until, log_file, local_file, quiet=output is None)
    hard, soft = result.hard_bounces(), result.soft_bounces()
    text = bounces_csv(hard)
    err = Console(stderr=True)
    if output:
        _write_new(output, text)
        err.print(f"{len(hard)} hard-bounced recipient(s) written to {output}")
    else:
        click.echo(text, nl=False)
    if soft_output:
        _write_new(soft_output, _soft_csv(soft))
        err.print(f"{len(soft)} soft-bounced recipient(s) written to {soft_output}")
    elif soft:
        t = Table("recipient", "deferrals", "last dsn", "last reason", title="soft bounces (not suppressed)",
                  title_justify="left")
        for s in soft:
            t.add_row(s["recipient"], str(s["count"]), s["last_dsn"], s["last_reason"][:100])
        err.print(t)


def _soft_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["recipient", "domain", "count", "last_dsn", "last_reason", "first", "last", "sender"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _write_new(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so an existing list is never left half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

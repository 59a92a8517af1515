"""``mailops bounces``: bounced recipients from the Postfix logs as suppression lists
(logic in mailops.ops.export)."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup
from mailops.cli.stats import read_stats, source_options
from mailops.ops.export import export_bounces

SOFT_SHOWN = 50     # soft bounces listed on standard error without --soft-output


@click.group(cls=MailopsGroup)
def bounces() -> None:
    """Bounced recipients from the Postfix logs, as suppression lists."""


@bounces.command("export")
@source_options
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the hard-bounce CSV here (default: standard output). A new file is private (0600).")
@click.option("--soft-output", type=click.Path(path_type=Path),
              help="Write the soft bounces (deferred, never delivered) as CSV here; "
                   f"without it the first {SOFT_SHOWN} are listed on standard error.")
def export(host, inventory_name, since, until, log_file, local_file, output, soft_output) -> None:
    """Hard bounces (5.x.x) as a CSV suppression list; soft bounces listed separately."""
    read = partial(read_stats, host, inventory_name, since, until, log_file, local_file, quiet=output is None)
    result = export_bounces(read, output=output, soft_output=soft_output, stdout=sys.stdout,
                            soft_preview=SOFT_SHOWN)
    err = Console(stderr=True)
    if output:
        err.print(f"{result.hard} hard-bounced recipient(s) written to {output}")
    if soft_output:
        err.print(f"{result.soft} soft-bounced recipient(s) written to {soft_output}")
    elif result.soft_preview:
        t = Table("recipient", "deferrals", "last dsn", "last reason", title="soft bounces (not suppressed)",
                  title_justify="left")
        for s in result.soft_preview:
            t.add_row(s["recipient"], str(s["count"]), s["last_dsn"], s["last_reason"][:100])
        err.print(t)
        if result.soft > len(result.soft_preview):
            err.print(f"... and {result.soft - len(result.soft_preview)} more: use --soft-output FILE for all")

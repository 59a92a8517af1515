"""``mailops warmup``: the new-IP warm-up schedule (logic in mailops.ops.warmup)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup, inventory_option
from mailops.ops import warmup as ops_warmup


@click.group(cls=MailopsGroup)
def warmup() -> None:
    """Warm-up of a new sending IP: daily allowance and what was sent."""


@warmup.command("status")
@click.argument("host", required=False)
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(host: str | None, inventory_name: str, as_json: bool) -> None:
    """Today's allowance by the schedule, accepted and sent today, per host."""
    s = ops_warmup.status(inventory_name, host)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    console = Console()
    if s["allowance"] is None:
        console.print(f"{s['date']}: the warm-up that started {s['start']} is over; no daily allowance")
    elif s["day"] is None:
        console.print(f"{s['date']}: before the warm-up starts ({s['start']}): the first step's allowance "
                      f"of {s['allowance']} messages applies")
    else:
        console.print(f"{s['date']}: warm-up day {s['day']} since {s['start']}: allowance "
                      f"{s['allowance']} messages today")
    t = Table("host", "accepted today", "sent today", "deferred", "bounced", "remaining", title_justify="left")
    for name, h in s["hosts"].items():
        accepted = "-" if h["accepted_today"] is None else str(h["accepted_today"])
        remaining = "-" if h["remaining"] is None else str(h["remaining"])
        t.add_row(name, accepted, str(h["sent_today"]), str(h["deferred_today"]), str(h["bounced_today"]),
                  remaining)
    console.print(t)
    if any(not h["enforced"] for h in s["hosts"].values()):
        console.print("note: hosts without the policy service (role policyd) do not enforce the allowance; "
                      "converge them with mailops provision")

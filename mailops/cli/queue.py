"""``mailops queue``: the Postfix queue of the mail hosts (logic in mailops.ops.queue)."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup, inventory_option
from mailops.inventory import resolve_inventory_path
from mailops.ops import queue as q
from mailops.ops.remote import mail_hosts


class _QueueGroup(MailopsGroup):
    """`mailops queue [HOST]` shows the queue; `mailops queue ACTION [HOST]` acts on it."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_QueueGroup)
def queue() -> None:
    """Show the Postfix queue, or flush, hold, release or delete messages in it."""


def _hosts(inventory_name: str, host: str | None):
    return mail_hosts(resolve_inventory_path(inventory_name), host)


def _age(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return " ".join(parts[:2]) or "0s"


@queue.command("show")
@click.argument("host", required=False)
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--list", "list_messages", is_flag=True, help="Also list every queued message.")
def show(host: str | None, inventory_name: str, as_json: bool, list_messages: bool) -> None:
    """Counts by queue and destination domain, the oldest message, the top deferral reasons."""
    out = q.summaries(_hosts(inventory_name, host), with_messages=list_messages or as_json)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    console = Console()
    for name, s in out.items():
        counts = ", ".join(f"{k} {v}" for k, v in s["by_queue"].items())
        oldest = f"; oldest {_age(s['oldest']['age_seconds'])} ({s['oldest']['queue_id']})" if s["oldest"] else ""
        console.print(f"[bold]{name}[/bold]: {s['messages']} message(s), {s['recipients']} recipient(s): "
                      f"{counts}{oldest}")
        if s["by_domain"]:
            t = Table("destination", "active", "deferred", "hold", title_justify="left")
            for domain, c in s["by_domain"].items():
                t.add_row(domain or "(none)", *(str(c.get(k, 0)) for k in ("active", "deferred", "hold")))
            console.print(t)
        for r in s["top_deferral_reasons"]:
            console.print(f"  {r['count']:>5} x {r['reason'][:150]}")
        if list_messages:
            for m in s["queue"]:
                rcpts = ", ".join(r["address"] for r in m["recipients"])
                console.print(f"  {m['queue_id']:<12} {m['queue']:<9} {m['arrival']} {m['sender'] or '<>'} -> {rcpts}")


def _selection_options(fn):
    fn = click.option("--sender", metavar="ADDRESS", help="Only messages from this sender (or @domain).")(fn)
    fn = click.option("--domain", metavar="DOMAIN", help="Only messages to this recipient domain.")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print the plan and result as JSON.")(fn)
    fn = inventory_option(fn)
    return click.argument("host", required=False)(fn)


_DONE = {"delete": "removed", "hold": "held", "release": "released", "flush": "flushed"}


def _act(action: str, host, inventory_name, domain, sender, as_json, yes=True) -> None:
    selection = q.Selection(domain=domain, sender=sender)
    console = Console(stderr=as_json)

    def show(step: q.HostStep) -> None:
        name = step.host
        if step.stage == "flushed-all":
            console.print(f"{name}: every deferred message scheduled for delivery now")
        elif step.stage == "planned":
            p = step.plan
            console.print(f"{name}: {action} {len(p.messages)} message(s) {selection.describe()}")
            for m in p.messages:
                rcpts = ", ".join(r.address for r in m.recipients)
                console.print(f"  {m.queue_id:<12} {m.queue:<9} {m.sender or '<>'} -> {rcpts}")
            if p.shared:
                console.print(f"  [yellow]note[/yellow]: {len(p.shared)} of them also go to other domains; "
                              f"the {action} applies to the whole message")
        elif step.stage == "declined":
            console.print(f"{name}: nothing done")
        else:
            result = step.result
            console.print(f"{name}: {_DONE[action]} {len(result.done)}: {' '.join(result.done) or '-'}")
            if result.missing:
                console.print(f"{name}: {len(result.missing)} had already left the queue: "
                              f"{' '.join(result.missing)}")

    def ask(name: str, p: q.Plan) -> bool:
        if not sys.stdin.isatty():
            raise click.ClickException(f"{action} of {len(p.messages)} message(s) planned on {name}; "
                                       "nothing done: rerun with --yes to apply")
        return click.confirm(f"{action} these {len(p.messages)} message(s) on {name}?", err=True)

    report = q.act(_hosts(inventory_name, host), action, selection, confirm=None if yes else ask, progress=show)
    if as_json:
        click.echo(json.dumps(report, indent=2))


@queue.command()
@_selection_options
def flush(host, inventory_name, domain, sender, as_json) -> None:
    """Try delivery of deferred messages now (all, or those chosen)."""
    _act("flush", host, inventory_name, domain, sender, as_json)


@queue.command()
@_selection_options
def hold(host, inventory_name, domain, sender, as_json) -> None:
    """Put the chosen messages on hold (kept, not delivered)."""
    if not domain and sender is None:
        raise click.UsageError("choose the messages with --domain and/or --sender")
    _act("hold", host, inventory_name, domain, sender, as_json)


@queue.command()
@_selection_options
def release(host, inventory_name, domain, sender, as_json) -> None:
    """Release held messages (all held, or those chosen)."""
    _act("release", host, inventory_name, domain, sender, as_json)


@queue.command()
@_selection_options
@click.option("--yes", is_flag=True, help="Apply the plan without asking.")
def delete(host, inventory_name, domain, sender, as_json, yes) -> None:
    """Delete the chosen messages: shows the plan, asks, reports exactly what was removed."""
    _act("delete", host, inventory_name, domain, sender, as_json, yes=yes)

"""``mailops dns plan`` and ``mailops dns sync`` (logic in mailops.dns.sync)."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup, inventory_option
from mailops.dkim.store import KeyStore
from mailops.dns.plan import DEFAULT_THRESHOLD
from mailops.dns.sync import Plan, make_plan, sync_inventory

# dns commands resolve their providers' secrets while loading, so a bad one is named at its field
DNS_SECRETS = ("mailops_dns_providers", "mailops_reverse_dns_providers")
from mailops.inventory import load

EXIT_PENDING = 2
_COLOR = {"create": "green", "update": "yellow", "delete": "red", "adopt": "cyan"}


def _console(err: bool = False) -> Console:
    console = Console(stderr=err)
    return console if console.is_terminal else Console(stderr=err, width=200)


def _short(value: str | None, limit: int = 70) -> str:
    if value is None:
        return ""
    return value if len(value) <= limit else value[: limit - 12] + "..." + value[-9:]


def show_plan(plan: Plan, console: Console) -> None:
    for zp in plan.zones:
        rows = zp.rows()
        if not rows and not zp.conflicts:
            continue
        table = Table(title=f"{zp.zone} ({zp.provider}, {zp.existing_count} records now)", title_justify="left")
        for col in ("action", "name", "type", "change", "ttl"):
            table.add_column(col)
        for r in rows:
            change = (f"{_short(r.get('old'))} -> {_short(r['new'])}" if r["action"] == "update"
                      else _short(r.get("new", r.get("old"))))
            color = _COLOR[r["action"]]
            table.add_row(f"[{color}]{r['action']}[/{color}]", r["name"], r["type"], change, str(r["ttl"]))
        console.print(table)
        for c in zp.conflicts:
            console.print(f"[red]conflict[/red] {c}")
        if zp.refused:
            console.print(f"[red]refused[/red] {zp.refused}")
    for ch in plan.ptr_changes:
        console.print(f"[yellow]PTR[/yellow] {ch.address}: {ch.old or '(none)'} -> {ch.hostname} ({ch.provider})")
    for w in plan.warnings:
        console.print(f"[yellow]warning[/yellow] {w}")
    in_sync = sum(1 for z in plan.zones if not z.rows())
    console.print(f"{plan.pending} change(s) pending in {len(plan.zones) - in_sync} of {len(plan.zones)} zone(s), "
                  f"{len(plan.ptr_changes)} PTR; {len(plan.conflicts)} conflict(s)")


plan_options = [
    inventory_option,
    click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON."),
    click.option("--force", is_flag=True, help="Take over conflicting records and pass the safety threshold."),
    click.option("--threshold", type=click.FloatRange(0, 1), default=DEFAULT_THRESHOLD, show_default=True,
                 help="Largest share of a zone's records a plan may update or delete."),
    click.option("--check", is_flag=True, help=f"Exit {EXIT_PENDING} when changes are pending (for CI)."),
]


def _with_plan_options(func):
    for option in reversed(plan_options):
        func = option(func)
    return func


@click.group(cls=MailopsGroup)
def dns() -> None:
    """Publish the records the inventory needs (A/AAAA, MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, PTR).

    mailops only changes records it owns (Cloudflare: the record comment
    managed-by=mailops; RFC 2136: the TXT registry at _mailops-owner.<zone>).
    """


@dns.command("plan")
@_with_plan_options
def plan_cmd(inventory_name: str, as_json: bool, force: bool, threshold: float, check: bool) -> None:
    """Show what `dns sync` would create, update and delete, per zone."""
    inv = load(inventory_name, secrets=DNS_SECRETS)
    plan, _ = make_plan(inv, KeyStore.for_inventory(inv), force=force, threshold=threshold)
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        show_plan(plan, _console())
    if check and plan.pending:
        sys.exit(EXIT_PENDING)


@dns.command("sync")
@_with_plan_options
@click.option("--apply", "do_apply", is_flag=True, help="Apply the plan (otherwise only shown, or asked).")
def sync_cmd(inventory_name: str, as_json: bool, force: bool, threshold: float, check: bool, do_apply: bool) -> None:
    """Plan, then apply with --apply (or after a yes), then read back through the provider and DNS."""
    console = _console(err=as_json)

    def confirm(plan: Plan) -> bool:
        if do_apply or check or as_json or not sys.stdin.isatty():
            return do_apply
        return click.confirm(f"Apply {plan.pending} change(s)?", default=False)

    inv = load(inventory_name, secrets=DNS_SECRETS)
    result = sync_inventory(inv, KeyStore.for_inventory(inv), force=force, threshold=threshold, confirm=confirm,
                            on_plan=(lambda plan: None) if as_json else (lambda plan: show_plan(plan, console)),
                            on_step=lambda step: console.print(f"applying {step}"))
    if result.plan.pending and not result.applied and not as_json:
        console.print("nothing applied; run `mailops dns sync --apply` to apply this plan")
    for problem in result.readback:
        console.print(f"[red]read-back mismatch[/red] {problem}")
    if result.read_back and not result.readback and not as_json:
        console.print("read back through the provider and the authoritative servers: all records as planned")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    if result.readback:
        sys.exit(1)
    if check and result.plan.pending and not result.applied:
        sys.exit(EXIT_PENDING)

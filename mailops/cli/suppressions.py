"""``mailops suppressions``: the suppression lists of the mail hosts (logic in mailops.ops.returnpath)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup, inventory_option
from mailops.inventory import load, resolve_inventory_path
from mailops.ops import returnpath as rp
from mailops.returnpath.suppression import CAUSES, GLOBAL


@click.group(cls=MailopsGroup)
def suppressions() -> None:
    """Recipients the mail hosts refuse to send to (hard bounces, complaints, soft bounces, manual)."""


def _scope_options(fn):
    fn = click.option("--global", "global_", is_flag=True, help="Only entries for every sending domain (scope *).")(fn)
    fn = click.option("--domain", metavar="DOMAIN", help="Only entries for mail from this sending domain.")(fn)
    return fn


def _scope(domain: str | None, global_: bool, default: str | None) -> str | None:
    if domain and global_:
        raise click.UsageError("give --domain D or --global, not both")
    return domain if domain else GLOBAL if global_ else default


def _context(inventory_name: str):
    inv = load(resolve_inventory_path(inventory_name))
    return inv, rp.runner_for(inv)


def _unreachable(result: dict, console: Console) -> None:
    for name, why in sorted(result.get("unreachable", {}).items()):
        console.print(f"[red]{name}: not reached[/red]: {why}", highlight=False)
    if result.get("unreachable"):
        sys.exit(1)


@suppressions.command("list")
@_scope_options
@click.option("--cause", type=click.Choice(CAUSES), help="Only entries with this cause.")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def list_(domain, global_, cause, inventory_name, as_json) -> None:
    """Entries in force on any mail host, with the hosts each is missing on (not yet replicated)."""
    inv, runner = _context(inventory_name)
    result = rp.list_suppressions(inv.hosts, runner, scope=_scope(domain, global_, None), cause=cause)
    err = Console(stderr=True)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        t = Table("target", "scope", "cause", "since", "detail", "missing on", title_justify="left",
                  title=f"{len(result['entries'])} suppression(s) on {', '.join(result['hosts']) or 'no host'}")
        for e in result["entries"]:
            t.add_row(e["target"], e["scope"], e["cause"], e["since"][:19].replace("T", " "), e["detail"][:60],
                      ", ".join(e["missing"]) or "-", style="yellow" if e["missing"] else None)
        Console().print(t)
    _unreachable(result, err)


@suppressions.command("add")
@click.argument("target")
@click.option("--domain", metavar="DOMAIN", help="Only for mail from this sending domain (default: global).")
@click.option("--cause", type=click.Choice(CAUSES), default="manual", show_default=True)
@click.option("--detail", default="", help="Why (kept with the entry, shown in the RCPT reply).")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def add(target, domain, cause, detail, inventory_name, as_json) -> None:
    """Suppress TARGET (an address, or a whole domain) on every mail host."""
    inv, runner = _context(inventory_name)
    result = rp.add_suppression(inv.hosts, runner, target, scope=domain or GLOBAL, cause=cause, detail=detail)
    console = Console(stderr=as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    elif result["entry"]:
        e = result["entry"]
        console.print(f"suppressed {e['target']} (scope {e['scope']}, {e['cause']}) since {e['since'][:19]} "
                      f"on {', '.join(result['applied'])}", highlight=False)
    _unreachable(result, Console(stderr=True))


@suppressions.command("remove")
@click.argument("target")
@click.option("--domain", metavar="DOMAIN", help="The entry for this sending domain (default: the global one).")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def remove(target, domain, inventory_name, as_json) -> None:
    """Lift the suppression of TARGET on every mail host."""
    inv, runner = _context(inventory_name)
    result = rp.remove_suppression(inv.hosts, runner, target, scope=domain or GLOBAL)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    elif result["removed"]:
        Console().print(f"removed {result['target']} (scope {result['scope']}) on {', '.join(result['applied'])}",
                        highlight=False)
    else:
        Console().print(f"{result['target']} (scope {result['scope']}) was not suppressed on "
                        f"{', '.join(result['applied']) or 'any reachable host'}", highlight=False)
    _unreachable(result, Console(stderr=True))


@suppressions.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), help="Default: from the file name (.csv or JSON).")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_(file, fmt, inventory_name, as_json) -> None:
    """Import a CSV (header: target,scope,cause,since,detail,expires,...) or JSON list; all rows or none."""
    inv, runner = _context(inventory_name)
    result = rp.import_suppressions(inv.hosts, runner, file, fmt)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        Console().print(f"{result['entries']} entr{'y' if result['entries'] == 1 else 'ies'} from {file} merged into "
                        f"{', '.join(result['applied']) or 'no host'}", highlight=False)
    _unreachable(result, Console(stderr=True))


@suppressions.command("export")
@_scope_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write here (default: standard output). A new file is private (0600).")
@inventory_option
def export(domain, global_, fmt, output, inventory_name) -> None:
    """The merged entries in force as CSV or JSON (what `import` reads)."""
    inv, runner = _context(inventory_name)
    text, listing = rp.export_suppressions(inv.hosts, runner, fmt, scope=_scope(domain, global_, None))
    if output is None:
        sys.stdout.write(text)
    else:
        rp.write_export(text, output)
        Console(stderr=True).print(f"{len(listing['entries'])} entries written to {output}", highlight=False)
    _unreachable(listing, Console(stderr=True))

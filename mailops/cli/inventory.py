"""``mailops inventory``: check an inventory directory (all logic in mailops.inventory)."""

from __future__ import annotations

import sys

import click

from mailops.cli.base import echo_problems
from mailops.inventory import InventoryError, display_path, load, resolve_inventory_path


@click.group()
def inventory() -> None:
    """Read and check Ansible inventories (inventories/NAME/)."""


@inventory.command("check")
@click.argument("name", required=False)
def check(name: str | None) -> None:
    """Check inventory NAME (a directory, or a name under ./inventories/; default: $MAILOPS_INVENTORY,
    else ./inventory/, else the only ./inventories/NAME/).

    Prints one line per problem and exits 1, or a one-line summary. Secrets whose content
    mailops can check (the return-path key) are read too, never shown.
    """
    path = resolve_inventory_path(name)
    try:
        inv = load(path, secrets=True)
    except InventoryError as exc:
        echo_problems(exc)
        sys.exit(1)
    hosts, domains = len(inv.hosts), len(inv.domains)
    click.echo(f"{display_path(path)}: OK ({hosts} host{'s' if hosts != 1 else ''}, "
               f"{domains} domain{'s' if domains != 1 else ''})")

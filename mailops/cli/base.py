"""Pieces every command group shares: one-line errors and the inventory option."""

from __future__ import annotations

import sys

import click

from mailops.errors import MailopsError
from mailops.inventory import InventoryError

# No built-in default: without -i the library picks $MAILOPS_INVENTORY, ./inventory/ or the only
# ./inventories/NAME/, else says how to choose (mailops.inventory.paths.default_inventory).
INVENTORY_HELP = ("Inventory directory, or a NAME under ./inventories/ "
                  "[default: $MAILOPS_INVENTORY, else ./inventory/, else the only ./inventories/NAME/].")

inventory_option = click.option("-i", "--inventory", "inventory_name", default=None, metavar="DIR|NAME",
                                help=INVENTORY_HELP)


def echo_problems(exc: InventoryError, err: bool = False) -> None:
    """An unusable inventory: every problem, one line each (``file: field: what is wrong, how to fix``)."""
    for problem in exc.problems:
        click.echo(str(problem), err=err)


class MailopsGroup(click.Group):
    """Turns library errors into one clear line and exit code 1 (also when a group runs on its own)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InventoryError as exc:
            echo_problems(exc, err=True)
            sys.exit(1)
        except MailopsError as exc:
            click.echo(f"mailops: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("mailops: interrupted", err=True)
            sys.exit(130)

"""Pieces every command group shares: one-line errors and the inventory option."""

from __future__ import annotations

import sys

import click

from mailops.errors import MailopsError
from mailops.inventory import InventoryError

inventory_option = click.option(
    "-i", "--inventory", "inventory_name", default="lab", show_default=True, metavar="NAME",
    help="Inventory directory, or a name under inventories/.")


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

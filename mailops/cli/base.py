"""Pieces every command group shares: one-line errors and the inventory option."""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

import click

from mailops.errors import MailopsError

if TYPE_CHECKING:  # imported when an error needs it: the inventory package pulls in pydantic
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
    """Turns library errors into one clear line and exit code 1 (also when a group runs on its own).

    ``lazy_commands`` maps a command name to "module:attribute", imported when the command is used."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy_commands:
            module, attribute = self.lazy_commands[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MailopsError as exc:
            from mailops.inventory import InventoryError

            if isinstance(exc, InventoryError):
                echo_problems(exc, err=True)
            else:
                click.echo(f"mailops: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("mailops: interrupted", err=True)
            sys.exit(130)

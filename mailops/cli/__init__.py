"""The ``mailops`` command: a thin click layer over the library modules."""

from __future__ import annotations

import sys

import click

from mailops import __version__
from mailops.errors import MailopsError


class MailopsGroup(click.Group):
    """Turns library errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MailopsError as exc:
            click.echo(f"mailops: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("mailops: interrupted", err=True)
            sys.exit(130)


@click.group(cls=MailopsGroup)
@click.version_option(__version__, prog_name="mailops")
def main() -> None:
    """Provision, publish and verify sending mail servers."""


def _register() -> None:
    from mailops.cli import demo, dkim, inventory, lab, provision

    main.add_command(lab.lab)
    main.add_command(provision.provision)
    main.add_command(dkim.dkim)
    main.add_command(inventory.inventory)
    main.add_command(demo.demo)


_register()

"""``mailops init DIR``: write a starter inventory (all logic in mailops.init)."""

from __future__ import annotations

from pathlib import Path

import click

from mailops import init as lib
from mailops.inventory import display_path


@click.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--domain", default=lib.EXAMPLE_DOMAIN, show_default=True, help="The domain the server sends for.")
@click.option("--host", "host", default=None, metavar="FQDN", help="The mail server's name [default: mta1.DOMAIN].")
@click.option("--ipv4", default=None, metavar="ADDRESS", help="Its public IPv4 address.")
@click.option("--ipv6", default=None, metavar="ADDRESS", help="Its public IPv6 address (omit: no IPv6 sending).")
def init(directory: Path, domain: str, host: str | None, ipv4: str | None, ipv6: str | None) -> None:
    """Write a commented starter inventory at DIRECTORY (never over an existing one):
    the example inventory with one host and one sending domain filled in."""
    result = lib.init(directory, domain=domain, host=host, ipv4=ipv4, ipv6=ipv6)
    shown = display_path(result.path)
    click.echo(f"{shown}: starter inventory for {result.domain}, host {result.host}")
    if result.secrets:
        click.echo("before `mailops inventory check` passes, provide these secrets (or point the references elsewhere):")
        for problem in result.secrets:
            click.echo(f"  {problem}")
    click.echo(f"next: edit {shown}/hosts.yml and {shown}/group_vars/all/mailops.yml, then "
               f"`mailops inventory check {shown}` (or export MAILOPS_INVENTORY={shown})")

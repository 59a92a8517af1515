"""``mailops collection build``: the Ansible collection of the roles (logic in mailops.collection)."""

from __future__ import annotations

from pathlib import Path

import click

from mailops import collection as lib


@click.group()
def collection() -> None:
    """The roles and playbooks as the Ansible collection mailops.mailserver."""


@collection.command("build")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where the tarball goes.")
def build(output_dir: Path) -> None:
    """Build mailops-mailserver-VERSION.tar.gz (install it with `ansible-galaxy collection install FILE`)."""
    click.echo(str(lib.build(output_dir)))

"""The ``mailops`` command: a thin click layer over the library modules."""

from __future__ import annotations

import click

from mailops import __version__
from mailops.cli.base import MailopsGroup


# Each command's module is imported only when that command runs (or help lists it):
# `mailops stats` should not pay for the lab, the DNS providers and pydantic.
COMMANDS = {name: f"mailops.cli.{name}:{name}" for name in (
    "lab", "provision", "dkim", "dns", "inventory", "init", "collection", "verify", "queue", "stats",
    "bounces", "warmup", "demo", "suppressions", "reports")}


@click.group(cls=MailopsGroup, lazy_commands=COMMANDS)
@click.version_option(__version__, prog_name="mailops")
def main() -> None:
    """Provision, publish and verify sending mail servers."""

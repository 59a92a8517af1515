"""The ``mailops`` command: a thin click layer over the library modules."""

from __future__ import annotations

import click

from mailops import __version__
from mailops.cli.base import MailopsGroup


# Each command's module is imported only when that command runs (or help lists it):
# `mailops stats` should not pay for the lab, the DNS providers and pydantic.
COMMANDS = {name: f"mailops.cli.{module}:{attr}" for name, module, attr in (
    ("lab", "lab", "lab"), ("provision", "provision", "provision"), ("dkim", "dkim", "dkim"),
    ("dns", "dns", "dns"), ("inventory", "inventory", "inventory"), ("init", "init", "init"),
    ("collection", "collection", "collection"), ("verify", "verify", "verify"), ("queue", "queue", "queue"),
    ("stats", "stats", "stats"), ("bounces", "bounces", "bounces"), ("warmup", "warmup", "warmup"),
    ("demo", "demo", "demo"), ("suppressions", "suppressions", "suppressions"),
    ("reports", "reports", "reports"),
)}


@click.group(cls=MailopsGroup, lazy_commands=COMMANDS)
@click.version_option(__version__, prog_name="mailops")
def main() -> None:
    """Provision, publish and verify sending mail servers."""

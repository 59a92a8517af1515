"""The ``mailops`` command: a thin click layer over the library modules."""

from __future__ import annotations

import click

from mailops import __version__
from mailops.cli.base import MailopsGroup


@click.group(cls=MailopsGroup)
@click.version_option(__version__, prog_name="mailops")
def main() -> None:
    """Provision, publish and verify sending mail servers."""


def _register() -> None:
    from mailops.cli import (bounces, collection, demo, dkim, dns, init, inventory, lab, provision, queue, reports,
                             stats, suppressions, verify, warmup)

    main.add_command(lab.lab)
    main.add_command(provision.provision)
    main.add_command(dkim.dkim)
    main.add_command(dns.dns)
    main.add_command(inventory.inventory)
    main.add_command(init.init)
    main.add_command(collection.collection)
    main.add_command(verify.verify)
    main.add_command(queue.queue)
    main.add_command(stats.stats)
    main.add_command(bounces.bounces)
    main.add_command(warmup.warmup)
    main.add_command(demo.demo)
    main.add_command(suppressions.suppressions)
    main.add_command(reports.reports)


_register()

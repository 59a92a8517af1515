"""`mailops demo`: the whole story on the built-in lab, one command."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from mailops.lab.demo import run_demo
from mailops.lab.config import LabConfig

console = Console()


@click.command()
@click.option("--vps", default=1, show_default=True, type=click.IntRange(1, 40))
def demo(vps: int) -> None:
    """Bring up the lab and show each part working, with the time of each step."""
    t0 = time.monotonic()
    results = run_demo(LabConfig(), vps=vps, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    table = Table(title="mailops demo")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for r in results:
        table.add_row(r.name, f"{r.seconds:.1f}", r.detail)
    console.print(table)
    for r in results:
        for line in r.extra:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
    console.print(f"demo finished in {time.monotonic() - t0:.1f}s. The lab stays up: "
                  "`mailops lab status`, `mailops lab ssh vps1`; remove it with `mailops lab down`.")

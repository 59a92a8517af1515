"""``mailops verify``: DNS, server, security and live-send checks (logic in mailops.verify)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import inventory_option
from mailops.errors import MailopsError
from mailops.inventory import resolve_inventory_path
from mailops.verify.runner import GROUPS, verify as run_verify

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "inconclusive": "magenta"}


def _groups(value: str | None) -> tuple[str, ...]:
    if not value:
        return GROUPS
    groups = tuple(g.strip() for g in value.split(",") if g.strip())
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise click.BadParameter(f"unknown group {bad[0]!r}; choose from {', '.join(GROUPS)}")
    return groups


def show(report, console: Console, *, verbose: bool = False) -> None:
    table = Table(title="mailops verify", title_justify="left")
    for col in ("subject", "group", "check", "status", "detail"):
        table.add_column(col, overflow="fold")
    rows = sorted(report.results, key=lambda r: (r.subject, GROUPS.index(r.group) if r.group in GROUPS else 9, r.name))
    last = None
    for r in rows:
        if not verbose and r.status == "pass":
            continue
        style = _STYLE[r.status]
        table.add_row(r.subject if r.subject != last else "", r.group, r.name, f"[{style}]{r.status}[/{style}]",
                      r.detail[:160])
        last = r.subject
    summary: dict[str, dict[str, int]] = {}
    for r in report.results:
        summary.setdefault(r.subject, {}).setdefault(r.status, 0)
        summary[r.subject][r.status] += 1
    if table.row_count:
        console.print(table)
    for subject in sorted(summary):
        counts = ", ".join(f"[{_STYLE[s]}]{n} {s}[/{_STYLE[s]}]" for s, n in sorted(summary[subject].items()))
        console.print(f"{subject}: {counts}")
    for r in report.results:
        if r.status == "fail":
            console.print(f"[bold red]FAIL[/bold red] {r.subject} {r.name}: {r.detail}\n      fix: {r.fix}")
    timing = ", ".join(f"{g} {s:.1f}s" for g, s in report.seconds.items())
    verdict = "[green]all checks pass[/green]" if report.ok else f"[bold red]{report.count('fail')} failed[/bold red]"
    console.print(f"{verdict} ({report.count('pass')} pass, {report.count('warn')} warn, "
                  f"{report.count('inconclusive')} inconclusive; {timing})")


@click.command("verify")
@inventory_option
@click.option("--only", "only", metavar="GROUPS", help=f"Comma-separated groups to run ({','.join(GROUPS)}).")
@click.option("--domain", "domains", multiple=True, metavar="D", help="Only this sending domain (repeatable).")
@click.option("--host", "hosts", multiple=True, metavar="H", help="Only this mail host (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--junit", "junit", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write a JUnit XML report to FILE (for CI).")
@click.option("-v", "--verbose", is_flag=True, help="List passing checks too.")
def verify(inventory_name: str, only: str | None, domains: tuple[str, ...], hosts: tuple[str, ...],
           as_json: bool, junit: Path | None, verbose: bool) -> None:
    """Prove the whole chain: DNS, the server, its security from outside, and a live send.

    Exit status 1 when any check fails; inconclusive checks (no answer) do not fail the run.
    """
    groups = _groups(only)
    err = Console(stderr=True)
    report = run_verify(resolve_inventory_path(inventory_name), only=groups, domains=list(domains) or None,
                        hosts=list(hosts) or None,
                        on_group=lambda g, s: None if as_json else err.print(f"[dim]{g} checks done in {s:.1f}s[/dim]"))
    if junit:
        try:
            report.write_junit(junit)
        except OSError as exc:
            raise MailopsError(f"--junit {junit}: cannot write ({exc.strerror}); choose a writable path") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console = Console()
        show(report, console if console.is_terminal else Console(width=200), verbose=verbose)
    if not report.ok:
        sys.exit(1)

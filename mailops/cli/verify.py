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
from mailops.verify.baseline import compare, load_baseline, save_state
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


def show_changes(changes, console: Console) -> None:
    if not changes:
        console.print("[green]no change since the baseline[/green]")
        return
    console.print(f"[bold]{len(changes)} change(s) since the baseline:[/bold]")
    for c in changes:
        group, subject, name = c.key
        before, after = c.before or "new", c.after or "gone"
        style = _STYLE.get(c.after or "", "dim")
        console.print(f"  {subject} {group} {name}: {before} -> [{style}]{after}[/{style}]  {c.detail[:140]}")


@click.command("verify")
@inventory_option
@click.option("--only", "only", metavar="GROUPS", help=f"Comma-separated groups to run ({','.join(GROUPS)}).")
@click.option("--domain", "domains", multiple=True, metavar="D", help="Only this sending domain (repeatable).")
@click.option("--host", "hosts", multiple=True, metavar="H", help="Only this mail host (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--junit", "junit", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write a JUnit XML report to FILE (for CI).")
@click.option("-v", "--verbose", is_flag=True, help="List passing checks too.")
@click.option("--sample", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="requirements group: a message your application sends (.eml), judged as the bulk stream.")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Compare with a previous `verify --json` output; what changed is printed first.")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Baseline read from FILE when it exists, and this run written to it (for a daily timer).")
@click.option("--changes-only", is_flag=True,
              help="With --baseline/--state: print only the changes; exit 1 when anything changed, else 0.")
def verify(inventory_name: str, only: str | None, domains: tuple[str, ...], hosts: tuple[str, ...],
           as_json: bool, junit: Path | None, verbose: bool, sample: Path | None, baseline: Path | None,
           state: Path | None, changes_only: bool) -> None:
    """Prove the whole chain: DNS, the server, its security from outside, and a live send.

    Exit status 1 when any check fails; inconclusive checks (no answer) do not fail the run.
    With --changes-only the exit status says whether anything changed since the baseline.
    """
    groups = _groups(only)
    if baseline and state:
        raise MailopsError("--baseline and --state: give one (--state reads and then rewrites its file)")
    if changes_only and not (baseline or state):
        raise MailopsError("--changes-only needs --baseline FILE or --state FILE to compare with")
    previous = None
    if baseline or (state and state.exists()):
        previous = load_baseline(baseline or state)
    sample_bytes = None
    if sample:
        try:
            sample_bytes = sample.read_bytes()
        except OSError as exc:
            raise MailopsError(f"--sample {sample}: cannot read ({exc.strerror}); give an .eml file") from None
    err = Console(stderr=True)
    report = run_verify(resolve_inventory_path(inventory_name), only=groups, domains=list(domains) or None,
                        hosts=list(hosts) or None, sample=sample_bytes,
                        on_group=lambda g, s: None if as_json else err.print(f"[dim]{g} checks done in {s:.1f}s[/dim]"))
    changes = None if previous is None else compare(previous, report.results, groups=groups)
    if state:
        save_state(state, report.to_dict())
    if junit:
        try:
            report.write_junit(junit)
        except OSError as exc:
            raise MailopsError(f"--junit {junit}: cannot write ({exc.strerror}); choose a writable path") from None
    if as_json:
        data = report.to_dict()
        if changes is not None:
            data = {"changes": [c.to_dict() for c in changes], **data}
        click.echo(json.dumps(data, indent=2))
    else:
        console = Console()
        console = console if console.is_terminal else Console(width=200)
        if changes is not None:
            show_changes(changes, console)
        elif state:
            console.print(f"no baseline yet: this run is written to {state} as the next one's")
        if not (changes_only and changes is not None):
            show(report, console, verbose=verbose)
    if changes_only and changes is not None:
        sys.exit(1 if changes else 0)
    if not report.ok:
        sys.exit(1)

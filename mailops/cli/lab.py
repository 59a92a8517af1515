"""`mailops lab`: the local world every capability is proven in."""

from __future__ import annotations

import json
import os

import click
from rich.console import Console
from rich.table import Table

from mailops.lab import core
from mailops.lab.config import DEFAULT_SUITE, SUITES, LabConfig, parse_vps_suites

console = Console()


def _log(msg: str) -> None:
    console.print(f"[dim]lab:[/dim] {msg}")


@click.group()
def lab() -> None:
    """Local lab: fresh-VPS machines, DNS, package proxy and a receiving mail host."""


@lab.command()
@click.option("--vps", default=1, show_default=True, type=click.IntRange(1, 40), help="Number of fresh VPS machines.")
@click.option("--suite", type=click.Choice(SUITES), default=None,
              help=f"Debian suite of new VPS machines (default {DEFAULT_SUITE}, or $MAILOPS_LAB_SUITE).")
@click.option("--vps-suite", "vps_suites", multiple=True, metavar="N=SUITE",
              help="Another suite for VPS number N, e.g. --vps-suite 8=bookworm (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting status as JSON.")
def up(vps: int, suite: str | None, vps_suites: tuple[str, ...], as_json: bool) -> None:
    """Bring the lab up (idempotent: reuses what already runs, whatever its suite;
    `mailops lab reset NAME --suite S` rebuilds one machine with another suite)."""
    result = core.up(_config(suite, vps_suites), vps=vps, log=_log if not as_json else lambda _m: None)
    if as_json:
        click.echo(json.dumps({"seconds": result.seconds, "images": result.images, "started": result.started,
                               "status": result.status}, indent=2))
        return
    for name, info in result.images.items():
        if info.get("built"):
            _log(f"image {name} built in {info['build_seconds']}s ({info['bytes'] / 1e6:.0f} MB)")
    _print_status(result.status)
    console.print(f"lab up in {result.seconds}s; started: {', '.join(result.started) or 'nothing (already up)'}")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show each machine and service with its address and state."""
    st = core.status(LabConfig())
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    _print_status(st)


def _print_status(st: dict) -> None:
    table = Table(title=f"mailops lab ({st['network']['ipv4']}, {st['network']['ipv6']})")
    for col in ("name", "kind", "address", "suite", "state"):
        table.add_column(col)
    net = st["network"]
    table.add_row(net["bridge"], "bridge/gateway", f"{net['gateway_ipv4']}, {net['gateway_ipv6']}",
                  "", "present" if net["present"] else "absent")
    for svc in st["services"]:
        table.add_row(svc["name"].split(" ")[0], svc["name"], svc["address"], "", _color(svc["state"]))
    for m in st["machines"]:
        table.add_row(m["name"], f"{m['role']} {m['fqdn']}", f"{m['ipv4']}, {m['ipv6']}", m["suite"],
                      _color(m["state"]))
    console.print(table)


def _color(state: str) -> str:
    return {"running": "[green]running[/green]", "stopped": "[red]stopped[/red]",
            "degraded": "[yellow]degraded[/yellow]"}.get(state, state)


@lab.command()
def down() -> None:
    """Stop and remove every machine, service, interface and file of the lab."""
    core.down(LabConfig(), log=_log)
    console.print("lab removed; nothing left behind (image and package caches kept for a fast next `lab up`)")


def _config(suite: str | None, vps_suites: tuple[str, ...]) -> LabConfig:
    cfg = LabConfig()
    if suite:
        cfg.suite = suite
    try:
        cfg.vps_suites.update(parse_vps_suites(",".join(vps_suites)))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--vps-suite") from None
    return cfg


@lab.command()
@click.argument("name")
@click.option("--suite", type=click.Choice(SUITES), default=None,
              help="Re-install with this Debian suite (default: the machine's current suite).")
def reset(name: str, suite: str | None) -> None:
    """Replace machine NAME with a pristine copy (like re-installing a VPS)."""
    m = core.reset(LabConfig(), name, log=_log, suite=suite)
    console.print(f"{name} reset: fresh {m['suite']} machine at {m['ipv4']}, {m['ipv6']} "
                  "(new SSH host keys recorded)")


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, command: tuple[str, ...]) -> None:
    """Open an SSH session (or run COMMAND) on lab machine NAME."""
    argv = core.ssh_argv(LabConfig(), name, list(command))
    os.execvp(argv[0], argv)


@lab.command()
@click.option("--since", default="1d", show_default=True,
              help="Start of the reported period: a time or a span back from now (30m, 2h, 1d).")
@click.option("--domain", "domains", multiple=True,
              help="Report only this policy domain (repeatable); a TLS report for it is sent even without sessions.")
@click.option("--kind", "kinds", type=click.Choice(["dmarc", "tls"]), multiple=True,
              help="Which reports (default: both).")
@click.option("--json", "as_json", is_flag=True, help="Print what was sent as JSON.")
def reports(since: str, domains: tuple[str, ...], kinds: tuple[str, ...], as_json: bool) -> None:
    """Make the lab receiver send its DMARC aggregate and TLS-RPT reports, as a mailbox provider does."""
    from mailops.lab import provider_reports
    from mailops.ops.logtime import parse_since

    start = parse_since(since).timestamp()
    result = provider_reports.send_reports(LabConfig(), since=start, domains=list(domains) or None,
                                           kinds=kinds or ("dmarc", "tls"),
                                           log=(lambda _m: None) if as_json else _log)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for reason in result["skipped"]:
        _log(f"[yellow]skipped[/yellow] {reason}")
    console.print(f"{len(result['dmarc'])} DMARC and {len(result['tls'])} TLS report(s) sent by the receiver")

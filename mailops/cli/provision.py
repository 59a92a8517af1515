"""`mailops provision new-vps HOST [--create]`, `mailops provision destroy HOST` and `mailops provision apply`."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mailops import provision as lib
from mailops.ansible import ApplyResult, TaskEvent
from mailops.cli.base import inventory_option
from mailops.cloud.lifecycle import CreateOptions, apply_destroy, create_vps, plan_destroy
from mailops.errors import MailopsError
from mailops.inventory import load, resolve_inventory_path

console = Console(stderr=True)
out = Console()


def _progress_table(rows: dict, task: str, started: float) -> Table:
    table = Table(title=f"converging: {task}"[:100], title_justify="left")
    for col in ("host", "ok", "changed", "failed", "last task", "s"):
        table.add_column(col)
    for host, r in sorted(rows.items()):
        table.add_row(host, str(r["ok"]), f"[yellow]{r['changed']}[/yellow]" if r["changed"] else "0",
                      f"[red]{r['failed']}[/red]" if r["failed"] else "0", r["task"][:50], f"{r['dur']:.1f}")
    table.caption = f"{time.monotonic() - started:.0f}s elapsed"
    return table


@contextmanager
def live_progress(as_json: bool) -> Iterator[Callable[[TaskEvent], None]]:
    """An ``on_event`` callback that renders converge progress: a live table at a terminal,
    else one line per changed or failed task (nothing but failures with --json).

    The live table starts with the first event, so prompts before the converge stay readable."""
    rows: dict[str, dict] = {}
    state = {"task": "starting"}
    started = time.monotonic()
    live = None if as_json or not console.is_terminal else Live(console=console, refresh_per_second=4)

    def on_event(ev: TaskEvent) -> None:
        nonlocal started
        if live is not None and not live.is_started:
            started = time.monotonic()
            live.start()
        if ev.status == "start":
            state["task"] = ev.task
        else:
            r = rows.setdefault(ev.host, {"ok": 0, "changed": 0, "failed": 0, "task": "", "dur": 0.0})
            key = {"ok": "ok", "changed": "changed", "failed": "failed", "unreachable": "failed"}.get(ev.status)
            if key:
                r[key] += 1
            r["task"], r["dur"] = ev.task, ev.duration
            if not as_json and live is None and ev.status in ("changed", "failed", "unreachable"):
                color = "yellow" if ev.status == "changed" else "red"
                console.print(f"[{color}]{ev.status:>9}[/{color}] {ev.host}: {ev.task} ({ev.duration:.1f}s)")
            if ev.status in ("failed", "unreachable") and not as_json:
                console.print(f"[red]FAILED[/red] {ev.host}: {ev.task}: {ev.message}")
        if live is not None:
            live.update(_progress_table(rows, state["task"], started))

    try:
        yield on_event
    finally:
        if live is not None and live.is_started:
            live.stop()


def converge(inv, *, check=False, diff=False, limit=None, tags=None, as_json=False) -> ApplyResult:
    with live_progress(as_json) as on_event:
        return lib.converge(inv, check=check, diff=diff, limit=limit, tags=tags, on_event=on_event)


def report(result: ApplyResult, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
    else:
        table = Table(title=f"{'check' if result.check else 'converge'}: {result.status} in {result.seconds}s")
        for col in ("host", "ok", "changed", "failed", "unreachable", "skipped", "failure"):
            table.add_column(col)
        for h in sorted(result.hosts.values(), key=lambda h: h.host):
            failure = f"{h.failed_task}: {h.failed_message}" if (h.failed or h.unreachable) else ""
            table.add_row(h.host, str(h.ok), str(h.changed), str(h.failed), str(h.unreachable), str(h.skipped),
                          failure[:200])
        out.print(table)
    if not result.ok:
        sys.exit(2)


@click.group()
def provision() -> None:
    """Converge mail hosts with the project's Ansible roles."""


@provision.command("apply")
@inventory_option
@click.option("--check", is_flag=True, help="Dry run: report what would change.")
@click.option("--diff", is_flag=True, help="Show file differences.")
@click.option("--limit", default=None, help="Only these hosts (Ansible pattern).")
@click.option("--tags", default=None, help="Only these roles/tags, e.g. postfix,opendkim.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
def apply_cmd(inventory_name, check, diff, limit, tags, as_json):
    """Converge every mail host of the inventory (in parallel)."""
    inv = load(inventory_name)
    report(converge(inv, check=check, diff=diff, limit=limit, tags=tags, as_json=as_json), as_json)


@provision.command("new-vps")
@click.argument("host")
@inventory_option
@click.option("--expect-fingerprint", default=None, help="The SSH host key fingerprint (SHA256:...) you expect.")
@click.option("--yes", is_flag=True, help="Trust the host key shown without asking (trust on first use).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--create", is_flag=True, help="Create the server at a cloud provider first (or find it by name), "
              "write it into the inventory, publish DNS, converge and verify.")
@click.option("--provider", default="hcloud", show_default=True,
              help="With --create: a reverse DNS provider of type hcloud (its token creates the server).")
@click.option("--server-type", default="cx22", show_default=True)
@click.option("--location", default="fsn1", show_default=True)
@click.option("--image", default="debian-13", show_default=True)
@click.option("--ssh-key", type=click.Path(path_type=Path), default=None,
              help="With --create: the private key Ansible logs in with; its .pub is installed "
                   "[default: the other mail hosts' key, else ~/.ssh/id_ed25519].")
@click.option("--no-ipv6", is_flag=True, help="With --create: no IPv6 /64 (the host sends over IPv4 only).")
@click.option("--no-verify", is_flag=True, help="With --create: stop after the converge.")
def new_vps(host, inventory_name, expect_fingerprint, yes, as_json, create, provider, server_type, location, image,
            ssh_key, no_ipv6, no_verify):
    """First contact with a fresh server: host key, pre-flight checks, full converge.

    With --create, the server is made first: mailops generates its SSH host key and passes it in cloud-init
    user_data, so the key is recorded before first contact (the private host key passes through the
    provider's API). Running it again finds the server by name and continues."""
    if create:
        return _create(host, inventory_name, expect_fingerprint, yes, as_json, CreateOptions(
            provider=provider, server_type=server_type, location=location, image=image, ssh_key=ssh_key,
            ipv6=not no_ipv6), verify=not no_verify)
    inv = load(inventory_name)
    with live_progress(as_json) as on_event:
        result = lib.new_vps(inv, host, expect_fingerprint=expect_fingerprint, confirm=_confirm_key(host, yes),
                             on_trust=_on_trust, on_check=_on_check, on_event=on_event)
    report(result, as_json)


def _confirm_key(host: str, yes: bool):
    def confirm(keys) -> bool:
        for k in keys:
            console.print(f"  {host} host key {k.keytype} {k.fingerprint}")
        if yes:
            console.print("  trusting it (--yes)")
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm("Is this the server's host key (compare with your provider's console)?", err=True)
    return confirm


def _on_trust(trust: lib.TrustDecision) -> None:
    console.print(f"host key {trust.status}: {', '.join(trust.fingerprints)} ({trust.known_hosts})")


def _on_check(c: lib.CheckResult) -> None:
    console.print(f"  {'[green]ok[/green]  ' if c.ok else '[red]FAIL[/red]'} {c.name}: {c.detail}")


def _create(host, inventory_name, expect_fingerprint, yes, as_json, options, verify) -> None:
    from mailops.cli.verify import show

    with live_progress(as_json) as on_event:
        result = create_vps(resolve_inventory_path(inventory_name), host, options,
                            expect_fingerprint=expect_fingerprint, confirm=_confirm_key(host, yes), verify=verify,
                            on_step=lambda text: console.print(text), on_trust=_on_trust, on_check=_on_check,
                            on_event=on_event)
    if as_json:
        out.print_json(json.dumps({"server": result.server.to_dict(), "created": result.created,
                                   "inventory_file": str(result.inventory_file), "seconds": result.seconds,
                                   "converge": result.converge.to_dict(),
                                   "verify": result.report.to_dict() if result.report else None}))
    else:
        if not result.converge.ok:
            report(result.converge, False)
        if result.report is not None:
            show(result.report, console)
        console.print(f"{host}: {'ready' if result.ok else 'NOT ready'} after {result.seconds}s")
    if not result.ok:
        sys.exit(2)


@provision.command("destroy")
@click.argument("host")
@inventory_option
@click.option("--provider", default=None,
              help="The server provider [default: the host's mailops_reverse_dns_provider].")
@click.option("--yes", is_flag=True, help="Apply the plan without asking (needed when not at a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and what was done) as JSON.")
def destroy_cmd(host, inventory_name, provider, yes, as_json):
    """Remove a host made with --create: its server, PTRs, the DNS records only it needed, its inventory entry."""
    from mailops.cli.dns import show_plan

    plan, context = plan_destroy(resolve_inventory_path(inventory_name), host, provider_name=provider)
    if as_json:
        out.print_json(json.dumps(plan.to_dict()))
    else:
        s = plan.server
        console.print(f"destroy {host}:")
        where = f"{s.name} (id {s.id}, {s.server_type}, {s.location}, {s.ipv4})" if s else "none"
        console.print(f"  server: {where} at {plan.provider}")
        for address, ptr in plan.ptrs:
            console.print(f"  PTR {address}: {ptr or '(none)'} (removed with the server's address)")
        if plan.dns is not None:
            show_plan(plan.dns, console)
        entry = f"{host} in {plan.inventory_file}" if plan.inventory_file else "no entry"
        console.print(f"  inventory: {entry}" + (f"; its known_hosts lines in {plan.known_hosts}"
                                                 if plan.known_hosts else ""))
        for problem in plan.problems:
            console.print(f"[red]refused[/red] {problem}")
    if plan.problems:
        raise MailopsError(f"destroy {host}: {plan.problems[0]}")
    if plan.empty:
        console.print(f"nothing to destroy for {host}")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise MailopsError(f"destroy {host} needs confirmation: run it at a terminal or add --yes")
        if not click.confirm(f"Destroy {host} as shown?", err=True):
            raise MailopsError(f"destroy {host}: not confirmed, nothing changed")
    apply_destroy(plan, context, on_step=lambda text: console.print(text))
    console.print(f"{host} destroyed")

"""``mailops dkim``: DKIM key life cycle on the controller (all logic in mailops.dkim)."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup, inventory_option
from mailops.dkim import lifecycle
from mailops.dkim.store import DkimKey, KeyStore, parse_time
from mailops.inventory import load

@click.group(cls=MailopsGroup)
def dkim() -> None:
    """Create, rotate, activate and retire DKIM keys (store: mailops_dkim_keystore).

    Life cycle: generate (first key, active) ... rotate (new key, pending) ->
    publish it (mailops dns sync) -> activate (once DNS shows it; the old key is
    retired) -> retired keys stay in DNS for retired_grace_days -> retire --purge.
    """


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # pipes and captured output: do not squeeze the table into 80 columns
        console = Console(width=200)
    return console


def _short(stamp: str | None) -> str:
    return parse_time(stamp).strftime("%Y-%m-%d %H:%M") if stamp else "-"


def _keys_table(store: KeyStore, keys: list[DkimKey], now: datetime | None = None, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("domain", "selector", "algorithm", "bits", "state", "created", "activated", "retired",
                "published", "signing"):
        table.add_column(col, no_wrap=True)
    style = {"active": "green", "pending": "yellow", "retired": "dim"}
    for k in keys:
        table.add_row(k.domain, k.selector, k.algorithm, str(k.bits or "-"),
                      f"[{style[k.state]}]{k.state}[/]", _short(k.created), _short(k.activated),
                      _short(k.retired), "yes" if store.is_published(k, now) else "no",
                      "yes" if store.is_signing(k) else "no")
    return table


def _records_table(keys: list[DkimKey]) -> Table:
    table = Table(title="DNS records to publish", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("type")
    table.add_column("value", overflow="fold")
    for k in keys:
        table.add_row(k.record_name, "TXT", k.dns_value)
    return table


@dkim.command("generate")
@click.argument("domains", nargs=-1)
@click.option("--all", "all_domains", is_flag=True, help="Every domain of the inventory.")
@inventory_option
def generate(domains: tuple[str, ...], all_domains: bool, inventory_name: str) -> None:
    """Create the first key(s) of DOMAIN(s), directly active.

    One key per algorithm in the domain's dkim.algorithms. A domain that already has
    an active key is left alone (use rotate to replace a key).
    """
    if bool(domains) == all_domains:
        raise click.UsageError("name one or more DOMAINs, or pass --all (not both)")
    inv = load(inventory_name)
    store = KeyStore.for_inventory(inv)
    console = _console()
    created: list[DkimKey] = []
    for name, result in lifecycle.generate(inv, None if all_domains else list(domains), store=store).items():
        created += result.created
        if result.existing:
            kept = ", ".join(f"{k.selector} ({k.algorithm})" for k in result.existing)
            console.print(f"{name}: already has an active key: {kept}; nothing to do for it "
                          f"(to replace it: mailops dkim rotate {name})")
    if created:
        console.print(_keys_table(store, created, title="Created (active)"))
        console.print(_records_table(created))
        console.print("Publish these records (mailops dns sync) before the keys are deployed.")


@dkim.command("list")
@click.argument("domains", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON (no private key material).")
@inventory_option
def list_keys(domains: tuple[str, ...], as_json: bool, inventory_name: str) -> None:
    """List the keys of every domain (or of DOMAINs)."""
    inv = load(inventory_name)
    store = KeyStore.for_inventory(inv)
    wanted = {d.strip().lower().rstrip(".") for d in domains}
    keys = [k for k in store.keys() if not wanted or k.domain in wanted]
    if as_json:
        click.echo(json.dumps(lifecycle.key_rows(store, keys), indent=2))
        return
    if not keys:
        click.echo(f"no DKIM keys in {store.manifest_path}; create them with mailops dkim generate --all")
        return
    _console().print(_keys_table(store, keys))


@dkim.command("rotate")
@click.argument("domain")
@inventory_option
def rotate(domain: str, inventory_name: str) -> None:
    """Create new pending key(s) for DOMAIN, to publish and then activate."""
    inv = load(inventory_name)
    store = KeyStore.for_inventory(inv)
    created = lifecycle.rotate(inv, domain, store=store)
    name = created[0].domain
    console = _console()
    console.print(_keys_table(store, created, title="Created (pending)"))
    console.print(_records_table(created))
    console.print(f"Next: publish the records (mailops dns sync), then mailops dkim activate {name}")


@dkim.command("activate")
@click.argument("domain")
@click.option("--selector", help="The pending key to activate (default: every pending key of DOMAIN).")
@click.option("--nameserver", "nameservers", multiple=True, metavar="IP",
              help="Authoritative server to check (repeatable). Default: the domain's RFC 2136 server, "
                   "else the zone's NS records.")
@click.option("--force", is_flag=True,
              help="DANGEROUS: skip the DNS check. Receivers fail DKIM for mail signed before DNS has the key.")
@inventory_option
def activate(domain: str, selector: str | None, nameservers: tuple[str, ...], force: bool,
             inventory_name: str) -> None:
    """Make DOMAIN's pending key active once its DNS record is visible.

    The record must show exactly the key's public key on every authoritative
    server; the key it replaces (same algorithm) is retired.
    """
    inv = load(inventory_name)
    store = KeyStore.for_inventory(inv)
    result = lifecycle.activate(inv, domain, selector, nameservers=list(nameservers), force=force, store=store)
    console = _console()
    if result.forced:
        console.print("[bold red]warning:[/] DNS check skipped (--force)")
    for sel, answers in result.checks.items():
        for server in answers:
            console.print(f"{sel}: {server}: the expected key")
    console.print(_keys_table(store, result.activated + result.retired, title="Changed"))
    console.print("Next: deploy (the opendkim role) so the new key signs.")


@dkim.command("retire")
@click.argument("domain", required=False)
@click.argument("selector", required=False)
@click.option("--purge", is_flag=True,
              help="Delete retired keys whose grace period (retired_grace_days) is over.")
@inventory_option
def retire(domain: str | None, selector: str | None, purge: bool, inventory_name: str) -> None:
    """Retire DOMAIN's key SELECTOR now, or (--purge) delete keys retired long enough ago."""
    if purge:
        if domain or selector:
            raise click.UsageError("--purge takes no DOMAIN or SELECTOR")
        store = KeyStore.for_inventory(load(inventory_name))
        gone = store.purge()
        if not gone:
            click.echo("nothing to purge: no retired key is past its grace period")
            return
        _console().print(_keys_table(store, gone, title="Purged (manifest entry and private key deleted)"))
        click.echo("Next: mailops dns sync removes their records.")
        return
    if not domain or not selector:
        raise click.UsageError("give DOMAIN and SELECTOR (or --purge)")
    inv = load(inventory_name)
    store = KeyStore.for_inventory(inv)
    key, already = lifecycle.retire(inv, domain, selector, store=store)
    name = key.domain
    console = _console()
    if already:
        console.print(f"{name}: {selector} was already retired at {key.retired}")
        return
    until = store.published_until(key)
    console.print(_keys_table(store, [key], title="Retired"))
    console.print(f"Its record stays published until {until:%Y-%m-%d %H:%M} UTC; "
                  "then mailops dkim retire --purge deletes it.")
    if lifecycle.unsigned_algorithms(store, name, [key.algorithm]):
        console.print(f"[bold yellow]warning:[/] {name} has no active {key.algorithm} key now; "
                      f"mail goes out without that signature (mailops dkim rotate {name})")

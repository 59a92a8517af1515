"""``mailops reports``: DMARC, TLS-RPT and complaint reports the mail hosts received
(logic in mailops.ops.returnpath)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mailops.cli.base import MailopsGroup, inventory_option
from mailops.inventory import load, resolve_inventory_path
from mailops.ops import returnpath as rp
from mailops.ops.logtime import parse_since


@click.group(cls=MailopsGroup)
def reports() -> None:
    """What receivers reported back: DMARC aggregates, TLS-RPT failures, complaint rates."""


def _common(fn):
    fn = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")(fn)
    fn = inventory_option(fn)
    fn = click.option("--domain", metavar="DOMAIN", help="Only this sending domain.")(fn)
    return fn


def _context(inventory_name: str):
    inv = load(resolve_inventory_path(inventory_name))
    return inv, rp.runner_for(inv)


def _since(text: str | None):
    return parse_since(text) if text else None


def _finish(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    err = Console(stderr=True)
    for name, why in sorted(result.get("unreachable", {}).items()):
        err.print(f"[red]{name}: not reached[/red]: {why}", highlight=False)
    if result.get("unreachable"):
        sys.exit(1)


@reports.command("dmarc")
@click.option("--since", metavar="TIME", help="Reports whose period ends after this: 2026-11-01, 7d, today.")
@_common
def dmarc(since, domain, inventory_name, as_json) -> None:
    """Per domain and source IP: messages, SPF/DKIM pass and alignment, disposition; sources
    that are not the inventory's hosts are flagged."""
    inv, runner = _context(inventory_name)
    result = rp.dmarc_report(inv, inv.hosts, runner, since=_since(since), domain=domain)
    if not as_json:
        t = Table("domain", "source", "messages", "DKIM pass", "DKIM aligned", "SPF pass", "SPF aligned",
                  "DMARC pass", "none/quar./reject", title="DMARC aggregate reports", title_justify="left")
        for r in result["rows"]:
            source = f"{r['source_ip']} ({r['host']})" if r["host"] else f"{r['source_ip']} NOT OURS"
            t.add_row(r["domain"], source, str(r["messages"]), str(r["dkim_auth_pass"]), str(r["dkim_pass"]),
                      str(r["spf_auth_pass"]), str(r["spf_pass"]), str(r["dmarc_pass"]),
                      f"{r['none']}/{r['quarantine']}/{r['reject']}", style="red" if r["flagged"] else None)
        Console().print(t)
        if any(r["flagged"] for r in result["rows"]):
            Console().print("Sources marked NOT OURS are no mail host of the inventory: a sender you forgot "
                            "(add it to spf.ip4/ip6 and sign for it) or someone spoofing the domain.")
    _finish(result, as_json)


@reports.command("tls")
@_common
def tls(domain, inventory_name, as_json) -> None:
    """TLS-RPT: failed TLS sessions by result type, and sessions per policy."""
    inv, runner = _context(inventory_name)
    result = rp.tls_report(inv.hosts, runner, domain=domain)
    if not as_json:
        t = Table("domain", "result type", "failed sessions", "reports", title="TLS-RPT failures", title_justify="left")
        for r in result["failures"]:
            t.add_row(r["domain"], r["result_type"], str(r["sessions"]), str(r["reports"]))
        p = Table("domain", "policy", "successful", "failed", title="sessions per policy", title_justify="left")
        for r in result["policies"]:
            p.add_row(r["domain"], r["policy_type"], str(r["successful"]), str(r["failed"]))
        Console().print(t, p)
    _finish(result, as_json)


@reports.command("complaints")
@click.option("--since", metavar="TIME", help="Days from this one: 2026-11-01, 7d, today.")
@click.option("--log-file", metavar="PATH", help="Read sent counts from this log file on each host (default: journal).")
@click.option("--file", "local_log", type=click.Path(path_type=Path, dir_okay=False),
              help="Read sent counts from this local log file instead of the hosts.")
@_common
def complaints(since, log_file, local_log, domain, inventory_name, as_json) -> None:
    """Complaints per domain and day as a rate of the messages sent that day (lines at 0.1 % and 0.3 %)."""
    inv, runner = _context(inventory_name)
    result = rp.complaint_rates(inv, inv.hosts, runner, since=_since(since), domain=domain, log_file=log_file,
                                local_log=local_log)
    if not as_json:
        t = Table("domain", "day", "complaints", "sent", "rate", "0.1 %", "0.3 %", title="complaint rate",
                  title_justify="left")
        for r in result["rows"]:
            rate = "unknown (nothing sent)" if r["rate"] is None else f"{r['rate'] * 100:.3f} %"
            marks = ["OVER" if line in r["over"] else "-" for line in result["lines"]]
            t.add_row(r["domain"] or "(unknown)", r["day"], str(r["complaints"]), str(r["sent"]), rate, *marks,
                      style="red" if 0.003 in r["over"] else "yellow" if r["over"] else None)
        Console().print(t)
        Console().print("Mailbox providers want complaint rates under 0.1 %, and act at 0.3 % (Gmail, Yahoo).")
    _finish(result, as_json)

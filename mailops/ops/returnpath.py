"""Day two of the return path from the controller: suppressions and reports over every mail host.

Each mail host keeps its own suppression list and event store (mailops.returnpath, run
there as ``python3 -m mailops.returnpath.hostcli``).  This module asks every host through
a :class:`Runner` - :class:`SshRunner` over SSH (mailops.ops.remote, the service user
``mailops-rp`` so the sqlite files keep their owner), :class:`LocalRunner` on state
directories on this machine (tests, a copied state) - and puts the answers together:

* suppressions: ``list`` merges what the hosts hold and names the hosts an entry is missing
  on (not yet replicated); ``add`` suppresses on the first host that answers and merges that
  same entry into the others, ``remove`` lifts it on every host; ``import``/``export`` read
  and write CSV or JSON with :class:`SuppressionList`'s own readers and writers.  A host that
  cannot be reached is named in ``unreachable``; the others still get the change.
* reports: DMARC rows per domain and source IP (sources that are not the inventory's hosts
  flagged), TLS-RPT failures by type, complaints per domain and day as a rate against what
  the delivery log says was sent that day (LogStats; unknown when nothing was sent).
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

from mailops.errors import MailopsError
from mailops.inventory import Inventory, MailHost
from mailops.returnpath.suppression import (GLOBAL, EntryError, SuppressionList, entry_from_mapping,
                                            normalise_scope, normalise_target)

CODE_DIR = "/usr/local/lib/mailops-returnpath"      # the package copied to each host (role returnpath)
STATE_DIR = "/var/lib/mailops-returnpath"
SERVICE_USER = "mailops-rp"
HOSTCLI = "mailops.returnpath.hostcli"
COMPLAINT_LINES = (0.001, 0.003)                    # 0.1 %: watch; 0.3 %: mailbox providers act (Gmail, Yahoo)
NOT_COMPLAINTS = ("not-spam",)


class Runner(Protocol):
    def hostcli(self, host: MailHost, args: list[str], stdin: str | None = None) -> Any:
        """Run hostcli with ``args`` on ``host``; its JSON answer, or MailopsError (one line, naming the host)."""


def _answer(host: MailHost, code: int, out: str, err: str) -> Any:
    if code != 0:
        lines = [line for line in (err or out).strip().splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit {code}, no output"
        if code == 127 or "No module named" in why:
            why += " (is the return path converged on it? run `mailops provision`)"
        raise MailopsError(f"{host.name}: {why}")
    try:
        return json.loads(out)
    except ValueError:
        raise MailopsError(f"{host.name}: hostcli answered something that is not JSON: {out.strip()[:80]!r}") \
            from None


class SshRunner:
    """hostcli over SSH as the service user (root SSH: runuser; another user: sudo -n)."""

    def __init__(self, timeout: float = 15) -> None:
        self.timeout = timeout

    @staticmethod
    def command(host: MailHost, args: list[str]) -> str:
        become = f"runuser -u {SERVICE_USER} --" if host.ssh_user == "root" else f"sudo -n -u {SERVICE_USER}"
        return (f"{become} env PYTHONPATH={CODE_DIR} python3 -m {HOSTCLI} "
                + " ".join(shlex.quote(a) for a in args))

    def hostcli(self, host: MailHost, args: list[str], stdin: str | None = None) -> Any:
        from mailops.ops.remote import Remote
        with Remote(host, timeout=self.timeout) as remote:
            code, out, err = remote.run_with_stderr(self.command(host, args), stdin=stdin)
        return _answer(host, code, out, err)


class LocalRunner:
    """hostcli on this machine, one state directory per host name (the same answers, no SSH)."""

    def __init__(self, state_dirs: dict[str, str | Path], python: str = sys.executable) -> None:
        self.state_dirs, self.python = {k: str(v) for k, v in state_dirs.items()}, python

    def hostcli(self, host: MailHost, args: list[str], stdin: str | None = None) -> Any:
        state = self.state_dirs.get(host.name)
        if state is None:
            raise MailopsError(f"{host.name}: no local state directory for this host")
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=package_root)
        proc = subprocess.run([self.python, "-m", HOSTCLI, "--state-dir", state, "--origin", host.name, *args],
                              input=stdin or "", capture_output=True, text=True, env=env, timeout=120)
        return _answer(host, proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Outcome:
    """What each host answered, and the hosts that could not be asked (host -> one line)."""
    answers: dict[str, Any] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)


def each_host(hosts: list[MailHost], runner: Runner, args: list[str], stdin: str | None = None) -> Outcome:
    """Ask every host at once; a host that fails is recorded, never stops the others."""
    def ask(host: MailHost) -> tuple[str, Any, str | None]:
        try:
            return host.name, runner.hostcli(host, args, stdin), None
        except MailopsError as exc:
            return host.name, None, str(exc)
    outcome = Outcome()
    with ThreadPoolExecutor(max(1, min(len(hosts), 16))) as pool:
        for name, answer, error in pool.map(ask, hosts):
            if error is None:
                outcome.answers[name] = answer
            else:
                outcome.unreachable[name] = error
    return outcome


def _need_hosts(hosts: list[MailHost]) -> None:
    if not hosts:
        raise MailopsError("the inventory has no mail hosts")


def _scope(scope: str | None) -> str:
    try:
        return normalise_scope(scope)
    except EntryError as exc:
        raise MailopsError(f"--domain: {exc}") from None


def _target(target: str) -> str:
    try:
        return normalise_target(target)
    except EntryError as exc:
        raise MailopsError(f"target: {exc}") from None


# --- suppressions ----------------------------------------------------------------------------

def list_suppressions(hosts: list[MailHost], runner: Runner, *, scope: str | None = None,
                      cause: str | None = None) -> dict:
    """Entries in force, merged over the hosts: per (target, scope) the newest version any host
    holds (tombstones included, so a removal not yet replicated is not shown as in force), the
    hosts that hold that version, and the reachable hosts it is ``missing`` on (not replicated yet)."""
    _need_hosts(hosts)
    args = ["list", "--all"] + (["--scope", _scope(scope)] if scope is not None else []) + \
        (["--cause", cause] if cause else [])
    outcome = each_host(hosts, runner, args)
    newest: dict[tuple[str, str], dict] = {}
    versions: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for host in hosts:
        for entry in outcome.answers.get(host.name) or []:
            key, version = (entry["target"], entry["scope"]), (entry["updated"], entry["origin"])
            versions.setdefault(key, {})[host.name] = version
            old = newest.get(key)
            if old is None or version > (old["updated"], old["origin"]):
                newest[key] = entry
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reachable = [h.name for h in hosts if h.name in outcome.answers]
    entries = []
    for key in sorted(newest):
        entry = newest[key]
        if entry["removed"] or (entry["expires"] is not None and entry["expires"] <= now):
            continue
        version = (entry["updated"], entry["origin"])
        holders = [h for h in reachable if versions[key].get(h) == version]
        entries.append({**entry, "hosts": holders, "missing": [h for h in reachable if h not in holders]})
    return {"entries": entries, "hosts": reachable, "unreachable": outcome.unreachable}


def add_suppression(hosts: list[MailHost], runner: Runner, target: str, *, scope: str | None = GLOBAL,
                    cause: str = "manual", detail: str = "") -> dict:
    """Suppress on the first host that answers, then merge that same entry into every other host."""
    _need_hosts(hosts)
    target, scope = _target(target), _scope(scope)
    unreachable: dict[str, str] = {}
    entry, first = None, None
    for host in hosts:
        try:
            entry = runner.hostcli(host, ["add", target, "--scope", scope, "--cause", cause, "--detail", detail])
            first = host.name
            break
        except MailopsError as exc:
            unreachable[host.name] = str(exc)
    if entry is None:
        return {"entry": None, "applied": [], "unreachable": unreachable}
    rest = [h for h in hosts if h.name != first and h.name not in unreachable]
    outcome = each_host(rest, runner, ["merge"], json.dumps([entry]))
    unreachable.update(outcome.unreachable)
    applied = [first] + [h.name for h in rest if h.name in outcome.answers]
    return {"entry": entry, "applied": applied, "unreachable": unreachable}


def remove_suppression(hosts: list[MailHost], runner: Runner, target: str, *, scope: str | None = GLOBAL) -> dict:
    """Lift the suppression on every host (each keeps a tombstone that replicates)."""
    _need_hosts(hosts)
    target, scope = _target(target), _scope(scope)
    outcome = each_host(hosts, runner, ["remove", target, "--scope", scope])
    held = [name for name, answer in outcome.answers.items() if answer.get("removed")]
    return {"target": target, "scope": scope, "removed": bool(held), "held_by": sorted(held),
            "applied": sorted(outcome.answers), "unreachable": outcome.unreachable}


def import_suppressions(hosts: list[MailHost], runner: Runner, path: str | Path, fmt: str | None = None) -> dict:
    """Check every row of a CSV/JSON file (SuppressionList.import_file: all rows or none), then
    merge the entries into every host (a row newer than a host's entry wins there)."""
    _need_hosts(hosts)
    memory = SuppressionList(":memory:", origin="mailops-import")
    try:
        count = memory.import_file(str(path), fmt)
        entries = [e.as_dict() for e in memory.changes_since("")]
    finally:
        memory.close()
    outcome = each_host(hosts, runner, ["merge"], json.dumps(entries))
    return {"entries": count, "applied": sorted(outcome.answers),
            "changed": {name: a.get("changed", 0) for name, a in sorted(outcome.answers.items())},
            "unreachable": outcome.unreachable}


def export_suppressions(hosts: list[MailHost], runner: Runner, fmt: str = "json", *,
                        scope: str | None = None) -> tuple[str, dict]:
    """The merged entries in force as CSV or JSON text (SuppressionList.export), and the listing."""
    if fmt not in ("csv", "json"):
        raise MailopsError(f"--format {fmt}: choose csv or json")
    listing = list_suppressions(hosts, runner, scope=scope)
    memory = SuppressionList(":memory:", origin="mailops-export")
    try:
        now = datetime.now(timezone.utc)
        memory.merge(entry_from_mapping({k: v for k, v in e.items() if k not in ("hosts", "missing")}, now)
                     for e in listing["entries"])
        out = io.StringIO()
        memory.export(out, fmt)
    finally:
        memory.close()
    return out.getvalue(), listing


# --- reports ---------------------------------------------------------------------------------

def collect_events(hosts: list[MailHost], runner: Runner, *, since: datetime | None = None,
                   domain: str | None = None) -> Outcome:
    _need_hosts(hosts)
    args = ["events"] + (["--since", since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")] if since else [])
    return each_host(hosts, runner, args + (["--domain", domain.lower()] if domain else []))


def _add_rows(rows: list[dict], keys: tuple[str, ...], into: dict[tuple, dict]) -> None:
    for row in rows:
        key = tuple(row[k] for k in keys)
        total = into.setdefault(key, {k: row[k] for k in keys})
        for name, value in row.items():
            if name not in keys and isinstance(value, int):
                total[name] = total.get(name, 0) + value


def host_addresses(inv: Inventory) -> dict[str, str]:
    """Every sending address of the inventory's hosts (normalised text) -> host name."""
    found = {}
    for host in inv.hosts:
        for address in (host.ipv4, host.ipv6):
            if address:
                found[str(ipaddress.ip_address(str(address)))] = host.name
    return found


def _normal_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def dmarc_report(inv: Inventory, hosts: list[MailHost], runner: Runner, *, since: datetime | None = None,
                 domain: str | None = None) -> dict:
    """Per domain and source IP: messages, aligned DKIM/SPF passes (policy_evaluated), raw
    DKIM/SPF passes (auth_results), DMARC passes, dispositions; ``host`` names the inventory
    host at that address, and a source that is none of them is ``flagged`` (a forgotten
    sender or a spoofer)."""
    outcome = collect_events(hosts, runner, since=since, domain=domain)
    totals: dict[tuple, dict] = {}
    for answer in outcome.answers.values():
        _add_rows([{**r, "source_ip": _normal_ip(r["source_ip"])} for r in answer.get("dmarc", [])],
                  ("domain", "source_ip"), totals)
    ours = host_addresses(inv)
    rows = []
    for key in sorted(totals, key=lambda k: (k[0], -totals[k].get("messages", 0), k[1])):
        row = totals[key]
        row["host"] = ours.get(row["source_ip"])
        row["flagged"] = row["host"] is None
        rows.append(row)
    return {"rows": rows, "hosts": sorted(outcome.answers), "unreachable": outcome.unreachable}


def tls_report(hosts: list[MailHost], runner: Runner, *, domain: str | None = None) -> dict:
    """TLS-RPT: failed sessions per policy domain and result type, and sessions per policy."""
    outcome = collect_events(hosts, runner, domain=domain)
    failures: dict[tuple, dict] = {}
    summary: dict[tuple, dict] = {}
    for answer in outcome.answers.values():
        _add_rows(answer.get("tls", []), ("domain", "result_type"), failures)
        _add_rows(answer.get("tls_summary", []), ("domain", "policy_type"), summary)
    return {"failures": sorted(failures.values(), key=lambda r: (r["domain"], -r.get("sessions", 0),
                                                                  r["result_type"])),
            "policies": [summary[k] for k in sorted(summary)],
            "hosts": sorted(outcome.answers), "unreachable": outcome.unreachable}


def sending_domain_of(inv: Inventory, sender: str | None, keys: list[bytes] | None = None) -> str | None:
    """The inventory domain a message was sent for, from its envelope sender: the domain
    itself, or its return-path domain (a shared one through the token, when ``keys`` are given)."""
    if not sender or "@" not in sender:
        return None
    domain = sender.rpartition("@")[2].lower().rstrip(".")
    if domain in inv.domains:
        return domain
    senders = inv.return_path_domains().get(domain) if inv.return_path is not None else None
    if not senders:
        return None
    if len(senders) == 1:
        return senders[0]
    if keys:
        from mailops.returnpath import address
        for candidate in senders:
            if address.validate(keys, sender, sending_domain=candidate, max_age_days=3650):
                return candidate
    return None


def sent_counter(inv: Inventory, keys: list[bytes] | None = None) -> tuple[dict[tuple[str, str], int], Callable]:
    """(counts, on_event): give on_event to LogStats; counts[(sending domain, UTC day)] = recipients sent."""
    counts: dict[tuple[str, str], int] = {}

    def on_event(event) -> None:
        if getattr(event, "status", None) != "sent" or event.time is None:
            return
        domain = sending_domain_of(inv, event.sender, keys)
        if domain:
            day = event.time.astimezone(timezone.utc).strftime("%Y-%m-%d")
            counts[(domain, day)] = counts.get((domain, day), 0) + 1
    return counts, on_event


def complaints_report(hosts: list[MailHost], runner: Runner, sent: dict[tuple[str, str], int], *,
                      since: datetime | None = None, domain: str | None = None) -> dict:
    """Complaints (not-spam feedback left out) per sending domain and day, as a rate of the
    messages sent that day (``sent``, from the delivery log); rate None (unknown) when nothing
    was sent that day.  ``over`` lists the lines (0.1 %, 0.3 %) the rate reaches."""
    outcome = collect_events(hosts, runner, since=since, domain=domain)
    complaints: dict[tuple[str, str], int] = {}
    for answer in outcome.answers.values():
        for row in answer.get("complaints", []):
            if row.get("feedback_type") in NOT_COMPLAINTS:
                continue
            key = (row["domain"] or "", row["day"])
            complaints[key] = complaints.get(key, 0) + int(row["count"])
    since_day = since.astimezone(timezone.utc).strftime("%Y-%m-%d") if since else ""
    days = set(complaints) | {k for k in sent if (domain is None or k[0] == domain.lower()) and k[1] >= since_day}
    rows = []
    for key in sorted(days):
        count, messages = complaints.get(key, 0), sent.get(key, 0)
        rate = count / messages if messages else None
        rows.append({"domain": key[0], "day": key[1], "complaints": count, "sent": messages, "rate": rate,
                     "over": [line for line in COMPLAINT_LINES if rate is not None and rate >= line]})
    return {"rows": rows, "lines": list(COMPLAINT_LINES), "hosts": sorted(outcome.answers),
            "unreachable": outcome.unreachable}


def return_path_keys(inv: Inventory) -> list[bytes]:
    """The fleet's return-path keys from the inventory secret (MailopsError naming the reference)."""
    if inv.return_path is None:
        raise MailopsError(f"{inv.path}: mailops_return_path is not set; the return path is off")
    from mailops.inventory.secrets import resolve_hex_keys
    return resolve_hex_keys(inv.return_path.key, inv.path)


def complaint_rates(inv: Inventory, hosts: list[MailHost], runner: Runner, *, since: datetime | None = None,
                    domain: str | None = None, log_file: str | None = None,
                    local_log: Path | None = None) -> dict:
    """complaints_report with the sent counts read from the hosts' delivery log (the journal, or
    ``log_file`` on each host) or from ``local_log`` on this machine, through LogStats."""
    from mailops.ops import logs
    try:
        keys = return_path_keys(inv) if inv.return_path is not None else None
    except MailopsError:
        keys = None                      # a shared return-path domain's mail then counts as unattributed
    sent, on_event = sent_counter(inv, keys)
    if local_log is not None:
        logs.collect_local(Path(local_log), since=since, on_event=on_event)
    else:
        logs.collect(hosts, since=since, log_file=log_file, on_event=on_event)
    return complaints_report(hosts, runner, sent, since=since, domain=domain)


def runner_for(inv: Inventory) -> Runner:
    """The runner the CLI uses: SSH to each mail host."""
    return SshRunner()


def write_export(text: str, path: Path) -> None:
    """Write an export through a private temporary file beside ``path`` (mailops.ops.export's rule)."""
    from mailops.ops.export import _Output
    out = _Output(Path(path), "-o")
    try:
        out.file.write(text)
        out.commit()
    except BaseException:
        out.discard()
        raise

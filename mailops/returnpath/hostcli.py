"""The mail host's side of the controller's return-path commands (``mailops suppressions``,
``mailops reports``): the suppression list and the event store, as JSON on stdout.

Standard library only (it runs on the mail hosts as
``PYTHONPATH=/usr/local/lib/mailops-returnpath python3 -m mailops.returnpath.hostcli``).
Every answer is one JSON document on stdout; an error is one line on stderr and exit 1.
The logic lives in :class:`SuppressionList` and :class:`EventStore`; this module only reads
arguments and prints their answers.

  list [--scope D] [--cause C] [--all]            suppression entries (--all: with tombstones/expired)
  add TARGET [--scope D] [--cause manual] [--detail TEXT]
  remove TARGET [--scope D]
  merge                                           JSON array of entries on stdin (the controller, peers)
  changes-since STAMP                             entries changed after STAMP ("" = all)
  events [--since ISO] [--domain D]               {"dmarc", "tls", "tls_summary", "complaints", "bounces", "counts"}

``--state-dir`` (default /var/lib/mailops-returnpath) holds events.sqlite3 and suppressions.sqlite3.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from datetime import datetime, timezone

from mailops.errors import MailopsError
from mailops.returnpath.store import EventStore
from mailops.returnpath.suppression import (CAUSES, GLOBAL, MANUAL, EntryError, SuppressionList, entry_from_mapping,
                                            parse_time, stamp)

STATE_DIR = "/var/lib/mailops-returnpath"
EVENTS = "events.sqlite3"
SUPPRESSIONS = "suppressions.sqlite3"
MAX_STDIN = 256 * 1024 * 1024


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):          # one line, no usage dump
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mailops.returnpath.hostcli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=STATE_DIR)
    parser.add_argument("--origin", help="this host's name in replicated entries (default: the host name)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    listing = sub.add_parser("list")
    listing.add_argument("--scope")
    listing.add_argument("--cause", choices=CAUSES)
    listing.add_argument("--all", action="store_true", dest="include_inactive")
    add = sub.add_parser("add")
    add.add_argument("target")
    add.add_argument("--scope", default=GLOBAL)
    add.add_argument("--cause", default=MANUAL, choices=CAUSES)
    add.add_argument("--detail", default="")
    remove = sub.add_parser("remove")
    remove.add_argument("target")
    remove.add_argument("--scope", default=GLOBAL)
    sub.add_parser("merge")
    changes = sub.add_parser("changes-since")
    changes.add_argument("stamp", nargs="?", default="")
    events = sub.add_parser("events")
    events.add_argument("--since", help="ISO date or time (UTC)")
    events.add_argument("--domain")
    return parser


def _suppressions(args) -> SuppressionList:
    return SuppressionList(os.path.join(args.state_dir, SUPPRESSIONS), origin=args.origin)


def _entries(entries) -> list[dict]:
    return [e.as_dict() for e in entries]


def _merge(args, stdin) -> dict:
    text = stdin.read(MAX_STDIN + 1)
    if len(text) > MAX_STDIN:
        raise MailopsError(f"merge: more than {MAX_STDIN} bytes on stdin")
    try:
        data = json.loads(text or "[]")
    except ValueError as exc:
        raise MailopsError(f"merge: stdin is not JSON ({str(exc)[:80]}); send a JSON array of entries") from None
    if not isinstance(data, list):
        raise MailopsError("merge: stdin must be a JSON array of entries")
    now = datetime.now(timezone.utc)
    entries = []
    for index, item in enumerate(data):
        try:
            entries.append(entry_from_mapping(item, now))
        except EntryError as exc:
            raise MailopsError(f"merge: entry {index}: {exc.field}: {exc}") from None
    lst = _suppressions(args)
    try:
        return {"received": len(entries), "changed": lst.merge(entries)}
    finally:
        lst.close()


def _auth_passes(store: EventStore, domain: str | None, since: int | None) -> dict[tuple[str, str], dict]:
    """Raw (unaligned) DKIM and SPF passes per (domain, source IP), from each row's auth_results:
    dmarc_by_source counts the aligned verdicts (policy_evaluated); a person wants both."""
    where, params = ["1=1"], []
    if domain:
        where.append("coalesce(r.domain, w.header_from) = ?")
        params.append(domain.lower())
    if since is not None:
        where.append("r.end >= ?")
        params.append(since)
    out: dict[tuple[str, str], dict] = {}
    for name, ip, count, results in store.db.execute(
            "SELECT coalesce(r.domain, w.header_from, ''), w.source_ip, w.count, w.auth_results"
            " FROM dmarc_rows w JOIN dmarc_reports r ON r.id = w.report WHERE " + " AND ".join(where), params):
        try:
            parsed = json.loads(results)
        except ValueError:
            parsed = {}
        row = out.setdefault((name, ip), {"dkim_auth_pass": 0, "spf_auth_pass": 0})
        for kind in ("dkim", "spf"):
            if any(isinstance(r, dict) and str(r.get("result", "")).lower() == "pass" for r in parsed.get(kind) or []):
                row[f"{kind}_auth_pass"] += count
    return out


def _events(args) -> dict:
    since = parse_time(args.since, "since") if args.since else None
    store = EventStore(os.path.join(args.state_dir, EVENTS))
    try:
        epoch = int(since.timestamp()) if since else None
        dmarc = store.dmarc_by_source(args.domain, epoch)
        raw = _auth_passes(store, args.domain, epoch)
        for row in dmarc:
            row.update(raw.get((row["domain"], row["source_ip"]), {"dkim_auth_pass": 0, "spf_auth_pass": 0}))
        return {"dmarc": dmarc, "tls": store.tls_failures_by_type(args.domain),
                "tls_summary": store.tls_summary(args.domain),
                "complaints": store.complaints_by_day(args.domain, since),
                "bounces": store.bounces_by_day(args.domain, since), "counts": store.counts()}
    finally:
        store.close()


def run(args, stdin) -> object:
    if args.command == "merge":
        return _merge(args, stdin)
    if args.command == "events":
        return _events(args)
    lst = _suppressions(args)
    try:
        if args.command == "list":
            return _entries(lst.entries(scope=args.scope, cause=args.cause, include_inactive=args.include_inactive))
        if args.command == "add":
            return lst.add(args.target, args.scope, args.cause, args.detail).as_dict()
        if args.command == "remove":
            removed = lst.remove(args.target, args.scope)
            return {"removed": removed, "target": args.target, "scope": args.scope}
        if args.command == "changes-since":
            if args.stamp:
                stamp(parse_time(args.stamp, "stamp"))  # refuse a malformed stamp instead of matching all
            return _entries(lst.changes_since(args.stamp))
    finally:
        lst.close()
    raise UsageError(f"unknown command {args.command}")


def main(argv=None, stdin=None, stdout=None) -> int:
    out = stdout or sys.stdout
    try:
        args = _parser().parse_args(argv)
        if not os.path.isdir(args.state_dir):
            raise MailopsError(f"{args.state_dir}: no return-path state directory (is the return path "
                               "converged on this host?)")
        result = run(args, stdin if stdin is not None else sys.stdin)
    except UsageError as exc:
        print(f"hostcli: usage: {exc}", file=sys.stderr)
        return 1
    except EntryError as exc:
        print(f"hostcli: {exc.field}: {exc}", file=sys.stderr)
        return 1
    except (MailopsError, sqlite3.Error, OSError) as exc:
        print(f"hostcli: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    json.dump(result, out, sort_keys=True)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

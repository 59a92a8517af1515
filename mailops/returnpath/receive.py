"""One message that arrived on the return path, handled end to end: classified, stored,
turned into suppressions - the function a Postfix pipe(8) transport will run.

Nothing is dropped: the event store commits the message (raw bytes too, when it could not
be read) before the suppressions are applied, and when the store cannot be written the
answer is a temporary failure (exit 75, EX_TEMPFAIL), so Postfix keeps the message queued
and tries again; the same message arriving twice is stored and applied once.

As a command (standard library only; the later wiring puts it in master.cf):

  python3 -m mailops.returnpath.receive --events FILE --suppressions FILE
      [--key-file FILE] [--tokens FILE] --recipient ${recipient} --sender ${sender} < message
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
import sys

from mailops.errors import MailopsError
from mailops.returnpath.address import MIN_KEY_BYTES, TokenTable
from mailops.returnpath.classifier import classify
from mailops.returnpath.events import Classified
from mailops.returnpath.store import EventStore
from mailops.returnpath.suppression import Entry, SuppressionList

EX_OK = 0
EX_USAGE = 64
EX_TEMPFAIL = 75
MAX_INPUT_BYTES = 64 * 1024 * 1024


def receive(raw: bytes, recipient: str, sender: str, *, store: EventStore,
            suppressions: SuppressionList | None = None, keys=None, tokens: TokenTable | None = None,
            ) -> tuple[Classified, bool, list[Entry]]:
    """(event, new, suppressions made).  new is False for a message stored before, which
    then changes nothing.  sqlite errors propagate: the caller must defer the message."""
    event = classify(raw, recipient, sender, keys=keys, tokens=tokens)
    new = store.record(event, raw)
    made = suppressions.apply(event) if new and suppressions is not None else []
    return event, new, made


def read_keys(path: str) -> list[bytes]:
    """Return-path keys, one per line, hex; newest first.  The file must be 0600 or stricter."""
    try:
        info = os.stat(path)
        with open(path, encoding="ascii") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise MailopsError(f"{path}: cannot read the return-path key file ({exc})") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise MailopsError(f"{path}: the return-path key file is readable by others "
                           f"(mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it")
    keys = []
    for number, line in enumerate(lines, start=1):
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise MailopsError(f"{path}: key {number} is not hex; write one hex key per line") from None
        if len(key) < MIN_KEY_BYTES:
            raise MailopsError(f"{path}: key {number} has {len(key)} bytes; use at least {MIN_KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise MailopsError(f"{path}: no key in the return-path key file")
    return keys


def main(argv=None, stdin=None) -> int:
    parser = argparse.ArgumentParser(prog="mailops-returnpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", required=True, help="event store (sqlite)")
    parser.add_argument("--suppressions", help="suppression list (sqlite)")
    parser.add_argument("--key-file", help="return-path keys, hex, one per line, newest first (mode 0600)")
    parser.add_argument("--tokens", help="token table (sqlite)")
    parser.add_argument("--recipient", required=True)
    parser.add_argument("--sender", default="")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK
    source = stdin if stdin is not None else sys.stdin.buffer
    raw = source.read(MAX_INPUT_BYTES + 1)
    try:
        keys = read_keys(args.key_file) if args.key_file else None
        store = EventStore(args.events)
        suppressions = SuppressionList(args.suppressions) if args.suppressions else None
        tokens = TokenTable(args.tokens) if args.tokens else None
        event, new, made = receive(raw, args.recipient, args.sender, store=store, suppressions=suppressions,
                                   keys=keys, tokens=tokens)
    except (MailopsError, sqlite3.Error, OSError) as exc:
        print(f"mailops-returnpath: deferred: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    state = "stored" if new else "already stored"
    print(f"mailops-returnpath: {event.kind} {event.digest[:12]} {state}; {len(made)} suppression(s); "
          f"{event.reason}"[:500], file=sys.stderr)
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())

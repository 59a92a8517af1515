"""One message that arrived on the return path, handled end to end: classified, stored,
turned into suppressions - the function a Postfix pipe(8) transport will run.

Nothing is dropped: the event store commits the message (raw bytes too, when it could not
be read) before the suppressions are applied, and when the store cannot be written the
answer is a temporary failure (exit 75, EX_TEMPFAIL), so Postfix keeps the message queued
and tries again; the same message arriving twice is stored and applied once.

With the host's settings (``--config``, /etc/mailops/returnpath.json, written by the role
returnpath), the command also:

* forwards what the classifier says a person should read (postmaster@, abuse@, auto-replies,
  anything unrecognised) to the operator address through /usr/sbin/sendmail, after storing
  it, wrapped as a message/rfc822 attachment with an ``X-Mailops-Forwarded`` header that says
  why (the original's own DKIM/DMARC cannot survive a plain re-send);
* pushes the suppressions made on this host to every peer mail host (:func:`push_pending`):
  one mail message per batch to ``mailops-sync@<peer fqdn>``, a JSON entry per line, with an
  HMAC-SHA256 over the body by the fleet's return-path key, queued by the local Postfix (so
  a peer that is down gets it when it is back: nothing is lost); the peer's command checks
  the HMAC and merges (:meth:`SuppressionList.merge`: last writer wins, tombstones too);
* a replication message that arrives (recipient ``mailops-sync@...``) is checked and merged,
  not stored as an event; one with a wrong HMAC is stored as ``unparsed`` and counted.

A forward or a push that fails is a temporary failure too: Postfix delivers the message
again, the store recognises it (nothing is applied twice) and the forward/push is retried.

As a command (standard library only; the role returnpath puts it in master.cf as a pipe):

  python3 -m mailops.returnpath.receive --events FILE --suppressions FILE
      [--key-file FILE] [--tokens FILE] [--config FILE] --recipient ${recipient} --sender ${sender} < message
  python3 -m mailops.returnpath.receive --push --suppressions FILE --key-file FILE --config FILE
      (push what this host changed and no peer got yet: for hostcli add/remove/merge)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid

from mailops.errors import MailopsError
from mailops.returnpath.address import MIN_KEY_BYTES, TokenTable
from mailops.returnpath.classifier import classify
from mailops.returnpath.events import FORWARD, UNPARSED, Classified
from mailops.returnpath.settings import Settings, load_settings
from mailops.returnpath.store import EventStore
from mailops.returnpath.suppression import (Entry, EntryError, SuppressionList, entry_from_mapping, parse_time,
                                            stamp)

EX_OK = 0
EX_USAGE = 64
EX_TEMPFAIL = 75
MAX_INPUT_BYTES = 64 * 1024 * 1024
SYNC_HEADER = "X-Mailops-Sync"
SYNC_MAC_LABEL = b"mailops-sync1\n"
SYNC_BATCH = 2000               # entries per replication message
PUSH_OVERLAP = timedelta(minutes=10)   # changes committed late by a concurrent writer are still pushed
PUSH_KEEP = timedelta(days=2)
FORWARD_HEADER = "X-Mailops-Forwarded"
SENDMAIL_TIMEOUT = 120


def receive(raw: bytes, recipient: str, sender: str, *, store: EventStore,
            suppressions: SuppressionList | None = None, keys=None, tokens: TokenTable | None = None,
            subdomain: str | None = None) -> tuple[Classified, bool, list[Entry]]:
    """(event, new, suppressions made).  new is False for a message stored before, which
    then changes nothing.  sqlite errors propagate: the caller must defer the message."""
    extra = {"subdomain": subdomain} if subdomain is not None else {}
    event = classify(raw, recipient, sender, keys=keys, tokens=tokens, **extra)
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


# --- forwarding to the operator -----------------------------------------------------------

def forward_message(raw: bytes, event: Classified, settings: Settings) -> bytes:
    """The message sent to the operator: a short note and the original as an attachment."""
    note = EmailMessage(policy=email_policy.SMTP)
    why = " ".join((event.reason or event.kind).split())[:300]
    original = BytesParser(policy=email_policy.compat32).parsebytes(raw, headersonly=True)
    subject = " ".join(str(original.get("subject", "(no subject)")).split())[:150]
    note["From"] = f"mailops return path <postmaster@{_from_domain(event.envelope_recipient, settings)}>"
    note["To"] = settings.operator_email
    note["Subject"] = f"[mailops {event.envelope_recipient[:80]}] {subject}"
    note["Date"] = formatdate(localtime=False)
    note["Message-ID"] = make_msgid(domain=settings.fqdn)
    note["Auto-Submitted"] = "auto-forwarded"
    note[FORWARD_HEADER] = why
    note.set_content(f"{settings.fqdn} received this message on the return path and forwards it to you:\n\n"
                     f"  envelope recipient: {event.envelope_recipient}\n"
                     f"  envelope sender:    {event.envelope_sender or '<>'}\n"
                     f"  classified as:      {event.kind} ({why})\n"
                     f"  stored as:          {event.digest[:12]}\n\n"
                     "The original is attached unchanged.\n")
    if _is_7bit(raw):
        note.add_attachment(BytesParser(policy=email_policy.compat32).parsebytes(raw))
    else:       # message/rfc822 must not be base64-encoded; 8-bit or broken bytes go as a file
        note.add_attachment(raw, maintype="application", subtype="octet-stream", filename="original.eml")
    return note.as_bytes()


def _from_domain(recipient: str, settings: Settings) -> str:
    """The sending domain the forwarded note comes from, so that the local DKIM signature
    aligns with its From (DMARC passes at the operator's provider): the recipient's own
    sending domain, the one its return-path domain belongs to, or this host's first one."""
    domain = recipient.strip().strip("<>").rpartition("@")[2].lower()
    if domain in settings.sending_domains:
        return domain
    for candidate in settings.return_domains.get(domain, []):
        if candidate in settings.sending_domains:
            return candidate
    return next(iter(sorted(settings.sending_domains)), settings.fqdn)


def _is_7bit(raw: bytes) -> bool:
    try:
        raw.decode("ascii")
    except UnicodeDecodeError:
        return False
    return True


def sendmail(settings: Settings, sender: str, recipients: list[str], message: bytes) -> None:
    """Queue a message with the local Postfix; MailopsError when it was not queued."""
    try:
        proc = subprocess.run([settings.sendmail, "-i", "-f", sender, "--", *recipients], input=message,
                              capture_output=True, timeout=SENDMAIL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MailopsError(f"{settings.sendmail}: {exc}") from None
    if proc.returncode != 0:
        raise MailopsError(f"{settings.sendmail} exited {proc.returncode}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()[:300]}")


def forward(raw: bytes, event: Classified, settings: Settings) -> None:
    """Send a FORWARD event's message to the operator (null envelope sender: no loop)."""
    sendmail(settings, "", [settings.operator_email], forward_message(raw, event, settings))


# --- replication between the mail hosts ----------------------------------------------------

def _sync_body(entries: list[Entry]) -> bytes:
    return "\n".join(json.dumps(e.as_dict(), sort_keys=True, ensure_ascii=True) for e in entries).encode("ascii")


def _canonical(body: bytes) -> bytes:
    """The body as the MAC covers it: lines without trailing space or CR, no empty lines
    (transport may re-wrap line ends; JSON lines never end with a space)."""
    return b"\n".join(line.rstrip() for line in body.splitlines() if line.strip())


def sync_mac(key: bytes, body: bytes) -> str:
    return hmac.new(key, SYNC_MAC_LABEL + _canonical(body), hashlib.sha256).hexdigest()


def sync_message(entries: list[Entry], settings: Settings, keys, peers: list[str]) -> bytes:
    body = _sync_body(entries)
    note = EmailMessage(policy=email_policy.SMTP)
    note["From"] = settings.sync_address
    note["To"] = ", ".join(peers)
    note["Subject"] = f"mailops suppression sync from {settings.fqdn}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    note["Date"] = formatdate(localtime=False)
    note["Message-ID"] = make_msgid(domain=settings.fqdn)
    note["Auto-Submitted"] = "auto-generated"
    note[SYNC_HEADER] = f"v1; origin={settings.fqdn}; mac={sync_mac(keys[0], body)}"
    note.set_content(body.decode("ascii") + "\n", cte="7bit")
    return note.as_bytes()


def read_sync(raw: bytes, keys) -> list[Entry]:
    """The entries of a replication message whose HMAC one of the keys made; MailopsError otherwise."""
    msg = BytesParser(policy=email_policy.compat32).parsebytes(raw)
    header = " ".join(str(msg.get(SYNC_HEADER, "")).split())
    fields = dict(part.strip().partition("=")[::2] for part in header.split(";") if "=" in part)
    mac = fields.get("mac", "").strip().lower()
    if not header.startswith("v1") or len(mac) != 64:
        raise MailopsError(f"a replication message without a valid {SYNC_HEADER} header")
    body = msg.get_payload(decode=True) if not msg.is_multipart() else None
    if not isinstance(body, bytes):
        raise MailopsError("a replication message must be one text part")
    if not keys or not any(hmac.compare_digest(mac, sync_mac(key, body)) for key in keys):
        raise MailopsError("a replication message with a wrong HMAC (not signed with this fleet's return-path key)")
    now = datetime.now(timezone.utc)
    entries = []
    for number, line in enumerate(_canonical(body).splitlines(), start=1):
        try:
            entries.append(entry_from_mapping(json.loads(line), now))
        except (ValueError, EntryError) as exc:
            raise MailopsError(f"replication message line {number}: {exc}") from None
    return entries


def is_sync_recipient(recipient: str, settings: Settings) -> bool:
    local, _, domain = (recipient or "").strip().strip("<>").lower().rpartition("@")
    return local == settings.sync_local and (domain == settings.fqdn or domain in settings.return_domains)


class Outbox:
    """What this host has pushed to its peers (sqlite next to the suppression list)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript("CREATE TABLE IF NOT EXISTS pushed (target TEXT NOT NULL, scope TEXT NOT NULL,"
                              " updated TEXT NOT NULL, PRIMARY KEY (target, scope, updated));"
                              "CREATE TABLE IF NOT EXISTS mark (id INTEGER PRIMARY KEY CHECK (id = 1),"
                              " stamp TEXT NOT NULL);")

    def close(self) -> None:
        self.db.close()

    def mark(self) -> str:
        row = self.db.execute("SELECT stamp FROM mark WHERE id = 1").fetchone()
        return row[0] if row else ""

    def pending(self, suppressions: SuppressionList, skip_origins: set[str]) -> list[Entry]:
        mark = self.mark()
        since = stamp(parse_time(mark, "mark") - PUSH_OVERLAP) if mark else ""
        out = []
        for entry in suppressions.changes_since(since):
            if entry.origin in skip_origins:
                continue       # a peer's own change reached us from that peer: every peer got it from there
            if self.db.execute("SELECT 1 FROM pushed WHERE target = ? AND scope = ? AND updated = ?",
                               (entry.target, entry.scope, entry.updated)).fetchone() is None:
                out.append(entry)
        return out

    def done(self, entries: list[Entry]) -> None:
        if not entries:
            return
        newest = max(e.updated for e in entries)
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO pushed VALUES (?, ?, ?)",
                                [(e.target, e.scope, e.updated) for e in entries])
            if newest > self.mark():
                self.db.execute("INSERT INTO mark VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET stamp = excluded.stamp",
                                (newest,))
            cutoff = stamp(parse_time(max(newest, self.mark()), "mark") - PUSH_KEEP)
            self.db.execute("DELETE FROM pushed WHERE updated < ?", (cutoff,))


def outbox_path(suppressions_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(suppressions_path)), "outbox.sqlite3")


def push_pending(settings: Settings, suppressions: SuppressionList, keys, outbox: Outbox) -> int:
    """Send every change no peer got from this host yet; how many entries were queued.

    Changes that came from a peer (their origin is that peer) are not sent back."""
    peer_hosts = {p.rpartition("@")[2] for p in settings.peers}
    entries = outbox.pending(suppressions, peer_hosts)
    if not entries:
        return 0
    if settings.peers:
        for start in range(0, len(entries), SYNC_BATCH):
            batch = entries[start:start + SYNC_BATCH]
            sendmail(settings, settings.sync_address, settings.peers,
                     sync_message(batch, settings, keys, settings.peers))
    outbox.done(entries)
    return len(entries) if settings.peers else 0


def push_command(settings: Settings, suppressions_path: str, keys) -> int:
    suppressions = settings.suppression_list(suppressions_path)
    outbox = Outbox(outbox_path(suppressions_path))
    try:
        return push_pending(settings, suppressions, keys, outbox)
    finally:
        outbox.close()
        suppressions.close()


def main(argv=None, stdin=None) -> int:
    parser = argparse.ArgumentParser(prog="mailops-returnpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", help="event store (sqlite); required unless --push")
    parser.add_argument("--config", help="the host's return-path settings (JSON): forward, replicate")
    parser.add_argument("--push", action="store_true",
                        help="only push this host's changes that no peer got yet (needs --config, --key-file, "
                             "--suppressions)")
    parser.add_argument("--suppressions", help="suppression list (sqlite)")
    parser.add_argument("--key-file", help="return-path keys, hex, one per line, newest first (mode 0600)")
    parser.add_argument("--tokens", help="token table (sqlite)")
    parser.add_argument("--recipient")
    parser.add_argument("--sender", default="")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK
    if args.push:
        if not (args.config and args.key_file and args.suppressions):
            print("mailops-returnpath: --push needs --config, --key-file and --suppressions", file=sys.stderr)
            return EX_USAGE
        try:
            count = push_command(load_settings(args.config), args.suppressions, read_keys(args.key_file))
        except (MailopsError, sqlite3.Error, OSError) as exc:
            print(f"mailops-returnpath: push failed: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        print(f"mailops-returnpath: {count} change(s) queued for the peers", file=sys.stderr)
        return EX_OK
    if not args.events or args.recipient is None:
        print("mailops-returnpath: --events and --recipient are required", file=sys.stderr)
        return EX_USAGE
    source = stdin if stdin is not None else sys.stdin.buffer
    raw = source.read(MAX_INPUT_BYTES + 1)
    try:
        settings = load_settings(args.config) if args.config else None
        keys = read_keys(args.key_file) if args.key_file else None
        if settings is not None and is_sync_recipient(args.recipient, settings):
            return _receive_sync(raw, args, settings, keys)
        store = EventStore(args.events)
        suppressions = (settings.suppression_list(args.suppressions) if settings else
                        SuppressionList(args.suppressions)) if args.suppressions else None
        tokens = TokenTable(args.tokens) if args.tokens else None
        event, new, made = receive(raw, args.recipient, args.sender, store=store, suppressions=suppressions,
                                   keys=keys, tokens=tokens, subdomain=settings.subdomain if settings else None)
    except (MailopsError, sqlite3.Error, OSError) as exc:
        print(f"mailops-returnpath: deferred: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    state = "stored" if new else "already stored"
    print(f"mailops-returnpath: {event.kind} {event.digest[:12]} {state}; {len(made)} suppression(s); "
          f"{event.reason}"[:500], file=sys.stderr)
    if settings is None:
        return EX_OK
    try:
        if event.kind == FORWARD and settings.operator_email:
            forward(raw, event, settings)
            print(f"mailops-returnpath: forwarded {event.digest[:12]} to {settings.operator_email}", file=sys.stderr)
        if suppressions is not None and keys:
            outbox = Outbox(outbox_path(args.suppressions))
            try:
                pushed = push_pending(settings, suppressions, keys, outbox)
            finally:
                outbox.close()
            if pushed:
                print(f"mailops-returnpath: {pushed} change(s) queued for {len(settings.peers)} peer(s)",
                      file=sys.stderr)
    except (MailopsError, sqlite3.Error, OSError) as exc:
        # stored already: the redelivery is recognised, and the forward or push is tried again
        print(f"mailops-returnpath: deferred after storing: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    return EX_OK


def _receive_sync(raw: bytes, args, settings: Settings, keys) -> int:
    """A replication message from a peer: merged when its HMAC is right, kept as unparsed otherwise."""
    try:
        entries = read_sync(raw, keys)
    except MailopsError as exc:
        store = EventStore(args.events)
        event = classify(raw, args.recipient, args.sender)
        event.kind, event.reason, event.bounces, event.complaints, event.dmarc, event.tls = \
            UNPARSED, f"replication message refused: {exc}"[:500], [], [], [], []
        store.record(event, raw)
        print(f"mailops-returnpath: {event.reason}", file=sys.stderr)
        return EX_OK
    if not args.suppressions:
        raise MailopsError("a replication message needs --suppressions")
    suppressions = settings.suppression_list(args.suppressions)
    try:
        changed = suppressions.merge(entries)
    finally:
        suppressions.close()
    print(f"mailops-returnpath: replication from {args.sender or '<>'}: {len(entries)} entr(ies), "
          f"{changed} changed here", file=sys.stderr)
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())

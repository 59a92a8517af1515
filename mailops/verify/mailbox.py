"""Where the live send's test message is read back: one interface, one class per kind of mailbox.

verify only talks to a :class:`Mailbox`: find the message by its Message-ID
(waiting a bounded time), then delete it.  ``open_mailboxes`` builds one per
entry of the inventory's ``mailops_verify.mailboxes``: an IMAP account at a
mailbox provider (the real-world case, and the lab's default) or a Maildir on
this machine.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Protocol

from mailops.errors import MailopsError

POLL_SECONDS = 0.25
IMAP_POLL_SECONDS = 0.5
IMAP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Received:
    raw: bytes
    folder: str  # where it landed: INBOX, or e.g. Junk (a deliverability signal)


class Mailbox(Protocol):
    recipient: str  # the address the test message is sent to

    def describe(self) -> str:
        """Where the mailbox is, for messages (never a secret)."""

    def problem(self) -> str | None:
        """Why the mailbox cannot be read at all (then nothing is sent), or None."""

    def wait(self, message_id: str, timeout: float) -> Received | None:
        """The message with this Message-ID once it is there; None after ``timeout`` seconds."""

    def delete(self, message_id: str) -> None:
        """Remove the message (verify's test messages do not pile up); MailopsError when it cannot."""


class MaildirMailbox:
    """A Maildir readable from the machine that runs verify, with Maildir++ subfolders (``.Junk``)."""

    def __init__(self, path: Path, recipient: str) -> None:
        self.path = Path(path)
        self.recipient = recipient

    def describe(self) -> str:
        return f"Maildir {self.path}"

    def problem(self) -> str | None:
        missing = [d for d in ("new", "cur") if not (self.path / d).is_dir()]
        if missing:
            return (f"mailops_verify.mailbox: {self.path} is not a Maildir here (no {' or '.join(missing)}/); "
                    "point maildir: at the receiving mailbox's Maildir")
        return None

    def _folders(self) -> list[tuple[str, Path]]:
        subfolders = sorted(p for p in self.path.glob(".*") if p.is_dir() and (p / "cur").is_dir())
        return [("INBOX", self.path)] + [(p.name[1:], p) for p in subfolders]

    def _find(self, message_id: str) -> tuple[str, Path] | None:
        parser = BytesHeaderParser(policy=default_policy)
        for folder, root in self._folders():
            for sub in ("new", "cur"):
                try:
                    files = list((root / sub).iterdir())
                except OSError:
                    continue
                for path in files:
                    try:
                        with path.open("rb") as f:
                            headers = parser.parse(f)
                    except OSError:
                        continue  # moved between new/ and cur/ while we looked: found on the next pass
                    if str(headers.get("Message-ID", "")).strip() == message_id:
                        return folder, path
        return None

    def wait(self, message_id: str, timeout: float) -> Received | None:
        deadline = time.monotonic() + timeout
        while True:
            found = self._find(message_id)
            if found:
                try:
                    return Received(found[1].read_bytes(), found[0])
                except OSError:
                    pass  # moved (new/ -> cur/): look again
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    def delete(self, message_id: str) -> None:
        found = self._find(message_id)
        if found is None:
            return
        try:
            found[1].unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise MailopsError(f"cannot delete the test message {found[1]} ({exc.strerror})") from None


class _Imap(imaplib.IMAP4):
    """IMAP to a resolved address, checking the certificate against the host name."""

    def __init__(self, host: str, address: str, port: int, context: ssl.SSLContext | None, timeout: float):
        self._address, self._context = address, context
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self._address, self.port), timeout)
        return self._context.wrap_socket(sock, server_hostname=self.host) if self._context else sock


_LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$')
_JUNK_NAMES = ("junk", "spam", "junk e-mail", "junk email", "bulk mail", "[gmail]/spam")


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """A mailbox at an IMAP server: polled for the Message-ID in each folder, then the
    message is flagged \\Deleted and expunged."""

    def __init__(self, settings, password: str, recipient: str, *, resolvers: list[str], label: str) -> None:
        self.settings, self.recipient, self.label = settings, recipient, label
        self._password, self._resolvers = password, list(resolvers)
        self._folders: list[str] | None = list(settings.folders) if settings.folders else None

    def describe(self) -> str:
        s = self.settings
        return f"IMAP {s.login} at {s.host}:{s.effective_port}"

    def _address(self) -> str:
        from mailops.dns.sync import DnsReader
        from mailops.verify.dnsview import DnsView

        view = DnsView(DnsReader(self._resolvers))
        for rtype in ("A", "AAAA"):
            found = view.resolve(self.settings.host, rtype)
            if found:
                return sorted(found)[0]
        raise MailopsError(f"{self.label}: {self.settings.host} has no address in DNS; check imap.host")

    def _connect(self) -> imaplib.IMAP4:
        s = self.settings
        try:
            context = ssl.create_default_context(cafile=s.ca_bundle) if s.ca_bundle else ssl.create_default_context()
        except (OSError, ssl.SSLError) as exc:
            raise MailopsError(f"{self.label}: imap.ca_bundle {s.ca_bundle} is not a readable PEM file "
                               f"({getattr(exc, 'strerror', None) or exc}); point it at the server's CA roots") from None
        address = self._address()
        where = f"{s.host}:{s.effective_port}"
        try:
            conn = _Imap(s.host, address, s.effective_port, context if s.tls == "implicit" else None, IMAP_TIMEOUT)
            if s.tls == "starttls":
                conn.starttls(ssl_context=context)
        except ssl.SSLCertVerificationError as exc:
            raise MailopsError(f"{self.label}: {where} certificate not trusted ({exc.verify_message}); "
                               "set imap.ca_bundle to its CA roots") from None
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise MailopsError(f"{self.label}: cannot reach {where} ({exc or type(exc).__name__}); "
                               "check imap.host, imap.port and imap.tls") from None
        try:
            conn.login(s.login, self._password)
        except imaplib.IMAP4.error as exc:
            _close(conn)
            text = str(exc).strip("b'\"")[:120]
            raise MailopsError(f"{self.label}: {where} refused the login of {s.login} ({text}); "
                               "check imap.login and the secret imap.password points to") from None
        except OSError as exc:
            raise MailopsError(f"{self.label}: {where} closed the connection at login ({exc})") from None
        return conn

    def _list_folders(self, conn: imaplib.IMAP4) -> list[str]:
        if self._folders is None:
            typ, lines = conn.list()
            found: list[tuple[bytes, str]] = []
            for line in lines or []:
                m = _LIST_LINE.match(line) if isinstance(line, bytes) else None
                if m:
                    name = m["name"].decode("utf-8", "replace")
                    found.append((m["flags"].lower(), name[1:-1] if name.startswith('"') else name))
            junk = [n for f, n in found if b"\\junk" in f.split()]
            if not junk:  # no SPECIAL-USE: the usual names
                junk = [n for f, n in found if n.lower() in _JUNK_NAMES]
            self._folders = ["INBOX"] + [n for n in junk if n.upper() != "INBOX"]
        return self._folders

    def problem(self) -> str | None:
        try:
            conn = self._connect()
        except MailopsError as exc:
            return str(exc)
        try:
            self._list_folders(conn)
        except (OSError, imaplib.IMAP4.error) as exc:
            return f"{self.label}: cannot list the folders of {self.describe()} ({exc})"
        finally:
            _close(conn)
        return None

    def _search(self, conn: imaplib.IMAP4, folder: str, message_id: str, *, readonly: bool) -> list[bytes]:
        typ, _ = conn.select(_quoted(folder), readonly=readonly)
        if typ != "OK":
            return []
        typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", _quoted(message_id))
        return data[0].split() if typ == "OK" and data and data[0] else []

    def wait(self, message_id: str, timeout: float) -> Received | None:
        deadline = time.monotonic() + timeout
        conn = self._connect()
        try:
            folders = self._list_folders(conn)
            while True:
                for folder in folders:
                    uids = self._search(conn, folder, message_id, readonly=True)
                    if uids:
                        typ, data = conn.uid("FETCH", uids[0], "(BODY.PEEK[])")
                        raw = next((part[1] for part in data or [] if isinstance(part, tuple)), None)
                        if typ == "OK" and raw:
                            return Received(raw, folder)
                if time.monotonic() >= deadline:
                    return None
                time.sleep(IMAP_POLL_SECONDS)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailopsError(f"{self.label}: {self.describe()} failed while searching ({exc})") from None
        finally:
            _close(conn)

    def delete(self, message_id: str) -> None:
        conn = self._connect()
        try:
            for folder in self._list_folders(conn):
                uids = self._search(conn, folder, message_id, readonly=False)
                if not uids:
                    continue
                conn.uid("STORE", b",".join(uids), "+FLAGS.SILENT", r"(\Deleted)")
                if "UIDPLUS" in conn.capabilities:
                    conn.uid("EXPUNGE", b",".join(uids))  # RFC 4315: only ours, not what the owner flagged
                else:
                    conn.expunge()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailopsError(f"{self.label}: cannot delete the test message at {self.describe()} ({exc})") from None
        finally:
            _close(conn)


def _close(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (OSError, imaplib.IMAP4.error):
        pass


@dataclass(frozen=True)
class SeedMailbox:
    """One configured mailbox: ready to use, or the one-line reason it cannot be used."""
    name: str
    authserv_id: str
    recipient: str
    mailbox: Mailbox | None
    problem: str | None


def open_mailboxes(inv, *, check: bool = True) -> list[SeedMailbox]:
    """The inventory's seed mailboxes (``mailops_verify.mailboxes``), each checked once (login,
    folders) unless ``check`` is false; secrets are resolved here and never shown."""
    out = []
    for i, box in enumerate(inv.verify.mailboxes):
        label = f"mailops_verify.mailboxes[{i}] ({box.name})"
        mailbox: Mailbox | None = None
        problem = None
        if box.maildir is not None:
            mailbox = MaildirMailbox(Path(box.maildir), str(box.recipient))
        else:
            try:
                password = inv.secret(box.imap.password)
            except MailopsError as exc:
                problem = f"{label}: imap.password: {exc}"
            else:
                mailbox = ImapMailbox(box.imap, password, str(box.recipient), resolvers=inv.dns_resolvers, label=label)
        if mailbox is not None and check:
            problem = mailbox.problem()
        out.append(SeedMailbox(box.name, str(box.authserv_id), str(box.recipient),
                               mailbox if problem is None else None, problem))
    return out

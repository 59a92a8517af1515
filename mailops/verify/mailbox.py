"""Where the live send's test message is read back: one interface, one class per kind of mailbox.

verify only talks to a :class:`Mailbox`: find the message by its Message-ID
(waiting a bounded time), then delete it.  ``open_mailbox`` builds one from
the inventory's ``mailops_verify.mailbox``; a new kind (IMAP) is a new class
here and one branch there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Protocol

from mailops.errors import MailopsError

POLL_SECONDS = 0.25


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


def open_mailbox(settings) -> Mailbox | None:
    """The mailbox named by ``mailops_verify`` (``VerifySettings``), or None when none is configured."""
    if settings.mailbox is None or settings.recipient is None:
        return None
    return MaildirMailbox(Path(settings.mailbox.maildir), str(settings.recipient))

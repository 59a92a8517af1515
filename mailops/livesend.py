"""Submit a message the way a sending application does: port 587, STARTTLS
(certificate verified), AUTH, then hand over the message."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mailops.errors import MailopsError


def submit(*, server: str, port: int = 587, server_name: str, login: str, password: str, sender: str,
           recipient: str, subject: str, body: str = "sent by mailops\n", cadata: str | None = None,
           timeout: float = 30) -> str:
    """Returns the Message-ID.  server is the address to connect to; server_name the
    name the certificate must be valid for (checked, never skipped)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=sender.rsplit("@", 1)[-1])
    msg.set_content(body)
    ctx = ssl.create_default_context(cadata=cadata) if cadata else ssl.create_default_context()
    try:
        with smtplib.SMTP(server, port, timeout=timeout) as smtp:
            smtp._host = server_name  # certificate name check against the server's FQDN
            smtp.starttls(context=ctx)
            smtp.login(login, password)
            smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailopsError(f"{server_name}:{port}: login as {login} refused ({exc.smtp_code})") from exc
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise MailopsError(f"{server_name}:{port}: submission failed: {exc}") from exc
    return msg["Message-ID"]

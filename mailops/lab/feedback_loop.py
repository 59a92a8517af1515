"""The lab receiver's feedback loop: an RFC 5965 ARF complaint for a delivered message.

This file runs *on the receiving machine* (mx.inbox.test): configure_root copies it to
/usr/local/lib/mailops-lab/feedback_loop.py and Postfix runs it as a pipe transport
(``lab-feedback``) for the copy of each message to ``complain-*@inbox.test``
(recipient_bcc_maps), with the envelope sender, that copy's recipient, the SMTP
client's address and the queue ID as arguments.  It reads the message on stdin and
submits the report with the receiver's own sendmail(1), so the complaint leaves from
the receiver's IP through its Postfix, like a mailbox provider's.  Standard library
only: the machine has python3 and nothing else of ours.

Where the report goes: ``abuse@`` of the DKIM d= domain that this receiver verified
(``dkim=pass`` in its own Authentication-Results; of several, the one aligned with the
From domain), as Yahoo's Complaint Feedback Loop does - it keys its feedback loop
subscriptions on d=.  A verified d= is the domain that proved it sent the message; the
From domain alone can be forged, and a complaint sent there would land on the victim of
a spoofer.  Only without a verified signature does the report go to ``abuse@`` of the
From domain, the one hint left (what a person complaining by hand would use).

The report: ``multipart/report; report-type=feedback-report`` with a human-readable
part, a ``message/feedback-report`` part (Feedback-Type: abuse, User-Agent, Version,
Original-Mail-From, Original-Rcpt-To, Arrival-Date, Reporting-MTA, Source-IP,
Authentication-Results, Reported-Domain) and the whole original message as
``message/rfc822``.

Exit codes are sysexits(3), which Postfix's pipe understands: 0 sent, 65 (EX_DATAERR)
for a message that cannot be read (bounced), 75 (EX_TEMPFAIL) when sendmail fails
(Postfix tries again)."""

from __future__ import annotations

import email
import email.policy
import email.utils
import ipaddress
import subprocess
import sys
import time
import uuid

USER_AGENT = "mailops-lab-feedback-loop/1.0"
REPORTER = "mx.inbox.test"
MAILBOX_DOMAIN = "inbox.test"
REPORT_FROM = f"feedback-loop@{MAILBOX_DOMAIN}"
SENDMAIL = "/usr/sbin/sendmail"
EX_DATAERR, EX_TEMPFAIL = 65, 75


def _split_resinfo(text: str) -> list[str]:
    """An Authentication-Results value split at the semicolons outside comments and quotes
    (OpenDKIM writes ``dkim=pass (2048-bit key; unprotected) header.d=...``)."""
    parts, current, depth, quoted = [], [], 0, False
    for char in text:
        if char == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")" and depth:
            depth -= 1
        elif char == ";" and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def receiver_results(msg, authserv_id: str = REPORTER) -> list[str]:
    """The resinfo parts ("dkim=pass header.d=x ...") of this receiver's Authentication-Results."""
    found = []
    for value in msg.get_all("Authentication-Results", []):
        head, *rest = _split_resinfo(" ".join(str(value).split()))
        if head.split()[:1] == [authserv_id]:
            found.extend(part for part in rest if part)
    return found


def _prop(resinfo: str, name: str) -> str | None:
    for token in resinfo.split():
        if token.lower().startswith(name + "="):
            return token.split("=", 1)[1].strip('"').lower() or None
    return None


def _domain_of(address: str | None) -> str | None:
    _, addr = email.utils.parseaddr(address or "")
    domain = addr.rpartition("@")[2].strip().lower().rstrip(".")
    return domain or None


def _aligned(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def report_domain(msg, authserv_id: str = REPORTER) -> tuple[str | None, str]:
    """(domain whose abuse@ gets the report, why); (None, why) when there is none."""
    from_domain = _domain_of(str(msg.get("From", "")))
    verified = [_prop(r, "header.d") for r in receiver_results(msg, authserv_id)
                if r.lower().startswith("dkim=pass")]
    verified = [d for d in verified if d]
    if verified:
        aligned = [d for d in verified if from_domain and _aligned(d, from_domain)]
        return (aligned or verified)[0], "DKIM d= verified by the receiver"
    if from_domain:
        return from_domain, "From domain (no DKIM signature the receiver verified)"
    return None, "no verified DKIM signature and no From domain"


def arrival_date(msg, reporter: str = REPORTER) -> str:
    """When the receiver accepted the message: the date of its own Received header."""
    for value in msg.get_all("Received", []):
        text = " ".join(str(value).split())
        if f" by {reporter} " in f" {text} " and ";" in text:
            stamp = text.rpartition(";")[2].strip()
            if email.utils.parsedate_tz(stamp):
                return stamp
    return email.utils.formatdate(time.time())


def build_arf(original: bytes, *, mail_from: str, rcpt_to: str, source_ip: str, report_to: str,
              reported_domain: str, arrival: str, auth_results: list[str], reporter: str = REPORTER,
              report_from: str = REPORT_FROM, now: float | None = None, boundary: str | None = None) -> bytes:
    """The RFC 5965 report, as bytes ready for sendmail (LF line ends)."""
    original = original.replace(b"\r\n", b"\n")
    msg = email.message_from_bytes(original, policy=email.policy.compat32)
    subject = " ".join(str(msg.get("Subject", "")).split())[:200]
    boundary = boundary or f"=_arf_{uuid.uuid4().hex}"
    eight_bit = any(b > 0x7F for b in original)
    try:
        source_ip = str(ipaddress.ip_address(source_ip))
    except ValueError:          # submitted on the receiver itself: no SMTP client to name
        source_ip = ""
    fields = ["Feedback-Type: abuse", f"User-Agent: {USER_AGENT}", "Version: 1",
              f"Original-Mail-From: <{mail_from}>", f"Original-Rcpt-To: <{rcpt_to}>",
              f"Arrival-Date: {arrival}", f"Reporting-MTA: dns; {reporter}"]
    if source_ip:
        fields.append(f"Source-IP: {source_ip}")
    if auth_results:
        fields.append(f"Authentication-Results: {reporter}; " + "; ".join(auth_results))
    fields.append(f"Reported-Domain: {reported_domain}")
    human = (f"This is an email abuse report for an email message received from "
             f"{'IP ' + source_ip if source_ip else 'a local sender'} on {arrival}.\nThe recipient <{rcpt_to}> marked it as spam.\n"
             "For more information about this format please see https://www.rfc-editor.org/rfc/rfc5965\n")
    head = [
        f"From: {reporter} Feedback Loop <{report_from}>",
        f"To: <{report_to}>",
        f"Subject: Abuse report: {subject or '(no subject)'}"[:900],
        f"Date: {email.utils.formatdate(now if now is not None else time.time())}",
        f"Message-ID: <{uuid.uuid4().hex}@{reporter}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report;\n\tboundary="{boundary}"',
    ]
    if eight_bit:
        head.append("Content-Transfer-Encoding: 8bit")
    parts = [
        "\n".join(head), "", "This is a multi-part message in MIME format.", "",
        f"--{boundary}", 'Content-Type: text/plain; charset="us-ascii"', "Content-Transfer-Encoding: 7bit", "",
        human, f"--{boundary}", "Content-Type: message/feedback-report", "", "\n".join(fields), "",
        f"--{boundary}", "Content-Type: message/rfc822", "Content-Disposition: inline",
    ]
    if eight_bit:
        parts.append("Content-Transfer-Encoding: 8bit")
    text = "\n".join(parts).encode("ascii", "replace") + b"\n\n"
    return text + original.rstrip(b"\n") + f"\n\n--{boundary}--\n".encode("ascii")


def complaint_recipient(copy_recipient: str) -> str:
    """The complaining address from the copy's recipient (complain-x@feedback-loop.invalid)."""
    return copy_recipient.rpartition("@")[0] + "@" + MAILBOX_DOMAIN


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: feedback_loop.py SENDER RECIPIENT CLIENT_ADDRESS QUEUE_ID", file=sys.stderr)
        return EX_DATAERR
    sender, copy_recipient, client_address, queue_id = argv
    raw = sys.stdin.buffer.read()
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not msg.keys():
        print(f"{queue_id}: the message has no headers; no feedback report", file=sys.stderr)
        return EX_DATAERR
    domain, why = report_domain(msg)
    if domain is None:
        print(f"{queue_id}: {why}; no feedback report", file=sys.stderr)
        return EX_DATAERR
    report_to = f"abuse@{domain}"
    report = build_arf(raw, mail_from=sender, rcpt_to=complaint_recipient(copy_recipient),
                       source_ip=client_address, report_to=report_to, reported_domain=domain,
                       arrival=arrival_date(msg), auth_results=receiver_results(msg))
    try:
        proc = subprocess.run([SENDMAIL, "-i", "-f", REPORT_FROM, "--", report_to], input=report,
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"{queue_id}: sendmail failed: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    if proc.returncode != 0:
        print(f"{queue_id}: sendmail exited {proc.returncode}: "
              f"{proc.stderr.decode('utf-8', 'replace').strip()[:300]}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Live send: submit on 587 (STARTTLS, certificate verified, AUTH) as a configured user,
wait for the message at each seed mailbox (IMAP or Maildir), and require dkim/spf/dmarc=pass
at the receiver.  Rows are named ``<mailbox>.<check>`` (e.g. ``gmail.receiver.dkim``), one
set per sending domain and mailbox, so placement can be compared across providers.

The DKIM signature is verified again here (dkimpy against the inventory's
resolvers), and the headers are searched for what a submission must not leak.
When the message does not arrive, the server is asked why (over SSH): a
stopped OpenDKIM makes Postfix hold mail (milter_default_action=tempfail), and
verify says so instead of only timing out.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mailops.dns.query import txt_text
from mailops.errors import MailopsError
from mailops.verify.mailbox import Mailbox, SeedMailbox, open_mailboxes
from mailops.verify.result import CheckResult, failed, inconclusive, passed, warned

GROUP = "send"
LEAK_MARKER = "mailops-verify-agent/1"  # sent as User-Agent; must not reach the recipient


def sender_for(inv, domain: str, users=None):
    """The first submission user (of ``users``, default all) that may send as ``domain``, and the
    address it sends from: its login or a send_as address of the domain; (None, None) if none."""
    for user in inv.submission_users if users is None else users:
        if user.login.rsplit("@", 1)[1] == domain:
            return user, user.login
        for addr in user.send_as:
            if addr.rsplit("@", 1)[1] == domain:
                return user, addr
    return None, None


def trusted_auth_results(raw: bytes, authserv_id: str) -> dict[str, str]:
    """The first dkim/spf/dmarc verdict of each method from the Authentication-Results headers of
    ``authserv_id`` only: any other one may have been written by the sender (RFC 8601 section 5)."""
    from mailops.verify.received import auth_results, header_fields

    out: dict[str, str] = {}
    for result in auth_results(header_fields(raw), authserv_id):
        if result.method in ("dkim", "spf", "dmarc"):
            out.setdefault(result.method, result.text)
    return out


def _dnsfunc(resolvers: list[str]):
    import dns.resolver

    def lookup(name, timeout=5):
        r = dns.resolver.Resolver(configure=not resolvers)
        if resolvers:
            r.nameservers = list(resolvers)
        r.lifetime = timeout
        name = name.decode() if isinstance(name, bytes) else name
        try:
            return "".join(txt_text(rd) for rd in r.resolve(name, "TXT")).encode()
        except Exception:  # noqa: BLE001 - dkimpy treats an empty answer as "no key"
            return b""
    return lookup


def _diagnose_hold(host) -> str:
    """Ask the server (a MailHost, over the inventory's SSH access) why mail is not leaving:
    OpenDKIM state and the queue."""
    script = ("systemctl is-active opendkim; "
              "postqueue -j | python3 -c 'import sys,json; q=[json.loads(l) for l in sys.stdin if l.strip()]; "
              "print(len(q), \";\".join(sorted({r.get(\"delay_reason\",\"\")[:80] for m in q for r in m[\"recipients\"]})))'")
    try:
        proc = subprocess.run(host.ssh_command() + [script], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return ""
    state = lines[0].strip()
    queued = lines[1].split(" ", 1) if len(lines) > 1 else ["?", ""]
    text = f"opendkim is {state}; {queued[0]} message(s) in the queue"
    if len(queued) > 1 and queued[1]:
        text += f" ({queued[1]})"
    return text


@dataclass(frozen=True)
class Delivery:
    """A test message submitted through a mail host and found at a mailbox."""
    raw: bytes           # as the mailbox holds it
    folder: str          # where it landed: INBOX, Junk, ...
    seconds: float       # submission to arrival
    client_ip: str | None  # verify's own address as the host saw it (must not leak)
    host: object         # the MailHost it went through
    sender: str
    message_id: str
    mailbox: Mailbox

    def cleanup(self, group: str = GROUP, subject: str = "", name: str = "live-send.cleanup") -> list[CheckResult]:
        """Delete the test message; [] or one warn row saying it is still there."""
        try:
            self.mailbox.delete(self.message_id)
        except MailopsError as exc:
            return [warned(group, subject, name, str(exc),
                           f"delete it by hand; verify needs write access to {self.mailbox.describe()}")]
        return []


def deliver(inv, domain: str, mailbox: Mailbox, *, group: str = GROUP, message: EmailMessage | None = None,
            user=None, timeout: float | None = None, prefix: str = "") -> tuple[Delivery | None, list[CheckResult]]:
    """Submit ``message`` (or a plain test message) as ``user`` (default: the first submission
    user that may send as ``domain``) through the domain's first host, and wait for it at
    ``mailbox``.  To, Message-ID and Date are set here, From only when the message has none.
    Returns the delivery and a pass row, or None and the rows saying why not."""
    name = f"{prefix}live-send"
    user, sender = sender_for(inv, domain, None if user is None else [user])
    if user is None:
        return None, [inconclusive(group, domain, name, "no submission user may send as this domain; "
                                   "add one to mailops_submission_users to test it")]
    if user.password is None:
        return None, [inconclusive(group, domain, name, f"{user.login} has only a password_hash; "
                                   "give it password: {env|file} so verify can log in")]
    host = inv.hosts_for(domain)[0]
    msg = message if message is not None else EmailMessage()
    if message is None:
        msg["Subject"] = f"mailops verify {domain} {uuid.uuid4().hex[:10]}"
        msg.set_content("A live test message from `mailops verify`.\n")
    if "From" not in msg:
        msg["From"] = sender
    for header in ("To", "Date", "Message-ID", "User-Agent"):
        del msg[header]
    msg["To"], msg["Date"], msg["Message-ID"] = mailbox.recipient, formatdate(), make_msgid(domain=domain)
    msg["User-Agent"] = LEAK_MARKER
    cafile = inv.verify.ca_bundle
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    started = time.monotonic()
    client_ip = None
    try:
        with smtplib.SMTP(str(host.ipv4), 587, timeout=30, local_hostname="verify.mailops.invalid") as smtp:
            smtp._host = host.fqdn  # the certificate must be valid for the host name
            client_ip = smtp.sock.getsockname()[0]
            smtp.starttls(context=ctx)
            smtp.login(user.login, inv.secret(user.password))
            smtp.send_message(msg, from_addr=sender)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()), (0, b""))
        else:
            code, text = exc.smtp_code, exc.smtp_error
        detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        if isinstance(exc, smtplib.SMTPAuthenticationError) and code == 535:
            return None, [failed(group, domain, name, f"{host.fqdn}:587 refused the login of {user.login} "
                                 f"({code} {detail[:80]})", "check the user's password source and re-converge the sasl role")]
        if 400 <= code < 500:
            # A temporary refusal: with OpenDKIM down Postfix refuses (tempfail) rather than send unsigned.
            why = _diagnose_hold(host)
            if any(f"opendkim is {s}" in why for s in ("inactive", "failed", "activating")):
                return None, [failed(group, domain, f"{prefix}dkim-signing",
                                     f"signing is down: the live send is held ({code} {detail[:80]}); {why}",
                                     "start OpenDKIM (systemctl start opendkim) and check its log; Postfix holds mail "
                                     "rather than send it unsigned")]
            return None, [failed(group, domain, name,
                                 f"{host.fqdn}:587 refused the message for now ({code} {detail[:80]})"
                                 + (f"; {why}" if why else ""), f"see the mail log on {host.fqdn} (journalctl -u 'postfix*')")]
        return None, [failed(group, domain, name, f"{host.fqdn}:587 refused the message ({code} {detail[:80]})",
                             f"see the mail log on {host.fqdn} (journalctl -u 'postfix*')")]
    except ssl.SSLCertVerificationError as exc:
        return None, [failed(group, domain, name, f"{host.fqdn}:587 certificate not trusted ({exc.verify_message})",
                             "re-issue the certificate: mailops provision apply --tags tls")]
    except (smtplib.SMTPException, OSError) as exc:
        return None, [inconclusive(group, domain, name, f"cannot submit to {host.fqdn}:587 ({exc})")]

    timeout = inv.verify.send_timeout if timeout is None else timeout
    try:
        received = mailbox.wait(msg["Message-ID"], timeout)
    except MailopsError as exc:
        return None, [inconclusive(group, domain, name, f"submitted, but the mailbox could not be read: {exc}")]
    elapsed = time.monotonic() - started
    if received is None:
        why = _diagnose_hold(host)
        signing_down = "opendkim is inactive" in why or "opendkim is failed" in why
        return None, [failed(group, domain, f"{prefix}dkim-signing" if signing_down else name,
                             ("signing is down: " if signing_down else "")
                             + f"the message did not reach {mailbox.recipient} within {timeout:.0f}s"
                             + (f"; {why}" if why else ""),
                             "start OpenDKIM (systemctl start opendkim); the queue then flushes by itself"
                             if signing_down else "look at the queue (postqueue -p) and the mail log on " + host.fqdn)]
    delivery = Delivery(received.raw, received.folder, elapsed, client_ip, host, sender, msg["Message-ID"], mailbox)
    return delivery, [passed(group, domain, name, f"{sender} -> {mailbox.recipient} via {host.fqdn}:587 "
                             f"delivered in {elapsed:.1f}s, into {received.folder} ({msg['Message-ID']})")]


def folder_row(group: str, domain: str, delivery: Delivery, prefix: str = "") -> CheckResult:
    """Inbox or spam: where a mailbox provider put the message is a deliverability signal."""
    if delivery.folder.upper() == "INBOX":
        return passed(group, domain, f"{prefix}folder", f"landed in INBOX of {delivery.mailbox.recipient}")
    return warned(group, domain, f"{prefix}folder", f"landed in {delivery.folder} of {delivery.mailbox.recipient}, "
                  "not the inbox", "the receiver judged it spam: look at the authentication rows, the sending "
                  "address's reputation (DNSBL, warm-up) and the content")


def send_domain(inv, keystore, domain: str, seed: SeedMailbox) -> list[CheckResult]:
    prefix = f"{seed.name}."
    delivery, results = deliver(inv, domain, seed.mailbox, prefix=prefix)
    if delivery is None:
        return results
    results.append(folder_row(GROUP, domain, delivery, prefix))
    results += judge_received(inv, keystore, domain, delivery.raw, authserv_id=seed.authserv_id,
                              client_ip=delivery.client_ip, prefix=prefix)
    return results + delivery.cleanup(GROUP, domain, f"{prefix}live-send.cleanup")


def judge_received(inv, keystore, domain: str, raw: bytes, *, authserv_id: str,
                   client_ip: str | None, prefix: str = "") -> list[CheckResult]:
    """What the received copy proves: the receiver's verdicts, our own DKIM check, no leaked headers."""
    import dkim

    results: list[CheckResult] = []
    ar = trusted_auth_results(raw, authserv_id)
    selectors = {k.selector for k in keystore.signing(domain)} if keystore else set()
    dkim_ar = ar.get("dkim", "none")
    aligned = f"header.d={domain}" in dkim_ar
    right_selector = not selectors or any(f"header.s={s}" in dkim_ar for s in selectors)
    if dkim_ar.startswith("dkim=pass") and aligned and right_selector:
        results.append(passed(GROUP, domain, prefix + "receiver.dkim", dkim_ar))
    else:
        results.append(failed(GROUP, domain, prefix + "receiver.dkim", dkim_ar or "no dkim result",
                              f"the receiver must see dkim=pass with d={domain} and s= an active selector "
                              f"({', '.join(sorted(selectors)) or 'none active'}); run mailops dns sync --apply and "
                              "mailops provision apply --tags opendkim"))
    for method, fix in (("spf", "publish the host's IPv4 and IPv6 in SPF: mailops dns sync --apply"),
                        ("dmarc", "DMARC needs aligned DKIM or SPF: fix the failing one above")):
        value = ar.get(method, "")
        if value.startswith(f"{method}=pass"):
            results.append(passed(GROUP, domain, prefix + f"receiver.{method}", value))
        else:
            results.append(failed(GROUP, domain, prefix + f"receiver.{method}", value or f"no {method} result", fix))
    try:
        ok = dkim.verify(raw, dnsfunc=_dnsfunc(inv.dns_resolvers))
    except Exception as exc:  # noqa: BLE001 - a malformed signature is a failure, not a crash
        ok, err = False, exc
    else:
        err = None
    if ok:
        results.append(passed(GROUP, domain, prefix + "dkim.independent", "the signature verifies with dkimpy against DNS"))
    else:
        results.append(failed(GROUP, domain, prefix + "dkim.independent",
                              f"dkimpy could not verify the signature{f' ({err})' if err else ''}",
                              "compare the published key with the signing key: mailops dns plan; mailops dkim list"))
    headers = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode(errors="replace")
    leaks = [w for w in (LEAK_MARKER, f"[{client_ip}]" if client_ip else None) if w and w in headers]
    if leaks:
        results.append(failed(GROUP, domain, prefix + "header-privacy", f"the received headers contain {', '.join(leaks)}",
                              "re-converge the postfix role (submission header_checks strip Received/User-Agent)"))
    else:
        results.append(passed(GROUP, domain, prefix + "header-privacy", "no client IP or User-Agent in the headers"))
    return results


def check_domains(inv, keystore, domains: list[str]) -> list[CheckResult]:
    """The send group: a live send per domain to each seed mailbox, or one inconclusive row
    per domain (and mailbox) naming what is missing."""
    if not inv.verify.mailboxes:
        return [inconclusive(GROUP, d, "live-send", "no mailops_verify.mailboxes configured; add a seed mailbox "
                             "(imap: {host, login, password}) to send the test message to") for d in domains]
    seeds = open_mailboxes(inv)
    out: list[CheckResult] = []
    jobs = []
    for seed in seeds:
        if seed.mailbox is None:
            out += [inconclusive(GROUP, d, f"{seed.name}.live-send", seed.problem or "unusable") for d in domains]
        else:
            jobs += [(d, seed) for d in domains]
    with ThreadPoolExecutor(8) as pool:
        for rows in pool.map(lambda job: send_domain(inv, keystore, *job), jobs):
            out += rows
    return out

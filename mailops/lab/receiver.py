"""The lab's receiving mail host: mailbox domain ``inbox.test``.

It receives the way a mailbox provider does: Postfix on port 25 (IPv4 and
IPv6), OpenDKIM verifying signatures, the SPF policy daemon checking the
envelope sender, and OpenDMARC evaluating alignment, each against the lab DNS.
Their verdicts are stamped as ``Authentication-Results: mx.inbox.test; ...``
and every message for any address in the domain lands in one Maildir, where
tests read it back (the Maildir is on the host's disk, inside the machine's
root) and mailops reads it over IMAP.  Port 25 offers STARTTLS (opportunistic,
never required) and records the session in its Received header.  Nothing is
rejected for failing authentication: the receiver reports, tests decide.

The mailbox side is Dovecot (mailops/lab/mailbox.py): Postfix hands inbox.test
to Dovecot LMTP, whose global Sieve script files into the Maildir++ folder
``.Junk`` (SPECIAL-USE \\Junk) what failed DMARC here or was addressed to
``junk-*``, and everything else into INBOX; IMAP on 143 (STARTTLS) and 993
with the logins verify@ and seed@inbox.test, both on that one Maildir.
read_mailbox() reads INBOX and Junk and says which.

Some addresses answer the way a real provider's bad days do, so that queue,
statistics, bounce and complaint handling can be tested against real replies:

* ``defer-*@inbox.test`` gets ``450 4.2.1`` (try again later) and
  ``bounce-*@inbox.test`` gets ``550 5.1.1`` (no such mailbox), at RCPT time.
* ``later-*@inbox.test`` is accepted (``250`` after DATA) and then bounced by
  Postfix itself: a transport_maps entry sends it to the ``error`` delivery
  agent with ``5.2.2`` (over quota, as Gmail answers a full mailbox), so the
  receiver's bounce daemon mails a real RFC 3464 DSN to the envelope sender.
* ``complain-*@inbox.test`` is delivered into the mailbox like any address, and
  a copy (recipient_bcc_maps) goes to a pipe transport that runs
  mailops/lab/feedback_loop.py on the receiver: it answers with an RFC 5965
  ARF report (Feedback-Type: abuse), sent by the receiver's own Postfix to
  abuse@ of the message's DKIM d= domain (see that module for why that one).

The receiver's Postfix delivers to other domains (DSNs, complaints, reports)
with opportunistic TLS and logs each TLS session (to the journal, as Postfix on
Debian 12 does); OpenDMARC writes its HistoryFile to
/var/lib/opendmarc/history.dat.  Both are what mailops/lab/provider_reports.py
builds the receiver's DMARC aggregate and TLS-RPT reports from (`mailops lab
reports`).
"""

from __future__ import annotations

import email
import email.policy
import os
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from mailops.errors import MailopsError
from mailops.lab import mailbox
from mailops.lab.config import MAILBOX_DOMAIN, LabConfig, Machine

MAILDIR = Path("var/mail/vhosts") / MAILBOX_DOMAIN / "Maildir"
VMAIL_UID = 5000
DKIM_PORT = 8891
DMARC_PORT = 8893
DMARC_HISTORY = "/var/lib/opendmarc/history.dat"     # inside the machine
FEEDBACK_SCRIPT = "/usr/local/lib/mailops-lab/feedback_loop.py"


def _main_cf(cfg: LabConfig, m: Machine) -> str:
    return f"""# mailops lab receiver: written by mailops, replaced on every lab up
compatibility_level = 3.6
myhostname = {m.fqdn}
mydomain = {MAILBOX_DOMAIN}
myorigin = $mydomain
mydestination = localhost
inet_interfaces = all
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
readme_directory = no
alias_maps =
alias_database =
smtputf8_enable = no
disable_dns_lookups = no
smtp_dns_support_level = enabled

# every address in the mailbox domain is delivered to one Maildir, through Dovecot LMTP
# (its Sieve script files spam into Junk; it records the recipient in Delivered-To).
# The static map only says every address exists.
virtual_mailbox_domains = {MAILBOX_DOMAIN}
virtual_mailbox_maps = static:{MAILBOX_DOMAIN}/Maildir/
virtual_transport = lmtp:unix:{mailbox.LMTP_SOCKET}

# port 25 offers STARTTLS as a provider's MX does (never required), and says so in Received
smtpd_tls_security_level = may
smtpd_tls_cert_file = {mailbox.TLS_CERT}
smtpd_tls_key_file = {mailbox.TLS_KEY}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1

smtpd_helo_required = yes
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unauth_destination,
    check_recipient_access regexp:/etc/postfix/lab_recipient_access,
    check_policy_service unix:private/policyd-spf
policyd-spf_time_limit = 3600

# OpenDKIM then OpenDMARC: DMARC needs the DKIM verdict stamped first.
smtpd_milters = inet:127.0.0.1:{DKIM_PORT}, inet:127.0.0.1:{DMARC_PORT}
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
message_size_limit = 52428800

# accepted, then bounced (later-*); delivered, then complained about (complain-*)
transport_maps = regexp:/etc/postfix/lab_transport
recipient_bcc_maps = regexp:/etc/postfix/lab_feedback_bcc
# what the receiver sends to other domains (DSNs, complaints, reports): opportunistic
# TLS, each session logged (the lab's TLS-RPT reports are built from the log)
smtp_tls_security_level = may
smtp_tls_loglevel = 1
# accept at RCPT what the transport map bounces later: without this, smtpd rejects an
# address that resolves to the error agent at once (smtpd_check.c check_rcpt_maps)
smtpd_reject_unlisted_recipient = no
"""


# What a provider answers on a bad day: a temporary deferral and a hard bounce at RCPT,
# a bounce after accepting (over quota), and a complaint after delivering.
DEFER_PREFIX, BOUNCE_PREFIX = "defer-", "bounce-"
DEFER_REPLY = "450 4.2.1 Mailbox temporarily unavailable, try again later"
BOUNCE_REPLY = "550 5.1.1 Mailbox does not exist"
LATER_PREFIX, COMPLAIN_PREFIX = "later-", "complain-"
LATER_STATUS = "5.2.2"
LATER_REPLY = f"{LATER_STATUS} The email account that you tried to reach is over quota"
# the complaint copy's address: a domain no DNS answers, routed to the pipe transport
FEEDBACK_DOMAIN = "feedback-loop.invalid"
FEEDBACK_TRANSPORT = "lab-feedback"


def _recipient_access() -> str:
    domain = MAILBOX_DOMAIN.replace(".", r"\.")
    return ("# mailops lab receiver: addresses that answer like a provider's bad day\n"
            f"/^{DEFER_PREFIX}[^@]*@{domain}$/ {DEFER_REPLY}\n"
            f"/^{BOUNCE_PREFIX}[^@]*@{domain}$/ {BOUNCE_REPLY}\n")


def _transport() -> str:
    domain = MAILBOX_DOMAIN.replace(".", r"\.")
    feedback = FEEDBACK_DOMAIN.replace(".", r"\.")
    return ("# mailops lab receiver: accepted at SMTP time, then bounced by the error agent (a real DSN);\n"
            "# the feedback loop's copies go to the pipe transport that sends the ARF report\n"
            f"/^{LATER_PREFIX}[^@]*@{domain}$/ error:{LATER_REPLY}\n"
            f"/@{feedback}$/ {FEEDBACK_TRANSPORT}:\n")


def _feedback_bcc() -> str:
    domain = MAILBOX_DOMAIN.replace(".", r"\.")
    return ("# mailops lab receiver: complain-* is delivered, and a copy goes to the feedback loop\n"
            f"/^({COMPLAIN_PREFIX}[^@]*)@{domain}$/ ${{1}}@{FEEDBACK_DOMAIN}\n")


MASTER_CF_SERVICES = {
    "policyd-spf": ("policyd-spf unix - n n - 0 spawn\n"
                    "  user=policyd-spf argv=/usr/bin/policyd-spf\n"),
    # one complaint at a time; the script submits the report with sendmail(1)
    FEEDBACK_TRANSPORT: (f"{FEEDBACK_TRANSPORT} unix - n n - 1 pipe\n"
                         f"  null_sender= user=nobody argv=/usr/bin/python3 {FEEDBACK_SCRIPT}"
                         " ${sender} ${recipient} ${client_address} ${queue_id}\n"),
}


def _master_cf(text: str) -> str:
    """master.cf with the lab's services appended once each."""
    present = {line.split()[0] for line in text.splitlines() if line.strip() and not line[0] in "# \t"}
    for name, entry in MASTER_CF_SERVICES.items():
        if name not in present:
            text = text.rstrip("\n") + "\n" + entry
    return text


def _opendkim_conf(cfg: LabConfig, m: Machine) -> str:
    return f"""# mailops lab receiver: verify only
Syslog yes
Mode v
AuthservID {m.fqdn}
AlwaysAddARHeader yes
Socket inet:{DKIM_PORT}@127.0.0.1
PidFile /run/opendkim/opendkim.pid
UserID opendkim
UMask 007
Nameservers {cfg.gateway_ipv4}
# libunbound answers NXDOMAIN for the special-use .test TLD unless told not to
ResolverConfiguration /etc/opendkim/unbound.conf
Canonicalization relaxed/simple
"""


def _opendmarc_conf(cfg: LabConfig, m: Machine) -> str:
    return f"""# mailops lab receiver
Syslog true
AuthservID {m.fqdn}
TrustedAuthservIDs {m.fqdn}
Socket inet:{DMARC_PORT}@127.0.0.1
PidFile /run/opendmarc/opendmarc.pid
UserID opendmarc
UMask 0002
SPFSelfValidate false
SPFIgnoreResults false
# SPF is checked once, by policyd-spf; OpenDMARC trusts its Authentication-Results
RejectFailures false
IgnoreAuthenticatedClients true
RequiredHeaders false
# what the lab's DMARC aggregate reports are built from (provider_reports.py)
HistoryFile {DMARC_HISTORY}
"""


def _policyd_spf_conf(m: Machine) -> str:
    return f"""# mailops lab receiver: report, never reject
debugLevel = 1
TestOnly = 1
HELO_reject = False
Mail_From_reject = False
PermError_reject = False
TempError_Defer = False
skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1
Header_Type = AR
Authserv_Id = {m.fqdn}
"""


def configure_root(cfg: LabConfig, m: Machine, root: Path) -> None:
    """Write the receiving stack's configuration into a machine root before boot."""
    (root / "etc/postfix/main.cf").write_text(_main_cf(cfg, m))
    (root / "etc/postfix/lab_recipient_access").write_text(_recipient_access())
    (root / "etc/postfix/lab_transport").write_text(_transport())
    (root / "etc/postfix/lab_feedback_bcc").write_text(_feedback_bcc())
    master = root / "etc/postfix/master.cf"
    master.write_text(_master_cf(master.read_text()))
    script = root / FEEDBACK_SCRIPT.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(Path(__file__).with_name("feedback_loop.py").read_text())
    script.chmod(0o644)
    history = root / DMARC_HISTORY.lstrip("/")
    history.parent.mkdir(parents=True, exist_ok=True)
    uid, gid = _passwd_ids(root, "opendmarc")
    os.chown(history.parent, uid, gid)
    history.parent.chmod(0o750)
    (root / "etc/mailname").write_text(m.fqdn + "\n")
    (root / "etc/opendkim.conf").write_text(_opendkim_conf(cfg, m))
    (root / "etc/opendkim").mkdir(exist_ok=True)
    (root / "etc/opendkim/unbound.conf").write_text(
        "server:\n" + "".join(f'    local-zone: "{z}." nodefault\n' for z in ("test",)))
    (root / "etc/opendmarc.conf").write_text(_opendmarc_conf(cfg, m))
    (root / "etc/postfix-policyd-spf-python/policyd-spf.conf").write_text(_policyd_spf_conf(m))
    # Debian's defaults files point the milters at UNIX sockets; ours are TCP.
    for name in ("opendkim", "opendmarc"):
        defaults = root / f"etc/default/{name}"
        if defaults.exists():
            lines = [l for l in defaults.read_text().splitlines() if not l.startswith("SOCKET=")]
            defaults.write_text("\n".join(lines) + "\n")
    maildir = root / MAILDIR
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    mailbox.configure_root(cfg, m, root, vmail_uid=VMAIL_UID, maildir=MAILDIR,
                           dovecot_gid=_passwd_ids(root, "dovecot")[1])
    for path in [root / "var/mail/vhosts", *[p for p in (root / "var/mail/vhosts").rglob("*")]]:
        os.chown(path, VMAIL_UID, VMAIL_UID)


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    """uid and gid of a user in the machine's own /etc/passwd (not the host's)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise MailopsError(f"the receiver image has no user {user!r} (is its package installed?)")


CONFIG_FILES = ("etc/postfix/main.cf", "etc/postfix/master.cf", "etc/postfix/lab_recipient_access",
                "etc/postfix/lab_transport", "etc/postfix/lab_feedback_bcc", "etc/opendkim.conf",
                "etc/opendmarc.conf", "etc/postfix-policyd-spf-python/policyd-spf.conf",
                FEEDBACK_SCRIPT.lstrip("/"), *(p.lstrip("/") for p in mailbox.CONFIG_FILES))
# the certificate is Postfix's (port 25 STARTTLS) as well as Dovecot's
POSTFIX_FILES = {mailbox.TLS_CERT.lstrip("/"), mailbox.TLS_KEY.lstrip("/")}


def reconfigure(cfg: LabConfig, m: Machine, running: dict) -> list[str]:
    """Bring a running receiver's configuration up to date (``lab up`` on a lab that is up).

    Writes what configure_root writes; reloads Postfix and restarts OpenDKIM/OpenDMARC/Dovecot
    only when their files changed (the Maildir and the queue are kept).  Returns what
    was reloaded or restarted."""
    from mailops.lab import machine

    root = Path(running["root"])
    before = {name: _read(root / name) for name in CONFIG_FILES}
    configure_root(cfg, m, root)
    changed = {name for name in CONFIG_FILES if _read(root / name) != before[name]}
    actions = []
    leader = running["leader_pid"]
    # Dovecot first: Postfix hands inbox.test to its LMTP socket once reloaded
    if changed & {p.lstrip("/") for p in mailbox.CONFIG_FILES}:
        if mailbox.DROPIN.lstrip("/") in changed:
            machine.nsenter(leader, "systemctl", "daemon-reload", timeout=60)
        machine.nsenter(leader, "systemctl", "restart", "dovecot", timeout=60)
        actions.append("dovecot restarted")
    if any(name.startswith("etc/postfix/") or name in POSTFIX_FILES for name in changed):
        machine.nsenter(leader, "postfix", "reload", timeout=60)
        actions.append("postfix reloaded")
    for service in ("opendkim", "opendmarc"):
        if f"etc/{service}.conf" in changed:
            machine.nsenter(leader, "systemctl", "restart", service, timeout=60)
            actions.append(f"{service} restarted")
    return actions


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@dataclass
class ReceivedMessage:
    path: str
    recipient: str
    message: EmailMessage = field(repr=False)
    folder: str = "INBOX"   # or "Junk": where the receiver's Sieve script filed it

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def authentication_results(self) -> list[str]:
        """This receiver's Authentication-Results headers, unfolded."""
        found = []
        for value in self.message.get_all("Authentication-Results", []):
            text = " ".join(str(value).split())
            if text.split(";", 1)[0].strip() == RECEIVER_AUTHSERV:
                found.append(text)
        return found

    def auth_result(self, method: str) -> str | None:
        """'pass', 'fail', ... for dkim/spf/dmarc as stamped by this receiver."""
        for header in self.authentication_results:
            for part in header.split(";")[1:]:
                part = part.strip()
                if part.startswith(method + "="):
                    return part.split("=", 1)[1].split()[0]
        return None


RECEIVER_AUTHSERV = f"mx.{MAILBOX_DOMAIN}"


def read_mailbox(root: Path, recipient: str | None = None) -> list[ReceivedMessage]:
    """Every message delivered to the receiver (optionally for one recipient), in INBOX and in
    the Maildir++ folders (Junk), oldest first."""
    maildir = Path(root) / MAILDIR
    folders = [("INBOX", maildir)] + sorted((p.name[1:], p) for p in maildir.glob(".*") if (p / "cur").is_dir())
    files = []
    for folder, d in folders:
        for sub in ("new", "cur"):
            try:
                entries = list((d / sub).iterdir())
            except FileNotFoundError:
                continue
            for path in entries:
                try:  # IMAP clients move files (new/ -> cur/, flags) while we look
                    files.append((path.stat().st_mtime, path.name, folder, path, path.read_bytes()))
                except FileNotFoundError:
                    continue
    found = []
    for _, _, folder, path, raw in sorted(files, key=lambda f: f[:2]):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        delivered_to = str(msg.get("Delivered-To", "")).strip().strip("<>").lower()
        if recipient and delivered_to != recipient.lower():
            continue
        found.append(ReceivedMessage(str(path), delivered_to, msg, folder))
    return found


def wait_for_message(root: Path, *, recipient: str | None = None, subject: str | None = None,
                     message_id: str | None = None, timeout: float = 30.0) -> ReceivedMessage | None:
    deadline = time.monotonic() + timeout
    while True:
        for msg in read_mailbox(root, recipient):
            if subject is not None and msg.subject != subject:
                continue
            if message_id is not None and str(msg.message.get("Message-ID", "")).strip() != message_id:
                continue
            return msg
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)

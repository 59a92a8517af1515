"""The lab's receiving mail host: mailbox domain ``inbox.test``.

It receives the way a mailbox provider does: Postfix on port 25 (IPv4 and
IPv6), OpenDKIM verifying signatures, the SPF policy daemon checking the
envelope sender, and OpenDMARC evaluating alignment, each against the lab DNS.
Their verdicts are stamped as ``Authentication-Results: mx.inbox.test; ...``
and every message for any address in the domain lands in one Maildir, where
tests and mailops read it back (the Maildir is on the host's disk, inside the
machine's root).  Nothing is rejected for failing authentication: the
receiver reports, tests decide.

Two kinds of address answer the way a real provider's bad days do, so that
queue, statistics and bounce handling can be tested against real replies:
``defer-*@inbox.test`` gets ``450 4.2.1`` (try again later) and
``bounce-*@inbox.test`` gets ``550 5.1.1`` (no such mailbox), at RCPT time.
"""

from __future__ import annotations

import email
import email.policy
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from mailops.lab.config import MAILBOX_DOMAIN, LabConfig, Machine

MAILDIR = Path("var/mail/vhosts") / MAILBOX_DOMAIN / "Maildir"
VMAIL_UID = 5000
DKIM_PORT = 8891
DMARC_PORT = 8893


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

# every address in the mailbox domain is delivered to one Maildir; the
# virtual delivery agent records the recipient in Delivered-To.
virtual_mailbox_domains = {MAILBOX_DOMAIN}
virtual_mailbox_base = /var/mail/vhosts
virtual_mailbox_maps = static:{MAILBOX_DOMAIN}/Maildir/
virtual_uid_maps = static:{VMAIL_UID}
virtual_gid_maps = static:{VMAIL_UID}
virtual_minimum_uid = 100

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
virtual_mailbox_limit = 0
"""


# What a provider answers on a bad day: a temporary deferral and a hard bounce.
DEFER_PREFIX, BOUNCE_PREFIX = "defer-", "bounce-"
DEFER_REPLY = "450 4.2.1 Mailbox temporarily unavailable, try again later"
BOUNCE_REPLY = "550 5.1.1 Mailbox does not exist"


def _recipient_access() -> str:
    domain = MAILBOX_DOMAIN.replace(".", r"\.")
    return ("# mailops lab receiver: addresses that answer like a provider's bad day\n"
            f"/^{DEFER_PREFIX}[^@]*@{domain}$/ {DEFER_REPLY}\n"
            f"/^{BOUNCE_PREFIX}[^@]*@{domain}$/ {BOUNCE_REPLY}\n")


def _master_cf_append() -> str:
    return ("\npolicyd-spf unix - n n - 0 spawn\n"
            "  user=policyd-spf argv=/usr/bin/policyd-spf\n")


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
HistoryFile /run/opendmarc/opendmarc.dat
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
    master = root / "etc/postfix/master.cf"
    text = master.read_text()
    if "policyd-spf" not in text:
        master.write_text(text + _master_cf_append())
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
    for path in [root / "var/mail/vhosts", *[p for p in (root / "var/mail/vhosts").rglob("*")]]:
        import os

        os.chown(path, VMAIL_UID, VMAIL_UID)


@dataclass
class ReceivedMessage:
    path: str
    recipient: str
    message: EmailMessage = field(repr=False)

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
    """Every message delivered to the receiver (optionally for one recipient), oldest first."""
    maildir = Path(root) / MAILDIR
    found = []
    files = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            files.extend(p for p in d.iterdir() if p.is_file())
    files.sort(key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        delivered_to = str(msg.get("Delivered-To", "")).strip().lower()
        if recipient and delivered_to != recipient.lower():
            continue
        found.append(ReceivedMessage(str(path), delivered_to, msg))
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

"""The lab receiver's mailbox side: Dovecot on mx.inbox.test, as a mailbox provider runs it.

* IMAP on 143 (STARTTLS) and 993 (implicit TLS), IPv4 and IPv6; logging in is
  refused until TLS is up.  The certificate for mx.inbox.test comes from a lab
  CA made once by ``lab up`` and kept: its root is ``<state_dir>/mailbox/ca.pem``
  (the host path /var/lib/mailops/lab/mailbox/ca.pem).  Postfix's port 25 offers
  STARTTLS with the same certificate.
* Logins ``verify@inbox.test`` and ``seed@inbox.test``, with the random
  passwords ``lab up`` writes to ``<state_dir>/secrets/imap-<login>.password``
  (0600; only a salted hash goes into the machine).  Both open the one Maildir
  every address of inbox.test is delivered to (receiver.MAILDIR).
* Postfix hands inbox.test to Dovecot LMTP; a global Sieve script (sieve_before)
  files into the Maildir++ folder ``.Junk`` (SPECIAL-USE \\Junk) what this
  receiver's own Authentication-Results judge dmarc=fail, and what is addressed
  to ``junk-*@inbox.test``; the rest goes to INBOX.  LMTP writes Delivered-To
  (the final recipient), as virtual(8) did before.

The configuration is written for Dovecot 2.3 (Debian 12).  Dovecot 2.4 (Debian
13) changed the syntax: the places that change are marked "2.4:".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from mailops.errors import MailopsError
from mailops.lab import pki
from mailops.lab.config import MAILBOX_DOMAIN, LabConfig, Machine

IMAP_LOGINS = ("verify", "seed")           # <login>@inbox.test
IMAP_PORT, IMAPS_PORT = 143, 993
JUNK = "Junk"
JUNK_PREFIX = "junk-"
LMTP_SOCKET = "private/dovecot-lmtp"       # relative to Postfix's queue directory

# in the machine
TLS_DIR = "/etc/ssl/mailops-lab"
TLS_CERT = f"{TLS_DIR}/mx.{MAILBOX_DOMAIN}.pem"
TLS_KEY = f"{TLS_DIR}/mx.{MAILBOX_DOMAIN}.key"
USERS_FILE = "/etc/dovecot/lab-users"
# not under /etc: dovecot.service has ProtectSystem=full, and sievec (ExecStartPre) writes the .svbin
SIEVE_DIR = "/var/lib/dovecot/sieve"
SIEVE_BEFORE = f"{SIEVE_DIR}/lab-before.sieve"
DROPIN = "/etc/systemd/system/dovecot.service.d/mailops-lab.conf"


def ca_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir / "mailbox"


def ca_path(cfg: LabConfig) -> Path:
    """The root that verifies mx.inbox.test's IMAP and SMTP certificate."""
    return ca_dir(cfg) / "ca.pem"


def password_path(cfg: LabConfig, login: str) -> Path:
    return cfg.state_dir / "secrets" / f"imap-{login}.password"


def ensure_certificate(cfg: LabConfig, m: Machine) -> tuple[Path, Path]:
    """The lab mailbox CA (made once, kept) and mx's certificate from it: (cert, key) on the host."""
    d = ca_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    ca = pki.ensure_ca(ca_path(cfg), d / "ca.key", "mailops lab mailbox CA")
    cert, key = d / f"{m.fqdn}.pem", d / f"{m.fqdn}.key"
    pki.ensure_server_cert(cert, key, ca, names=[m.fqdn],
                           ips=[ipaddress.ip_address(m.ipv4), ipaddress.ip_address(m.ipv6)])
    return cert, key


def _password(cfg: LabConfig, login: str) -> str:
    path = password_path(cfg, login)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise MailopsError(f"{path}: missing; `mailops lab up` makes it") from None
    if not value:
        raise MailopsError(f"{path}: empty; remove it and run `mailops lab up` to make a new one")
    return value


def _ssha512(password: str, salt: bytes) -> str:
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def _matches(hashed: str, password: str) -> bool:
    if not hashed.startswith("{SSHA512}"):
        return False
    try:
        raw = base64.b64decode(hashed.removeprefix("{SSHA512}"), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(_ssha512(password, raw[64:]), hashed)


def users_file(cfg: LabConfig, current: str | None) -> str:
    """Dovecot's passwd-file: one salted hash per login.  A hash that still matches its password
    is kept, so an unchanged password leaves the file (and Dovecot) alone."""
    old = {}
    for line in (current or "").splitlines():
        if ":" in line and not line.startswith("#"):
            user, hashed = line.split(":", 2)[:2]
            old[user] = hashed
    lines = ["# mailops lab receiver: IMAP logins (salted hashes; the passwords are on the lab host)"]
    for login in IMAP_LOGINS:
        user, password = f"{login}@{MAILBOX_DOMAIN}", _password(cfg, login)
        hashed = old.get(user, "")
        if not _matches(hashed, password):
            hashed = _ssha512(password, secrets.token_bytes(16))
        lines.append(f"{user}:{hashed}")
    return "\n".join(lines) + "\n"


def dovecot_conf(m: Machine, *, vmail_uid: int, home: str, maildir: str) -> str:
    """/etc/dovecot/dovecot.conf, whole (Debian's conf.d is not included)."""
    # 2.4: the file must begin with dovecot_config_version and dovecot_storage_version.
    return f"""# mailops lab receiver ({m.fqdn}): the mailbox side; written by mailops, replaced on every lab up
# Dovecot 2.3 syntax (Debian 12)
protocols = imap lmtp
listen = *, ::
log_path = syslog
syslog_facility = mail
# passwords never appear in the log
auth_verbose = yes
auth_verbose_passwords = no
auth_debug_passwords = no

# no login without TLS (on 143 the client must STARTTLS first)
ssl = required
# 2.4: ssl_cert/ssl_key become ssl_server_cert_file/ssl_server_key_file (file names, no "<")
ssl_cert = <{TLS_CERT}
ssl_key = <{TLS_KEY}
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login

# 2.4: passdb/userdb blocks are named (passdb passwd-file {{ passwd_file_path = ... }}),
# and static userdb fields become userdb_fields {{ }}.
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%Lu {USERS_FILE}
}}
# every login and every LMTP recipient of {MAILBOX_DOMAIN} is the one shared Maildir
userdb {{
  driver = static
  args = uid={vmail_uid} gid={vmail_uid} home={home} allow_all_users=yes
}}
first_valid_uid = {vmail_uid}
last_valid_uid = {vmail_uid}
# 2.4: mail_location is split into mail_driver = maildir and mail_path
mail_location = maildir:{maildir}

namespace inbox {{
  inbox = yes
  mailbox {JUNK} {{
    special_use = \\Junk
    auto = subscribe
  }}
}}

service imap-login {{
  inet_listener imap {{
    port = {IMAP_PORT}
  }}
  inet_listener imaps {{
    port = {IMAPS_PORT}
    ssl = yes
  }}
}}

# Postfix delivers {MAILBOX_DOMAIN} here (virtual_transport); its lmtp client runs chrooted in the queue dir
service lmtp {{
  unix_listener /var/spool/postfix/{LMTP_SOCKET} {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
# the Delivered-To header names the recipient, as virtual(8) wrote it
lmtp_hdr_delivery_address = final
protocol lmtp {{
  postmaster_address = postmaster@{MAILBOX_DOMAIN}
  mail_plugins = $mail_plugins sieve
}}

# 2.4: sieve_before becomes a named sieve_script {{ type = before ... }} block
plugin {{
  sieve_before = {SIEVE_BEFORE}
}}
"""


def sieve_before(authserv_id: str) -> str:
    """The global Sieve script every delivery runs first."""
    escaped = authserv_id.replace(".", "\\\\.")
    return f"""# mailops lab receiver: what a provider files as spam goes to {JUNK}
require ["fileinto", "envelope", "regex", "mailbox"];
# a test asks for the {JUNK} folder by the recipient's local part
if envelope :localpart :matches "to" "{JUNK_PREFIX}*" {{
    fileinto :create "{JUNK}";
    stop;
}}
# DMARC failed as this receiver judged it: only its own Authentication-Results count
if header :regex "Authentication-Results" "^{escaped}[[:space:]]*;.*[[:space:];]dmarc=fail" {{
    fileinto :create "{JUNK}";
    stop;
}}
"""


DROPIN_TEXT = f"""# mailops lab receiver: compile the global Sieve script at every start
[Service]
ExecStartPre=/usr/bin/sievec {SIEVE_BEFORE}
"""


def _write(root: Path, path: str, text: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None):
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    if not target.exists() or target.read_bytes() != data:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    target.chmod(mode)
    if owner:
        os.chown(target, *owner)


def configure_root(cfg: LabConfig, m: Machine, root: Path, *, vmail_uid: int, maildir: Path,
                   dovecot_gid: int) -> None:
    """Write Dovecot's configuration, the users, the certificate and the Sieve script into a machine root.
    maildir is relative to the root; its parent is the home of every login."""
    cert, key = ensure_certificate(cfg, m)
    _write(root, TLS_CERT, cert.read_bytes())
    _write(root, TLS_KEY, key.read_bytes(), 0o600)
    users = root / USERS_FILE.lstrip("/")
    current = users.read_text() if users.exists() else None
    _write(root, USERS_FILE, users_file(cfg, current), 0o640, (0, dovecot_gid))
    home, mail = "/" + str(maildir.parent), "/" + str(maildir)
    _write(root, "/etc/dovecot/dovecot.conf", dovecot_conf(m, vmail_uid=vmail_uid, home=home, maildir=mail))
    _write(root, SIEVE_BEFORE, sieve_before(m.fqdn))
    _write(root, DROPIN, DROPIN_TEXT)
    # the Junk folder exists from the start: readers of the Maildir see it before any spam arrives
    junk = root / maildir / f".{JUNK}"
    for sub in ("new", "cur", "tmp"):
        (junk / sub).mkdir(parents=True, exist_ok=True)
    (junk / "maildirfolder").touch()


CONFIG_FILES = (TLS_CERT, TLS_KEY, USERS_FILE, "/etc/dovecot/dovecot.conf", SIEVE_BEFORE, DROPIN)

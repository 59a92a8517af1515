"""The lab receiver's mailbox side (mailops/lab/mailbox.py): Dovecot IMAP on mx.inbox.test, delivery
through LMTP and a global Sieve script that files spam into Junk, STARTTLS on port 25.

The unit tests at the top need no lab.  The lab tests talk to mx from the gateway the way a
mail client and a sending MTA do: imaplib and smtplib over TLS, verifying mx.inbox.test's
certificate with the lab mailbox CA's root (<state_dir>/mailbox/ca.pem) and the logins
``lab up`` made (<state_dir>/secrets/imap-*.password)."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import ssl
import stat
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from mailops.lab import core, machine, mailbox, receiver
from mailops.lab.config import LabConfig

MX = "mx.inbox.test"


# -- without the lab ----------------------------------------------------------------------------------


def _state(tmp_path) -> LabConfig:
    cfg = LabConfig(state_dir=tmp_path / "lab")
    (cfg.state_dir / "secrets").mkdir(parents=True)
    for login in mailbox.IMAP_LOGINS:
        mailbox.password_path(cfg, login).write_text(f"pw-{login}-{uuid.uuid4().hex}\n")
    return cfg


def test_users_file_holds_salted_hashes_kept_while_the_passwords_stay(tmp_path):
    cfg = _state(tmp_path)
    text = mailbox.users_file(cfg, None)
    users = dict(line.split(":", 1) for line in text.splitlines() if not line.startswith("#"))
    assert sorted(users) == ["seed@inbox.test", "verify@inbox.test"]
    for login in mailbox.IMAP_LOGINS:
        password = mailbox.password_path(cfg, login).read_text().strip()
        assert password not in text
        assert mailbox._matches(users[f"{login}@inbox.test"], password)
    assert not mailbox._matches(users["seed@inbox.test"], "wrong")
    # unchanged passwords: the same file (so `lab up` leaves Dovecot running) ...
    assert mailbox.users_file(cfg, text) == text
    # ... a new password: a new hash for that login only
    mailbox.password_path(cfg, "seed").write_text("another\n")
    again = dict(line.split(":", 1) for line in mailbox.users_file(cfg, text).splitlines()[1:])
    assert again["verify@inbox.test"] == users["verify@inbox.test"]
    assert mailbox._matches(again["seed@inbox.test"], "another")


def test_missing_password_file_is_one_line_naming_it(tmp_path):
    cfg = _state(tmp_path)
    mailbox.password_path(cfg, "verify").unlink()
    with pytest.raises(Exception) as err:
        mailbox.users_file(cfg, None)
    assert str(mailbox.password_path(cfg, "verify")) in str(err.value) and "lab up" in str(err.value)


def test_ca_is_made_once_and_the_certificate_names_mx(tmp_path):
    from cryptography import x509

    cfg = _state(tmp_path)
    cert, key = mailbox.ensure_certificate(cfg, cfg.receiver)
    ca = mailbox.ca_path(cfg).read_bytes()
    for secret in (key, mailbox.ca_dir(cfg) / "ca.key"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    san = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [MX]
    before = cert.read_bytes()
    mailbox.ensure_certificate(cfg, cfg.receiver)
    assert mailbox.ca_path(cfg).read_bytes() == ca and cert.read_bytes() == before


def test_dovecot_refuses_login_without_tls_and_files_by_the_receivers_own_verdict():
    cfg = LabConfig()
    conf = mailbox.dovecot_conf(cfg.receiver, vmail_uid=5000, home="/h", maildir="/h/Maildir")
    assert "\nssl = required\n" in conf and "special_use = \\Junk" in conf
    assert "unix_listener /var/spool/postfix/private/dovecot-lmtp" in conf
    assert f"virtual_transport = lmtp:unix:{mailbox.LMTP_SOCKET}" in receiver._main_cf(cfg, cfg.receiver)
    script = mailbox.sieve_before(MX)
    # the Sieve string "\\." is the regex \. : another authserv-id's dmarc=fail does not count
    # (POSIX classes are what Dovecot's regcomp knows; Python's re spells them \s)
    pattern = re.search(r'"Authentication-Results" "([^"]+)"', script).group(1).replace("\\\\", "\\")
    pattern = pattern.replace("[:space:]", r"\s")
    assert re.search(pattern, "mx.inbox.test; dmarc=fail (p=reject dis=none) header.from=x.test")
    assert not re.search(pattern, "mx.inbox.test; dmarc=pass (p=reject dis=none) header.from=x.test")
    assert not re.search(pattern, "mxxinbox.test; dmarc=fail")
    assert not re.search(pattern, "evil.example; dmarc=fail")


# -- on the lab ---------------------------------------------------------------------------------------


# The gateway does not resolve the lab's names: these connect to a lab address while TLS checks
# the certificate for the name given (mx.inbox.test).
class IMAP(imaplib.IMAP4):
    address = ""

    def _create_socket(self, timeout):
        return socket.create_connection((self.address, self.port), timeout)


class IMAPS(imaplib.IMAP4_SSL):
    address = ""

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.address, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class SMTP(smtplib.SMTP):
    address = ""

    def _get_socket(self, host, port, timeout):
        return socket.create_connection((self.address, port), timeout)


def _at(cls, address: str):
    return type(cls.__name__, (cls,), {"address": address})


@pytest.fixture(scope="module")
def mx(lab, lab_cfg):
    """What a client of the lab mailbox needs: the CA context and the passwords."""
    assert mailbox.ca_path(lab_cfg).is_file()
    context = ssl.create_default_context(cafile=str(mailbox.ca_path(lab_cfg)))
    passwords = {login: mailbox.password_path(lab_cfg, login).read_text().strip() for login in mailbox.IMAP_LOGINS}
    return {"ctx": context, "passwords": passwords, "root": core.machine_root(lab_cfg, "mx"),
            "state": core.load_state(lab_cfg)["machines"]["mx"]}


def _imaps(lab_cfg, mx, address=None) -> imaplib.IMAP4_SSL:
    return _at(IMAPS, address or lab_cfg.receiver.ipv4)(MX, mailbox.IMAPS_PORT, ssl_context=mx["ctx"], timeout=20)


def _login(lab_cfg, mx, login="verify") -> imaplib.IMAP4_SSL:
    imap = _imaps(lab_cfg, mx)
    imap.login(f"{login}@inbox.test", mx["passwords"][login])
    return imap


def _send(lab_cfg, mx, rcpt: str, *, sender: str = "lab-mailbox@inbox.test", envelope: str | None = None) -> str:
    """One message from the gateway to mx port 25 over STARTTLS (certificate verified); its Message-ID."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, f"mailbox test {uuid.uuid4().hex[:8]}"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="inbox.test")
    msg.set_content("hello from tests/test_lab_mailbox.py\n")
    with _at(SMTP, lab_cfg.receiver.ipv4)(MX, 25, local_hostname="gw.lab.test", timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls"), "mx offers no STARTTLS on port 25"
        smtp.starttls(context=mx["ctx"])
        smtp.ehlo()
        smtp.send_message(msg, from_addr=envelope or sender, to_addrs=[rcpt])
    return msg["Message-ID"]


def _uids(imap, folder: str, message_id: str, timeout: float = 20) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        typ, _ = imap.select(folder)
        assert typ == "OK", folder
        typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"{message_id}"')
        assert typ == "OK"
        if data[0].split() or time.monotonic() >= deadline:
            return data[0].split()
        time.sleep(0.5)


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_imap_over_implicit_tls_verifies_mx_certificate(lab, lab_cfg, mx, family):
    address = getattr(lab_cfg.receiver, family)
    imap = _imaps(lab_cfg, mx, address)
    try:
        assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert imap.login("verify@inbox.test", mx["passwords"]["verify"])[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    # the certificate is checked: another name is refused
    with pytest.raises(ssl.SSLCertVerificationError):
        _at(IMAPS, address)("imap.inbox.test", mailbox.IMAPS_PORT, ssl_context=mx["ctx"], timeout=20)


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_imap_starttls_on_143_and_no_plain_login_before_it(lab, lab_cfg, mx, family):
    imap = _at(IMAP, getattr(lab_cfg.receiver, family))(MX, mailbox.IMAP_PORT, timeout=20)
    try:
        assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("seed@inbox.test", mx["passwords"]["seed"])
        assert imap.starttls(ssl_context=mx["ctx"])[0] == "OK"
        assert imap.login("seed@inbox.test", mx["passwords"]["seed"])[0] == "OK"
    finally:
        imap.logout()


@pytest.mark.lab
def test_wrong_password_is_refused_and_no_password_is_logged(lab, lab_cfg, mx):
    wrong = f"wrong-{uuid.uuid4().hex}"
    imap = _imaps(lab_cfg, mx)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED|failed"):
            imap.login("verify@inbox.test", wrong)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("nobody@inbox.test", mx["passwords"]["verify"])
    finally:
        imap.logout()
    _login(lab_cfg, mx).logout()
    journal = machine.nsenter(mx["state"]["leader_pid"], "journalctl", "--no-pager", "-q", "-t", "dovecot",
                              "--since", "-10min").stdout
    assert "verify@inbox.test" in journal  # the log is the right one: it names the login ...
    for secret in (wrong, *mx["passwords"].values()):  # ... and never a password
        assert secret not in journal
    users = (Path(mx["root"]) / mailbox.USERS_FILE.lstrip("/")).read_text()
    assert not any(p in users for p in mx["passwords"].values())
    for login in mailbox.IMAP_LOGINS:
        assert stat.S_IMODE(mailbox.password_path(lab_cfg, login).stat().st_mode) == 0o600


@pytest.mark.lab
def test_delivered_over_starttls_found_over_imap_by_both_logins_and_deleted(lab, lab_cfg, mx):
    rcpt = f"ok-{uuid.uuid4().hex[:8]}@inbox.test"
    message_id = _send(lab_cfg, mx, rcpt)
    got = receiver.wait_for_message(mx["root"], recipient=rcpt, message_id=message_id, timeout=30)
    assert got is not None and got.folder == "INBOX", got
    # the Received header of mx's smtpd records the TLS session
    received = [" ".join(str(v).split()) for v in got.message.get_all("Received")]
    assert any("by mx.inbox.test (Postfix)" in r and re.search(r"\(using TLSv1\.[23] with cipher", r)
               for r in received), received

    seed, verify = _login(lab_cfg, mx, "seed"), _login(lab_cfg, mx, "verify")
    try:
        assert len(_uids(seed, "INBOX", message_id)) == 1
        uids = _uids(verify, "INBOX", message_id)
        assert len(uids) == 1, "both logins see the one shared mailbox"
        typ, data = verify.uid("FETCH", uids[0], "(BODY.PEEK[HEADER.FIELDS (Delivered-To)])")
        assert typ == "OK" and f"Delivered-To: {rcpt}".encode() in data[0][1]
        assert _uids(verify, "Junk", message_id, timeout=0) == []

        assert verify.select("INBOX")[0] == "OK"
        assert verify.uid("STORE", uids[0], "+FLAGS", r"(\Deleted)")[0] == "OK"
        assert verify.expunge()[0] == "OK"
    finally:
        seed.logout()
        verify.logout()
    assert receiver.wait_for_message(mx["root"], message_id=message_id, timeout=0) is None
    assert not Path(got.path).exists()


@pytest.mark.lab
def test_junk_folder_is_special_use_and_gets_junk_addresses(lab, lab_cfg, mx):
    rcpt = f"junk-{uuid.uuid4().hex[:8]}@inbox.test"
    message_id = _send(lab_cfg, mx, rcpt)
    got = receiver.wait_for_message(mx["root"], recipient=rcpt, message_id=message_id, timeout=30)
    assert got is not None and got.folder == "Junk", got
    assert "/Maildir/.Junk/" in got.path
    imap = _login(lab_cfg, mx)
    try:
        typ, folders = imap.list()
        assert typ == "OK"
        junk = [line for line in folders if line.decode().endswith(" Junk") or line.endswith(b'"Junk"')]
        assert junk and b"\\Junk" in junk[0], folders
        uids = _uids(imap, "Junk", message_id)
        assert len(uids) == 1
        assert _uids(imap, "INBOX", message_id, timeout=0) == []
        imap.select("Junk")
        imap.uid("STORE", uids[0], "+FLAGS", r"(\Deleted)")
        imap.expunge()
    finally:
        imap.logout()


@pytest.mark.lab
def test_failing_dmarc_goes_to_junk_passing_to_inbox(lab, lab_cfg, mx):
    from mailops.lab import dns as labdns

    tag = uuid.uuid4().hex[:8]
    name = f"mbx-{tag}"
    domain = f"{name}.lab.test"
    dcfg = core.dns_config(lab_cfg)
    gw = lab_cfg.gateway_ipv4
    # the gateway may send for the domain (SPF pass, aligned: DMARC pass); spoofed: DMARC fail
    labdns.update(dcfg, "lab.test.", replace=[(name, "TXT", f'"v=spf1 ip4:{gw} -all"', 60),
                                            (f"_dmarc.{name}", "TXT", '"v=DMARC1; p=reject"', 60)])
    try:
        good = _send(lab_cfg, mx, f"dmarc-{tag}@inbox.test", sender=f"news@{domain}")
        # From: the domain, but the envelope (SPF) is another domain's and nothing is signed
        spoof = _send(lab_cfg, mx, f"dmarc-{tag}@inbox.test", sender=f"news@{domain}",
                      envelope=f"spoof-{tag}@inbox.test")
    finally:
        labdns.update(dcfg, "lab.test.", delete=[name, f"_dmarc.{name}"])
    passed = receiver.wait_for_message(mx["root"], message_id=good, timeout=30)
    assert passed is not None and passed.auth_result("dmarc") == "pass", passed
    assert passed.folder == "INBOX"
    failed = receiver.wait_for_message(mx["root"], message_id=spoof, timeout=30)
    assert failed is not None and failed.auth_result("dmarc") == "fail", failed and failed.authentication_results
    assert failed.folder == "Junk"
    for msg in (passed, failed):
        Path(msg.path).unlink()


@pytest.mark.lab
def test_lab_up_again_restarts_nothing(lab, lab_cfg, mx):
    assert receiver.reconfigure(lab_cfg, lab_cfg.receiver, mx["state"]) == []
    out = machine.nsenter(mx["state"]["leader_pid"], "systemctl", "is-active", "dovecot").stdout.strip()
    assert out == "active"

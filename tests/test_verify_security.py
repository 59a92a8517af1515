"""mailops.verify.security against a real Postfix: lab vps3 converged as mta3.shop.test.

The converged server passes every probe over IPv4 and IPv6.  Then, one at a time, the server
is broken over SSH (relay opened, AUTH in clear, TLS 1.0/1.1, VRFY) and the matching check must
fail with a fix hint; the original settings are restored in a finally and the config files are
checked to be byte-identical afterwards.  No probe sends DATA, so nothing is relayed even while
the server is open.

The fixture converges like tests/test_roles_mail.py (same roles, self-signed certificate, two
users) but leaves DNS alone: the shop.test zone is shared and the probes connect by address.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailops.lab import core
from mailops.verify.security import probe_host
from tests.mailhost import MailHost, ensure_lab_vps

pytestmark = pytest.mark.lab

VPS, FQDN = "vps3", "mta3.shop.test"
IPV4, IPV6 = "198.51.100.13", "2001:db8:51::13"
USERS = [("alice@shop.test", "alice-" + uuid.uuid4().hex[:12]), ("bob@shop.test", "bob-" + uuid.uuid4().hex[:12])]
NOBODY = "198.51.100.250"  # a lab address where nothing listens


def _converge(lab_cfg, work: Path) -> None:
    """sasl, opendkim and postfix on vps3, as in test_roles_mail, without touching DNS."""
    MailHost(lab_cfg, work, 3, selectors={"mo-sectest-a": "active"},
             users=[{"login": USERS[0][0], "password": {"env": "MAILOPS_TEST_ALICE_PW"}},
                    {"login": USERS[1][0], "password": {"env": "MAILOPS_TEST_BOB_PW"}}],
             passwords=dict(USERS), env={"MAILOPS_TEST_ALICE_PW": USERS[0][1], "MAILOPS_TEST_BOB_PW": USERS[1][1]},
             publish_dns=False).converge()


@pytest.fixture(scope="module")
def mailserver(lab_cfg, tmp_path_factory):
    ensure_lab_vps(lab_cfg, 3)
    _converge(lab_cfg, tmp_path_factory.mktemp("security"))
    return lab_cfg


def _probe(addresses=(IPV4, IPV6), **kw):
    return probe_host(FQDN, list(addresses), sending_domains=["shop.test"], users=USERS, **kw)


def _ssh(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, VPS, script)
    assert proc.returncode == 0, f"{script!r} failed: {proc.stderr}"
    return proc.stdout


POSTFIX_FILES = "/etc/postfix/main.cf /etc/postfix/master.cf"
BACKUP = "/root/postfix-before-security-test"


@contextmanager
def _postconf(lab_cfg, changes: dict[str, str]):
    """Change Postfix settings for the block: main.cf names, master.cf ones as service/type/name.

    Afterwards the values read first with `postconf -h` must be back and the files byte-identical;
    the files are restored from a copy because `postconf -P` re-indents the whole service entry."""
    def flag(name: str) -> str:
        return "-P" if "/" in name else ""

    def values() -> dict[str, str]:
        return {n: _ssh(lab_cfg, f"postconf {flag(n)} -h '{n}'").strip() for n in changes}

    original, before = values(), _ssh(lab_cfg, f"md5sum {POSTFIX_FILES}")
    edits = " && ".join(f"postconf {flag(n)} -e '{n}={v}'" for n, v in changes.items())
    _ssh(lab_cfg, f"mkdir -p {BACKUP} && cp -p {POSTFIX_FILES} {BACKUP}/ && {edits} && postfix reload")
    try:
        time.sleep(1)  # reload replaces the smtpd processes as they finish
        yield
    finally:
        _ssh(lab_cfg, f"cp -p {BACKUP}/main.cf {BACKUP}/master.cf /etc/postfix/ && rm -r {BACKUP} && postfix reload")
        assert values() == original, "Postfix settings were not restored"
        assert _ssh(lab_cfg, f"md5sum {POSTFIX_FILES}") == before, "the Postfix files were not restored"


# Postfix's own "high" list on 587/465 (what they offered before issue 14 item 13): anonymous suites too
POSTFIX_HIGH_CIPHERS = {f"{service}/inet/tls_high_cipherlist": "aNULL:-aNULL:HIGH:@STRENGTH"
                        for service in ("submission", "submissions")}


def _by_name(results):
    return {r.name: r for r in results}


def _assert_fails(results, *names):
    got = _by_name(results)
    for name in names:
        r = got[name]
        assert r.status == "fail" and r.fix, f"{name} should fail: {r}"


def test_converged_server_passes_every_probe(mailserver):
    results = _probe()
    bad = [r for r in results if r.status != "pass"]
    assert not bad, "\n".join(f"{r.name}: {r.status}: {r.detail}" for r in bad)
    per_family = {"relay.25", "relay.587", "relay.465", "auth-before-tls.587", "auth.25", "tls.587", "tls.465",
                  "ciphers.587", "ciphers.465",
                  "wrong-password.587", "send-as-other.587", "send-as-other.465", "vrfy.25"}
    assert {r.name for r in results} == {f"{n}.{f}" for n in per_family for f in ("ipv4", "ipv6")}
    got = _by_name(results)
    assert "certificate not verified" in got["tls.465.ipv6"].detail
    assert "accepted as <alice@shop.test>" in got["send-as-other.587.ipv4"].detail
    assert "refuses anonymous, " in got["ciphers.465.ipv4"].detail


def test_open_relay_is_caught(mailserver):
    # smtpd_relay_restrictions = permit is not enough here: smtpd_recipient_restrictions still ends in
    # reject_unauth_destination.  Trusting every network is (the classic NAT/proxy accident).
    with _postconf(mailserver, {"mynetworks": "0.0.0.0/0 [::]/0"}):
        results = _probe()
    _assert_fails(results, "relay.25.ipv4", "relay.25.ipv6")
    # relay-test.invalid has no DNS, so reject_unknown_recipient_domain still refuses most tricks;
    # the address literal gets through
    assert "address-literal" in _by_name(results)["relay.25.ipv4"].detail


def test_auth_in_clear_on_587_is_caught(mailserver):
    # at security level encrypt Postfix never offers AUTH before STARTTLS, whatever smtpd_tls_auth_only says
    with _postconf(mailserver, {"submission/inet/smtpd_tls_auth_only": "no",
                                "submission/inet/smtpd_tls_security_level": "may"}):
        results = _probe([IPV4])
    _assert_fails(results, "auth-before-tls.587.ipv4")


def test_auth_on_25_is_caught(mailserver):
    with _postconf(mailserver, {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
                                "smtpd_sasl_path": "private/auth"}):
        results = _probe([IPV4])
    _assert_fails(results, "auth.25.ipv4")


def test_tls_below_1_2_is_caught(mailserver):
    # 587 and 465 run at level encrypt, so the mandatory protocols apply (not -o smtpd_tls_protocols).
    # The role's cipher list has only TLS 1.2 AEAD suites, which TLS 1.0/1.1 cannot use: widen it to
    # Postfix's own list too, or the old protocols would still find no common suite.
    with _postconf(mailserver, {"smtpd_tls_mandatory_protocols": ">=TLSv1", **POSTFIX_HIGH_CIPHERS}):
        results = _probe()
    _assert_fails(results, "tls.587.ipv4", "tls.465.ipv4", "tls.587.ipv6", "tls.465.ipv6")
    assert "TLSv1.1" in _by_name(results)["tls.465.ipv4"].detail


def test_weak_cipher_suites_are_caught(mailserver):
    with _postconf(mailserver, POSTFIX_HIGH_CIPHERS):
        results = _probe()
    _assert_fails(results, "ciphers.587.ipv4", "ciphers.465.ipv4", "ciphers.587.ipv6", "ciphers.465.ipv6")
    failed = _by_name(results)["ciphers.587.ipv4"]
    assert "anonymous (ADH-AES256-GCM-SHA384)" in failed.detail and "static RSA" in failed.detail, failed.detail
    assert "postfix_submission_tls_ciphers" in failed.fix
    assert all(r.status == "pass" for r in results if r.name.startswith("tls.")), "only the cipher rows may fail"


def test_untrusted_certificate_is_caught(mailserver, lab_cfg):
    results = _probe([IPV4], ca_bundle=str(core.acme_config(lab_cfg).state_dir / "issuing-roots.pem"))
    _assert_fails(results, "tls.587.ipv4", "tls.465.ipv4")


def test_sending_as_another_user_is_caught(mailserver):
    lax = "permit_sasl_authenticated,reject"  # without reject_sender_login_mismatch
    with _postconf(mailserver, {"submission/inet/smtpd_sender_restrictions": lax,
                                "submissions/inet/smtpd_sender_restrictions": lax}):
        results = _probe([IPV4])
    _assert_fails(results, "send-as-other.587.ipv4", "send-as-other.465.ipv4")


def test_vrfy_enabled_is_caught(mailserver):
    with _postconf(mailserver, {"disable_vrfy_command": "no"}):
        results = _probe()
    _assert_fails(results, "vrfy.25.ipv4", "vrfy.25.ipv6")
    # Postfix answers 252 (not 250) for a known address: only the contrast with an unknown one shows it
    assert "252" in _by_name(results)["vrfy.25.ipv4"].detail


def test_unreachable_address_is_inconclusive_and_bounded(mailserver):
    started = time.monotonic()
    results = _probe([NOBODY], timeout=3)
    elapsed = time.monotonic() - started
    assert results and all(r.status == "inconclusive" for r in results), [(r.name, r.status) for r in results]
    assert elapsed < 10, f"probing a dead address took {elapsed:.1f}s"

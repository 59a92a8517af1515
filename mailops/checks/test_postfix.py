"""Postfix on a mail host: running, listening, and configured as the postfix role promises.

Run: pytest --pyargs mailops.checks --hosts=ansible://HOST --ansible-inventory=INV
"""

from __future__ import annotations

import pytest

from mailops.checks.conftest import host_variables


_vars = host_variables  # cached per host: each read runs ansible-inventory


def postconf(host, name: str) -> str:
    out = host.run(f"postconf -h {name}")
    assert out.rc == 0, f"postconf -h {name} failed: {out.stderr.strip()}"
    return out.stdout.strip()


def master_options(host) -> dict[str, str]:
    """service/type/name -> value from `postconf -P` (master.cf -o settings)."""
    out = host.run("postconf -P")
    assert out.rc == 0, f"postconf -P failed: {out.stderr.strip()}"
    opts = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" = ")
        opts[key.strip()] = value.strip()
    return opts


def test_postfix_enabled_and_running(host):
    svc = host.service("postfix")
    assert svc.is_enabled, "postfix is not enabled: it will not start at boot"
    assert svc.is_running, "postfix is not running (systemctl status 'postfix*')"


def test_postfix_check_passes(host):
    out = host.run("postfix check")
    assert out.rc == 0 and not out.stderr.strip(), f"postfix check reports problems: {out.stderr.strip()}"


@pytest.mark.parametrize("port", [25, 465, 587])
def test_smtp_ports_listening(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening, f"nothing listens on TCP port {port}"


def test_myhostname_is_fqdn(host):
    v = _vars(host)
    fqdn = v.get("mailops_fqdn") or v.get("inventory_hostname")
    got = postconf(host, "myhostname")
    if fqdn:
        assert got == fqdn, f"myhostname is {got!r}, the inventory says {fqdn!r} (EHLO must match PTR)"
    assert "." in got, f"myhostname {got!r} is not a fully qualified name"


@pytest.mark.parametrize("name,expected", [
    ("smtpd_sasl_auth_enable", "no"),
    ("disable_vrfy_command", "yes"),
    ("smtpd_helo_required", "yes"),
    ("smtputf8_enable", "no"),
    ("smtpd_tls_security_level", "may"),
    ("smtp_tls_security_level", "may"),
    ("milter_default_action", "tempfail"),
    ("smtpd_milters", ""),
    ("smtpd_tls_mandatory_protocols", ">=TLSv1.2"),
    ("smtpd_tls_mandatory_ciphers", "high"),
    ("tls_preempt_cipherlist", "yes"),
    ("smtpd_forbid_bare_newline", "yes"),
    ("maximal_queue_lifetime", "2d"),
    ("bounce_queue_lifetime", "1d"),
])
def test_main_cf_value(host, name, expected):
    got = postconf(host, name)
    assert got == expected, f"main.cf {name} = {got!r}, expected {expected!r}"


def test_mynetworks_is_loopback_only(host):
    nets = {n.strip() for n in postconf(host, "mynetworks").replace(",", " ").split()}
    assert nets <= {"127.0.0.0/8", "[::1]/128", "[::ffff:127.0.0.0]/104"}, \
        f"mynetworks trusts more than loopback: {sorted(nets)} (open relay risk)"


def test_relay_restrictions_end_in_reject_unauth_destination(host):
    items = [i.strip() for i in postconf(host, "smtpd_relay_restrictions").replace(",", " ").split()]
    assert items and items[-1] in ("reject_unauth_destination", "reject"), \
        f"smtpd_relay_restrictions do not end in reject_unauth_destination: {items}"
    assert "permit_sasl_authenticated" not in items or postconf(host, "smtpd_sasl_auth_enable") == "no"


def test_tls_options(host):
    opts = postconf(host, "tls_ssl_options").replace(",", " ").split()
    assert {"NO_COMPRESSION", "NO_RENEGOTIATION"} <= set(opts), f"tls_ssl_options = {opts}"


def test_dkim_milter_for_local_submission(host):
    assert "opendkim" in postconf(host, "non_smtpd_milters"), \
        "non_smtpd_milters does not name the OpenDKIM socket: locally submitted mail leaves unsigned"


def test_ipv6_only_with_ptr(host):
    v = _vars(host)
    protocols = postconf(host, "inet_protocols")
    if not v.get("mailops_ipv6") or not v.get("mailops_ipv6_ptr", True):
        assert protocols == "ipv4", f"inet_protocols = {protocols} without an IPv6 address with PTR"
    if v.get("mailops_ipv4"):
        assert postconf(host, "smtp_bind_address") == v["mailops_ipv4"], "smtp_bind_address is not mailops_ipv4"


@pytest.mark.parametrize("service", ["submission/inet", "submissions/inet"])
def test_submission_service(host, service):
    opts = master_options(host)
    want = {
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_auth_only": "yes",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_tls_protocols": ">=TLSv1.2",
    }
    for name, value in want.items():
        got = opts.get(f"{service}/{name}")
        assert got == value, f"master.cf {service} -o {name}={got!r}, expected {value!r}"
    assert "reject_sender_login_mismatch" in opts.get(f"{service}/smtpd_sender_restrictions", ""), \
        f"{service}: users may send as any address (reject_sender_login_mismatch missing)"
    assert opts.get(f"{service}/smtpd_relay_restrictions", "").replace(" ", "") == "permit_sasl_authenticated,reject", \
        f"{service}: smtpd_relay_restrictions is not 'permit_sasl_authenticated, reject'"
    assert "opendkim" in opts.get(f"{service}/smtpd_milters", ""), f"{service}: no DKIM milter: mail leaves unsigned"
    assert opts.get(f"{service}/cleanup_service_name") == "submission_cleanup", \
        f"{service}: submitted mail does not go through the header-privacy cleanup service"
    if service.startswith("submissions/"):
        assert opts.get(f"{service}/smtpd_tls_wrappermode") == "yes", "465 is not implicit TLS"


def test_submission_header_privacy(host):
    opts = master_options(host)
    checks = opts.get("submission_cleanup/unix/header_checks", "")
    assert checks.startswith("pcre:"), "submission_cleanup has no header_checks"
    content = host.file(checks.split(":", 1)[1]).content_string
    for header in ("Received", "User-Agent", "X-Mailer", "X-Originating-IP"):
        assert f"/^{header}:/ IGNORE" in content, f"{header} is not removed from submitted mail"

"""Checks of the `tls` role: the certificate at the stable paths other roles use.

Run as part of ``pytest --pyargs mailops.checks --hosts=ansible://HOST
--ansible-inventory=INV``.  Expected values come from the inventory
(``tls_fqdn`` / ``mailops_fqdn`` / inventory host name, ``mailops_tls.mode``).
When the environment variable MAILOPS_ACME_ROOTS_FILE names a PEM bundle (the
lab's ACME issuing roots, see ``mailops.lab.acme.write_issuing_roots``), the
certificate chain must verify against it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from mailops.checks.conftest import host_variables

TLS_DIR = "/etc/mailops/tls"
FULLCHAIN = f"{TLS_DIR}/fullchain.pem"
PRIVKEY = f"{TLS_DIR}/privkey.pem"
MIN_DAYS_LEFT = 14
DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/50-mailops-postfix"
CA_DROPIN = "/etc/systemd/system/certbot.service.d/50-mailops-ca-bundle.conf"


_vars = host_variables  # cached per host: each read runs ansible-inventory


def _plain(value) -> str | None:
    """A usable inventory value: a non-empty string that is not an unrendered template."""
    if isinstance(value, str) and value and "{{" not in value:
        return value
    return None


def _fqdn(host) -> str:
    v = _vars(host)
    for key in ("tls_fqdn", "mailops_fqdn", "inventory_hostname"):
        if _plain(v.get(key)):
            return v[key]
    return host.check_output("hostname -f")


def _tls_settings(host) -> dict:
    value = _vars(host).get("mailops_tls")
    return value if isinstance(value, dict) else {}


def _mode(host) -> str:
    return _plain(_vars(host).get("tls_mode")) or _plain(_tls_settings(host).get("mode")) or "acme"


def _openssl(host, *args: str) -> str:
    cmd = host.run("openssl " + " ".join(args))
    assert cmd.rc == 0, f"`openssl {' '.join(args)}` failed on the host: {cmd.stderr.strip()}"
    return cmd.stdout


def _require_acme(host) -> None:
    if _mode(host) != "acme":
        pytest.skip(f"TLS mode is {_mode(host)}, not acme")


def test_tls_certificate_files_exist(host):
    for path in (FULLCHAIN, PRIVKEY):
        f = host.file(path)
        assert f.exists, f"{path} is missing (or a dangling link): the tls role did not provide the certificate"


def test_tls_certificate_names_the_host(host):
    fqdn = _fqdn(host)
    san = _openssl(host, "x509", "-noout", "-ext", "subjectAltName", "-in", FULLCHAIN)
    names = [n.lower() for n in re.findall(r"DNS:([^,\s]+)", san)]
    assert fqdn.lower() in names, f"the certificate in {FULLCHAIN} is for {names or 'no DNS name'}, not {fqdn}"


def test_tls_certificate_not_expiring_soon(host):
    cmd = host.run(f"openssl x509 -noout -checkend {MIN_DAYS_LEFT * 86400} -in {FULLCHAIN}")
    end = host.run(f"openssl x509 -noout -enddate -in {FULLCHAIN}").stdout.strip()
    assert cmd.rc == 0, f"the certificate in {FULLCHAIN} expires within {MIN_DAYS_LEFT} days ({end}): renewal failed?"


def test_tls_private_key_matches_certificate(host):
    cert_pub = _openssl(host, "x509", "-noout", "-pubkey", "-in", FULLCHAIN)
    key_pub = _openssl(host, "pkey", "-pubout", "-in", PRIVKEY)
    assert cert_pub.strip() == key_pub.strip(), f"{PRIVKEY} is not the key of the certificate in {FULLCHAIN}"


def test_tls_private_key_not_world_readable(host):
    f = host.file(PRIVKEY)
    real = host.file(f.linked_to) if f.is_symlink else f
    assert real.mode & 0o007 == 0, f"{real.path} (the private key) has mode {real.mode:04o}: readable by others"
    assert real.user == "root", f"{real.path} (the private key) is owned by {real.user}, not root"
    assert real.group in ("root", "ssl-cert"), f"{real.path} (the private key) has group {real.group}"
    if real.group == "root" or real.mode & 0o070 == 0:
        return
    assert real.mode & 0o020 == 0, f"{real.path} (the private key) is group-writable ({real.mode:04o})"


def test_tls_acme_certificate_is_not_self_signed(host):
    _require_acme(host)
    subject = _openssl(host, "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", FULLCHAIN)
    issuer = _openssl(host, "x509", "-noout", "-issuer", "-nameopt", "RFC2253", "-in", FULLCHAIN)
    subject = subject.split("=", 1)[1].strip()
    issuer = issuer.split("=", 1)[1].strip()
    assert subject != issuer, (f"TLS mode is acme but the certificate in {FULLCHAIN} is self-signed "
                               f"({subject}): certbot did not obtain one")


def test_tls_acme_renewal_timer_enabled(host):
    _require_acme(host)
    timer = host.service("certbot.timer")
    assert timer.is_enabled, "certbot.timer is not enabled: the certificate will not be renewed"
    assert timer.is_running, "certbot.timer is not active: the certificate will not be renewed"


def test_tls_acme_deploy_hook_reloads_postfix(host):
    _require_acme(host)
    hook = host.file(DEPLOY_HOOK)
    assert hook.exists and hook.mode & 0o100, f"{DEPLOY_HOOK} is missing or not executable: Postfix would keep " \
                                              "serving the old certificate after a renewal"


def test_tls_acme_renewals_trust_the_acme_server(host):
    _require_acme(host)
    if not _plain(_tls_settings(host).get("acme_ca_bundle")):
        pytest.skip("no private ACME CA bundle configured (mailops_tls.acme_ca_bundle)")
    env = host.run("systemctl show -p Environment certbot.service").stdout
    m = re.search(r"REQUESTS_CA_BUNDLE=(\S+)", env)
    assert m, f"certbot.service has no REQUESTS_CA_BUNDLE (expected {CA_DROPIN}): renewals would fail TLS verification"
    assert host.file(m.group(1)).exists, f"certbot.service trusts {m.group(1)}, which is missing on the host"


def test_tls_chain_verifies_against_expected_roots(host):
    _require_acme(host)
    roots = os.environ.get("MAILOPS_ACME_ROOTS_FILE")
    if not roots:
        pytest.skip("MAILOPS_ACME_ROOTS_FILE is not set (no expected issuing roots)")
    assert Path(roots).is_file(), f"MAILOPS_ACME_ROOTS_FILE={roots} does not exist on the controller"
    chain = host.file(FULLCHAIN).content_string
    certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", chain, re.S)
    assert certs, f"{FULLCHAIN} holds no PEM certificate"
    with tempfile.TemporaryDirectory() as tmp:
        leaf, rest = Path(tmp, "leaf.pem"), Path(tmp, "chain.pem")
        leaf.write_text(certs[0])
        rest.write_text("".join(certs[1:]) or certs[0])
        proc = subprocess.run(["openssl", "verify", "-CAfile", roots, "-untrusted", str(rest), str(leaf)],
                              capture_output=True, text=True)
    detail = [line.replace(str(leaf), "leaf") for line in (proc.stderr + proc.stdout).strip().splitlines()]
    assert proc.returncode == 0, (f"the certificate chain in {FULLCHAIN} does not verify against {roots}: "
                                  f"{'; '.join(detail) or 'openssl verify failed'}")

"""Verification: `mailops verify` on the converged lab is all green, and names each broken thing.

vps1 (mta1.shop.test) is converged from the lab inventory; records are published
with `dns sync`.  Each negative test breaks one thing on the real server or in
the real DNS, runs the CLI, and repairs it the way the printed fix says."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from mailops.lab import core, dns as labdns
from mailops.lab.config import LabConfig
from tests.helpers import mailops
from tests.mailhost import publish_lab_inventory

pytestmark = pytest.mark.lab

HOST = "mta1.shop.test"


def verify(*args: str) -> tuple[int, dict]:
    proc = mailops("verify", "--json", *args, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def failures(report: dict) -> dict[str, dict]:
    return {f"{r['subject']} {r['name']}": r for r in report["results"] if r["status"] == "fail"}


def vps1(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, "vps1", script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def provisioned(lab, lab_cfg):
    """vps1 converged from the lab inventory by `mailops provision apply`, its keys and records published."""
    publish_lab_inventory()
    result = json.loads(mailops("provision", "apply", "--json").stdout)
    assert result["ok"], result
    return result


def test_verify_is_all_green_on_the_converged_lab(provisioned, tmp_path):
    junit = tmp_path / "verify.xml"
    code, report = verify("--junit", str(junit))
    assert code == 0 and report["ok"], failures(report)
    assert report["counts"]["fail"] == 0 and report["counts"]["inconclusive"] == 0, \
        [r for r in report["results"] if r["status"] != "pass"]
    groups = {r["group"] for r in report["results"]}
    assert groups == {"dns", "server", "security", "send", "returnpath"}
    names = {r["name"] for r in report["results"]}
    for expected in ("spf.authorises-ipv6", "live-send", "receiver.dkim", "dkim.independent", "fcrdns.ipv6"):
        assert expected in names, sorted(names)
    suites = ET.parse(junit).getroot()
    assert sum(int(s.get("failures")) for s in suites.iter("testsuite")) == 0
    assert sum(int(s.get("tests")) for s in suites.iter("testsuite")) == len(report["results"])


def test_verify_names_spf_without_the_ipv6_address(provisioned):
    labdns.update(core.dns_config(LabConfig()), "shop.test.",
                  replace=[("@", "TXT", "v=spf1 ip4:198.51.100.11 ~all", 300)])
    try:
        code, report = verify("--only", "dns", "--domain", "shop.test")
        assert code == 1
        fail = failures(report)
        assert "shop.test spf.authorises-ipv6" in fail, sorted(fail)
        assert "2001:db8:51::11" in fail["shop.test spf.authorises-ipv6"]["fix"] + fail["shop.test spf.authorises-ipv6"]["detail"]
    finally:
        mailops("dns", "sync", "--apply", "--force")
    assert verify("--only", "dns", "--domain", "shop.test")[0] == 0


def test_verify_names_a_certificate_for_the_wrong_name(provisioned, lab_cfg):
    vps1(lab_cfg, "set -e; mkdir -p /root/wrong; cd /root/wrong; "
                  "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=wrong.example -keyout key.pem "
                  "-out cert.pem 2>/dev/null; chmod 600 key.pem; "
                  "ln -sfn /root/wrong/cert.pem /etc/mailops/tls/fullchain.pem; "
                  "ln -sfn /root/wrong/key.pem /etc/mailops/tls/privkey.pem; postfix reload")
    try:
        code, report = verify("--only", "server,send", "--host", HOST, "--domain", "shop.test")
        assert code == 1
        fail = failures(report)
        assert f"{HOST} tls.certificate_names_the_host" in fail, sorted(fail)
        assert "--tags tls" in fail[f"{HOST} tls.certificate_names_the_host"]["fix"]
        assert "shop.test live-send" in fail and "certificate" in fail["shop.test live-send"]["detail"], sorted(fail)
    finally:
        # the fix the report prints
        mailops("provision", "apply", "--tags", "tls", "--limit", HOST, "--json")
    assert verify("--only", "server", "--host", HOST)[0] == 0


def test_verify_says_signing_is_down_when_opendkim_stops(provisioned, lab_cfg):
    vps1(lab_cfg, "systemctl stop opendkim")
    try:
        code, report = verify("--only", "send", "--domain", "shop.test")
        assert code == 1
        fail = failures(report)
        assert "shop.test dkim-signing" in fail, sorted(fail)
        row = fail["shop.test dkim-signing"]
        assert "signing is down" in row["detail"] and "held" in row["detail"], row
        assert "systemctl start opendkim" in row["fix"]
    finally:
        vps1(lab_cfg, "systemctl start opendkim && postqueue -f")
    assert verify("--only", "send", "--domain", "shop.test")[0] == 0


def test_verify_names_a_relay_permitting_setting_and_auth_in_clear(provisioned, lab_cfg):
    # (smtpd_relay_restrictions=permit alone is not enough: recipient restrictions still refuse)
    vps1(lab_cfg, "postconf -e 'mynetworks = 0.0.0.0/0 [::]/0' "
                  "&& postconf -P 'submission/inet/smtpd_tls_auth_only=no' "
                  "'submission/inet/smtpd_tls_security_level=may' && postfix reload")
    try:
        code, report = verify("--only", "security", "--host", HOST)
        assert code == 1
        fail = failures(report)
        relay = [k for k in fail if " relay." in k]
        assert any(".25." in k for k in relay), sorted(fail)
        clear = [k for k in fail if "auth" in k.lower() and "587" in k]
        assert clear, sorted(fail)
        assert all(fail[k]["fix"] for k in relay + clear)
    finally:
        mailops("provision", "apply", "--tags", "postfix", "--limit", HOST, "--json")
    assert verify("--only", "security", "--host", HOST)[0] == 0


def test_verify_rejects_bad_options_in_one_line():
    proc = mailops("verify", "--only", "dns,bogus", check=False)
    assert proc.returncode == 2 and "unknown group 'bogus'" in proc.stderr
    proc = mailops("verify", "--domain", "nope.test", check=False)
    assert proc.returncode == 1 and "not a sending domain" in proc.stderr and "Traceback" not in proc.stderr

"""Debian 13 (trixie) and Debian 12 (bookworm): the full site play on both, end to end.

The lab's own suite (trixie unless MAILOPS_LAB_SUITE says otherwise) is what every
other lab test converges: the demo (fresh vps1, a second run changes nothing),
test_provision (new-vps on the demo's vps1, check run and plain ansible-playbook
change nothing, the shipped checks, and the no-warnings check below),
test_provision_create (from nothing to `mailops verify` green) and the role tests.
This module adds the other suite(s): vps7 is re-installed with trixie or vps8 with
bookworm (`core.reset(..., suite=)`, the lab's "rebuild with another image"). It
becomes the only mail host ``mta.<rand>.lab.test`` of its own sending domain ``<rand>.lab.test`` (a copy of
the lab inventory: ACME certificate from the lab CA through certbot, MTA-STS
served by nginx, the return path, fail2ban and nftables, PTRs through the lab
BIND), published with `dns sync` under its own ownership registry. On each:
`provision apply` converges, a second run changes nothing, a check run changes
nothing, and `mailops verify` (DNS, the server's shipped checks, security from
outside, a live send read back over IMAP from the lab receiver, the return
path) is all green. The records are removed at the end; the PTRs are given
back to the lab's names."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from mailops.lab import core, dns as labdns
from mailops.lab.config import DEFAULT_SUITE, LAB_ZONE, LabConfig, parse_vps_suites
from tests.helpers import copy_inventory, mailops
from tests.mailhost import assert_no_config_warnings
from tests.test_roles_mta_sts import _cleanup_dns

SUITES = {"trixie": 7, "bookworm": 8}
# the suites no other lab test converges
OTHER_SUITES = [suite for suite in SUITES if suite != LabConfig().suite]
VERSION = {"trixie": "13", "bookworm": "12"}


def provision(inv, *extra: str) -> dict:
    t = time.monotonic()
    result = json.loads(mailops("provision", "apply", "-i", str(inv), "--json", *extra, check=False).stdout)
    result["wall"] = round(time.monotonic() - t, 1)
    assert result["ok"], {h: (r.get("failed_task"), r.get("failed_message")) for h, r in result["hosts"].items()}
    return result


# --- the lab's suite configuration (no lab needed) ---------------------------

def test_vps_suites_default_and_name_exceptions(monkeypatch):
    monkeypatch.delenv("MAILOPS_LAB_SUITE", raising=False)
    monkeypatch.setenv("MAILOPS_LAB_VPS_SUITES", "8=trixie, vps9=bookworm")
    cfg = LabConfig()
    assert cfg.suite == DEFAULT_SUITE and cfg.vps_suites == {8: "trixie", 9: "bookworm"}
    assert [cfg.suite_for(cfg.vps(n)) for n in (1, 8, 9)] == [DEFAULT_SUITE, "trixie", "bookworm"]
    monkeypatch.setenv("MAILOPS_LAB_SUITE", "trixie")
    assert LabConfig().suite_for(LabConfig().vps(1)) == "trixie"
    assert cfg.suite_for(cfg.receiver) == "bookworm"  # its Dovecot configuration is 2.3 syntax


@pytest.mark.parametrize("text, error", [
    ("8=jessie", "lab suite 'jessie' is not one of trixie, bookworm"),
    ("8", "VPS suite '8' must look like 8=bookworm (VPS number = suite)"),
    ("x=trixie", "VPS suite 'x=trixie' must look like 8=bookworm (VPS number = suite)"),
])
def test_bad_vps_suites_are_refused(text, error):
    with pytest.raises(ValueError) as exc:
        parse_vps_suites(text)
    assert str(exc.value) == error


def test_cli_names_a_bad_suite_in_one_line():
    proc = mailops("lab", "up", "--vps-suite", "8=jessie", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "lab suite 'jessie' is not one of trixie, bookworm" in proc.stderr
    proc = mailops("lab", "up", "--suite", "buster", check=False)
    assert proc.returncode == 2 and "'buster' is not one of 'trixie', 'bookworm'" in proc.stderr


# --- the full site play on both suites ---------------------------------------

@pytest.fixture(scope="module", params=OTHER_SUITES, ids=OTHER_SUITES)
def host(request, lab, lab_cfg, tmp_path_factory):
    suite = request.param
    number = SUITES[suite]
    name, m = f"vps{number}", lab_cfg.vps(number)
    running = {r["name"] for r in core.status(lab_cfg)["machines"] if r["state"] == "running"}
    if name not in running:
        core.up(lab_cfg, vps=number)
    t = time.monotonic()
    assert core.reset(lab_cfg, name, suite=suite)["suite"] == suite
    timings = {"reset": round(time.monotonic() - t, 1)}

    rand = uuid.uuid4().hex[:8]
    domain = f"deb{rand}.{LAB_ZONE}"
    fqdn = f"mta.{domain}"
    work = tmp_path_factory.mktemp(f"suite-{suite}")

    def hosts(d):
        mailhosts = d["all"]["children"]["mailhosts"]
        template = next(iter(mailhosts["hosts"].values()))
        mailhosts["hosts"] = {fqdn: {
            "ansible_host": m.ipv4, "ansible_user": template.get("ansible_user", "root"),
            "ansible_ssh_private_key_file": template["ansible_ssh_private_key_file"],
            "mailops_ipv4": m.ipv4, "mailops_ipv6": m.ipv6,
            "mailops_reverse_dns_provider": template["mailops_reverse_dns_provider"]}}

    def settings(d):
        provider = dict(d["mailops_dns_providers"]["lab-rfc2136"], zones=[LAB_ZONE])
        d.update({
            "mailops_dns_owner": f"deb{rand}",  # its own registry in lab.test: others' records stay out of reach
            "mailops_dkim_keystore": str(work / "keys"),
            "mailops_domains": {domain: {"dns_provider": "lab-rfc2136", "dmarc": {"policy": "reject"},
                                         "mta_sts": {"mode": "enforce"}}},
            "mailops_dns_providers": {"lab-rfc2136": provider},
            "mailops_submission_users": [{"login": f"tester@{domain}",
                                          "password": {"file": str(work / "tester.password")}}],
        })

    (work / "tester.password").write_text(uuid.uuid4().hex + "\n")
    inv = copy_inventory(work / "inventory", hosts=hosts, settings=settings)
    ctx = {"suite": suite, "name": name, "inv": inv, "fqdn": fqdn, "timings": timings}
    dcfg = core.dns_config(lab_cfg)
    try:
        mailops("inventory", "check", str(inv))
        mailops("dkim", "generate", "--all", "-i", str(inv))
        mailops("dns", "sync", "--apply", "-i", str(inv))
        ctx["first"] = provision(inv)
        ctx["second"] = provision(inv)
        timings["first converge"], timings["second converge"] = ctx["first"]["wall"], ctx["second"]["wall"]
        yield ctx
    finally:
        print(f"\n{suite}: " + ", ".join(f"{k} {v} s" for k, v in timings.items()))
        _cleanup_dns(dcfg, domain, f"deb{rand}")
        # the lab's own PTRs for the VPS again (dns sync pointed them at mta.<domain>)
        for addr, network in ((m.ipv4, lab_cfg.ipv4_network), (m.ipv6, lab_cfg.ipv6_network)):
            labdns.update(dcfg, labdns.reverse_zone_for(network),
                          replace=[labdns.Record(labdns.ptr_name(addr), "PTR", m.fqdn + ".")])


@pytest.mark.lab
def test_the_vps_runs_the_suite(host, lab_cfg):
    proc = core.ssh_run(lab_cfg, host["name"], ". /etc/os-release; echo $ID $VERSION_ID $VERSION_CODENAME")
    assert proc.stdout.split() == ["debian", VERSION[host["suite"]], host["suite"]], proc.stdout


@pytest.mark.lab
def test_converges_then_second_run_changes_nothing(host):
    assert host["first"]["changed"] > 10, host["first"]
    assert host["second"]["changed"] == 0, host["second"]["changed_tasks"]


@pytest.mark.lab
def test_check_run_changes_nothing(host):
    result = provision(host["inv"], "--check", "--diff")
    assert result["changed"] == 0, result["changed_tasks"]


@pytest.mark.lab
def test_verify_is_all_green(host):
    proc = mailops("verify", "--json", "-i", str(host["inv"]), check=False)
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    failed = {f"{r['subject']} {r['name']}": r["detail"] for r in report["results"] if r["status"] == "fail"}
    assert proc.returncode == 0 and report["ok"] and not failed, failed
    # inconclusive only where there is nothing to judge yet (the requirements' complaint rate
    # without reports, one-click headers without a sample of the application's mail)
    others = [(r["group"], r["subject"], r["name"], r["status"], r["detail"]) for r in report["results"]
              if r["status"] != "pass" and r["group"] != "requirements"]
    assert others == []
    assert {r["group"] for r in report["results"]} >= {"dns", "server", "security", "send", "returnpath"}


@pytest.mark.lab
def test_postconf_and_doveconf_have_no_warnings(host, lab_cfg):
    assert_no_config_warnings(lab_cfg, host["name"])

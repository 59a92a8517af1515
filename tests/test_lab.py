"""The lab itself: machines over SSH, DNS with RFC 2136, the package proxy and
the receiving host's authentication verdicts.  Everything here is real."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mailops.lab import core, dns as labdns, receiver
from mailops.lab.config import LabConfig
from tests.helpers import mailops

pytestmark = pytest.mark.lab

# The VPS these tests inspect as `lab up` makes it.  Not vps1: the demo converges vps1 and leaves
# it converged for test_provision (one fresh converge per run, not two).  test_roles_mta_sts
# resets vps2 before it converges it.
PRISTINE = 2
VPS = f"vps{PRISTINE}"


@pytest.fixture(scope="module")
def pristine(lab, lab_cfg):
    core.up(lab_cfg, vps=PRISTINE)
    return lab_cfg.vps(PRISTINE)


def run_on(cfg, name, script, **kw):
    proc = core.ssh_run(cfg, name, script, **kw)
    assert proc.returncode == 0, f"{name}: {script!r} failed: {proc.stderr}"
    return proc.stdout.strip() if isinstance(proc.stdout, str) else proc.stdout


def query(cfg: LabConfig, name: str, rtype: str):
    q = dns.message.make_query(name, rtype)
    return dns.query.udp(q, cfg.gateway_ipv4, timeout=3)


def test_status_reports_every_machine_and_service(lab, lab_cfg):
    st = core.status(lab_cfg)
    names = {m["name"]: m for m in st["machines"]}
    assert {"mx", "vps1"} <= set(names)
    assert all(m["state"] == "running" for m in names.values()), names
    assert {s["state"] for s in st["services"]} == {"running"}
    assert st["network"]["present"] and st["network"]["firewall"]
    # and through the CLI, as JSON
    out = mailops("lab", "status", "--json").stdout
    data = json.loads(out)
    assert {"mx", "vps1"} <= {m["name"] for m in data["machines"]}


def test_second_up_duplicates_nothing(lab, lab_cfg):
    before = core.load_state(lab_cfg)
    again = core.up(lab_cfg, vps=1)
    after = core.load_state(lab_cfg)
    assert again.started == []
    assert before["machines"]["vps1"]["leader_pid"] == after["machines"]["vps1"]["leader_pid"]
    assert before["services"] == after["services"]
    links = subprocess.run(["ip", "-o", "link", "show", "master", lab_cfg.bridge], capture_output=True,
                           text=True).stdout
    names = re.findall(r"^\d+: ([^:@]+)", links, re.MULTILINE)
    assert names.count("vb-vps1") == 1 and names.count("vb-mx") == 1
    nameds = [p for p in _pids_with(str(lab_cfg.state_dir / "dns"))]
    assert len(nameds) == 1


def _pids_with(fragment: str) -> list[int]:
    import os
    from pathlib import Path

    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if fragment in cmd and "named" in cmd:
                found.append(int(pid))
    return found


def test_vps_is_a_fresh_server_reached_over_ssh(pristine, lab_cfg):
    out = run_on(lab_cfg, VPS, "hostname; systemctl is-system-running; python3 -c 'print(42)'; "
                               "dpkg-query -W -f='${Status}' postfix 2>/dev/null || echo no-postfix")
    hostname, state, py, postfix = out.splitlines()
    assert hostname == VPS and state == "running" and py == "42"
    assert postfix == "no-postfix"  # pristine: nothing but SSH and python3
    # strict host key checking works with the lab's known_hosts
    assert lab_cfg.known_hosts.read_text().count(pristine.fqdn) >= 1


def test_a_unit_stopped_on_one_vps_does_not_wait_for_its_twin_on_another(pristine, lab_cfg):
    # Each machine has cgroups of its own: with one shared tree (the host has no
    # systemd), systemd on Debian 13 waited its 90 s stop timeout for the same
    # unit's processes on the other machines.
    unit = f"twin-{uuid.uuid4().hex[:8]}"
    for name in ("vps1", VPS):
        run_on(lab_cfg, name, f"systemd-run --quiet --unit={unit} sleep 600")
    try:
        started = time.monotonic()
        run_on(lab_cfg, "vps1", f"timeout 30 systemctl stop {unit}")
        assert time.monotonic() - started < 10
        assert run_on(lab_cfg, VPS, f"systemctl is-active {unit}") == "active"
    finally:
        for name in ("vps1", VPS):
            core.ssh_run(lab_cfg, name, f"systemctl stop {unit}")


def test_vps_has_no_way_out_of_the_lab(pristine, lab_cfg):
    # No default route: nothing outside the lab is reachable (checked without sending a packet).
    out = core.ssh_run(lab_cfg, VPS, "ip route get 203.0.113.80; ip -6 route get 2001:4860::1")
    assert out.returncode != 0 and "unreachable" in out.stderr.lower()
    # and the host forwards nothing into or out of the bridge
    rules = subprocess.run(["nft", "list", "table", "inet", "mailops_lab"], capture_output=True, text=True).stdout
    assert f'iifname "{lab_cfg.bridge}" oifname != "{lab_cfg.bridge}" drop' in rules


def test_ansible_reaches_the_vps_with_the_lab_key(pristine, lab_cfg, tmp_path):
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"{VPS} ansible_host={pristine.ipv4} ansible_user=root "
                   f"ansible_ssh_private_key_file={lab_cfg.ssh_key} ansible_python_interpreter=/usr/bin/python3 "
                   f"ansible_ssh_common_args='-o UserKnownHostsFile={lab_cfg.known_hosts} -o StrictHostKeyChecking=yes'\n")
    ansible = __import__("shutil").which("ansible", path=str(__import__("pathlib").Path(sys.executable).parent))
    proc = subprocess.run([ansible, "-i", str(inv), VPS, "-m", "ansible.builtin.setup", "-a",
                           "filter=ansible_distribution*"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"ansible_distribution": "Debian"' in proc.stdout
    # the release of the suite the lab made the VPS from
    suite = next(m["suite"] for m in core.status(lab_cfg)["machines"] if m["name"] == VPS)
    release = {"trixie": "13", "bookworm": "12"}[suite]
    assert f'"ansible_distribution_major_version": "{release}"' in proc.stdout


def test_vps_resolves_lab_records_through_lab_dns(pristine, lab_cfg):
    out = run_on(lab_cfg, VPS, "python3 -c \"import socket; "
                               "print(socket.gethostbyname('mx.inbox.test')); "
                               f"print(socket.getaddrinfo('{pristine.fqdn}', 25, socket.AF_INET6)[0][4][0])\"")
    v4, v6 = out.splitlines()
    assert v4 == lab_cfg.receiver.ipv4 and v6 == pristine.ipv6
    ans = query(lab_cfg, labdns.ptr_name(pristine.ipv4), "PTR")
    assert ans.answer and str(ans.answer[0][0]) == f"{pristine.fqdn}."
    # authoritative only: no recursion for names outside the lab
    outside = query(lab_cfg, "debian.org.", "A")
    assert outside.rcode() == dns.rcode.REFUSED


def test_rfc2136_update_is_seen_by_the_vps(pristine, lab_cfg):
    dcfg = core.dns_config(lab_cfg)
    name = f"probe-{uuid.uuid4().hex[:8]}"
    labdns.update(dcfg, "shop.test.", add=[(name, "A", "198.51.100.99", 60)])
    script = f"python3 -c \"import socket; print(socket.gethostbyname('{name}.shop.test'))\""
    assert run_on(lab_cfg, VPS, script) == "198.51.100.99"
    labdns.update(dcfg, "shop.test.", replace=[(name, "A", "198.51.100.98", 60)])
    assert run_on(lab_cfg, VPS, script) == "198.51.100.98"
    labdns.update(dcfg, "shop.test.", delete=[(name, "A")])
    gone = core.ssh_run(lab_cfg, VPS, script)
    assert gone.returncode != 0
    # an unsigned update is refused and changes nothing
    import dns.update
    upd = dns.update.UpdateMessage("shop.test.")
    upd.add(name, 60, "A", "198.51.100.97")
    resp = dns.query.tcp(upd, lab_cfg.gateway_ipv4, timeout=5)
    assert resp.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
    assert query(lab_cfg, f"{name}.shop.test.", "A").rcode() == dns.rcode.NXDOMAIN


def test_tsig_axfr_of_a_lab_zone(lab, lab_cfg):
    import dns.zone
    dcfg = core.dns_config(lab_cfg)
    keyring = labdns.tsig_keyring(dcfg)
    keyname = next(iter(keyring))
    zone = dns.zone.from_xfr(dns.query.xfr(lab_cfg.gateway_ipv4, "lab.test.", keyring=keyring,
                                           keyname=keyname, timeout=5))
    assert zone.get_rdataset("vps1", "A") is not None


def test_dnsbl_listing_is_visible_from_the_vps(pristine, lab_cfg):
    dcfg = core.dns_config(lab_cfg)
    addr = pristine.ipv4
    rev = ".".join(reversed(addr.split(".")))
    script = f"python3 -c \"import socket; print(socket.gethostbyname('{rev}.dnsbl.test'))\""
    assert core.ssh_run(lab_cfg, VPS, script).returncode != 0
    labdns.set_dnsbl_listing(dcfg, addr, "127.0.0.2", reason="listed by a test")
    try:
        assert run_on(lab_cfg, VPS, script) == "127.0.0.2"
    finally:
        labdns.clear_dnsbl_listing(dcfg, addr)
    assert core.ssh_run(lab_cfg, VPS, script).returncode != 0


def test_package_proxy_serves_the_vps_and_caches(pristine, lab_cfg):
    url = "http://deb.debian.org/debian/dists/bookworm/Release"
    script = ("python3 -c \"import urllib.request as u; "
              f"o = u.build_opener(u.ProxyHandler({{'http': '{lab_cfg.proxy_url}'}})); "
              f"print(o.open('{url}', timeout=60).read().decode().splitlines()[0])\"")
    assert run_on(lab_cfg, VPS, script) == "Origin: Debian"
    assert run_on(lab_cfg, VPS, script) == "Origin: Debian"
    cached = list(lab_cfg.apt_cache_dir.rglob("Release"))
    assert cached, "apt-cacher-ng did not store the file it fetched"
    # apt itself, with the proxy the roles configure, installs a package
    out = core.ssh_run(lab_cfg, VPS,
                       f"echo 'Acquire::http::Proxy \"{lab_cfg.proxy_url}\";' > /etc/apt/apt.conf.d/01proxy && "
                       "apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -q -y install "
                       "--no-install-recommends libsasl2-modules-db >/dev/null && echo installed; "
                       "rm -f /etc/apt/apt.conf.d/01proxy", timeout=300)
    assert out.stdout.strip().endswith("installed"), out.stderr


# -- the receiving host ---------------------------------------------------------------------------
def _publish(lab_cfg, zone, records):
    labdns.update(core.dns_config(lab_cfg), zone, replace=records)


def _send_from_vps(lab_cfg, raw: bytes, mail_from: str, rcpt: str, helo: str) -> None:
    script = ("python3 -c \"import sys, smtplib; "
              f"s = smtplib.SMTP('mx.inbox.test', 25, local_hostname='{helo}', timeout=30); "
              f"s.sendmail('{mail_from}', ['{rcpt}'], sys.stdin.buffer.read()); s.quit()\"")
    proc = core.ssh_run(lab_cfg, VPS, script, input=raw)
    assert proc.returncode == 0, proc.stderr


def _message(sender: str, rcpt: str, subject: str) -> bytes:
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, subject
    m["Date"], m["Message-ID"] = formatdate(), make_msgid(domain="shop.test")
    m.set_content("hello from the mailops lab\n")
    return m.as_bytes().replace(b"\n", b"\r\n")


def test_receiver_stamps_pass_for_dkim_spf_and_dmarc(pristine, lab_cfg):
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    selector = f"t{uuid.uuid4().hex[:6]}"
    _publish(lab_cfg, "lab.test.", [
        ("@", "TXT", f'"v=spf1 ip4:{pristine.ipv4} ip6:{pristine.ipv6} -all"', 60),
        ("_dmarc", "TXT", '"v=DMARC1; p=reject; rua=mailto:dmarc@lab.test"', 60),
        (f"{selector}._domainkey", "TXT", f'v=DKIM1; k=rsa; p={pub}', 60),
    ])
    subject = f"auth pass {uuid.uuid4().hex[:8]}"
    rcpt = "pass@inbox.test"
    raw = _message("Alice <alice@lab.test>", rcpt, subject)
    signature = dkim.sign(raw, selector.encode(), b"lab.test", pem,
                          include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"])
    _send_from_vps(lab_cfg, signature + raw, "bounce@lab.test", rcpt, pristine.fqdn)
    msg = receiver.wait_for_message(core.machine_root(lab_cfg, "mx"), recipient=rcpt, subject=subject, timeout=30)
    assert msg is not None, "message did not arrive at the receiving host"
    results = " | ".join(msg.authentication_results)
    assert msg.auth_result("dkim") == "pass", results
    assert "header.d=lab.test" in results and f"header.s={selector}" in results, results
    assert msg.auth_result("spf") == "pass", results
    assert msg.auth_result("dmarc") == "pass", results


def test_receiver_reports_failures_too(pristine, lab_cfg):
    # news.lab.test authorises some other address only, and publishes no DKIM key.
    _publish(lab_cfg, "lab.test.", [
        ("news", "TXT", '"v=spf1 ip4:198.51.100.200 -all"', 60),
        ("_dmarc.news", "TXT", '"v=DMARC1; p=quarantine"', 60),
    ])
    subject = f"auth fail {uuid.uuid4().hex[:8]}"
    rcpt = "fail@inbox.test"
    raw = _message("news@news.lab.test", rcpt, subject)
    _send_from_vps(lab_cfg, raw, "bounce@news.lab.test", rcpt, pristine.fqdn)
    msg = receiver.wait_for_message(core.machine_root(lab_cfg, "mx"), recipient=rcpt, subject=subject, timeout=30)
    assert msg is not None
    results = " | ".join(msg.authentication_results)
    assert msg.auth_result("spf") == "fail", results
    assert msg.auth_result("dmarc") == "fail", results
    assert msg.auth_result("dkim") in ("none", None), results


def test_receiver_dmarc_passes_on_aligned_spf_alone(pristine, lab_cfg):
    _publish(lab_cfg, "lab.test.", [
        ("@", "TXT", f"v=spf1 ip4:{pristine.ipv4} ip6:{pristine.ipv6} -all", 60),
        ("_dmarc", "TXT", "v=DMARC1; p=reject", 60),
    ])
    subject = f"spf only {uuid.uuid4().hex[:8]}"
    rcpt = "spf@inbox.test"
    _send_from_vps(lab_cfg, _message("alice@lab.test", rcpt, subject), "alice@lab.test", rcpt, pristine.fqdn)
    msg = receiver.wait_for_message(core.machine_root(lab_cfg, "mx"), recipient=rcpt, subject=subject, timeout=30)
    assert msg is not None
    results = " | ".join(msg.authentication_results)
    assert msg.auth_result("spf") == "pass" and msg.auth_result("dkim") == "none", results
    assert msg.auth_result("dmarc") == "pass", results
    # SPF is stamped once (policyd-spf), not again by OpenDMARC
    assert results.count("spf=") == 1, results

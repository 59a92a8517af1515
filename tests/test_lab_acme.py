"""Tests for mailops.lab.acme (Debian's pebble as the lab's ACME CA) and, on a lab
VPS, for the `tls` role issuing a certificate from it with certbot (http-01).

The unit tests need nothing.  The pebble tests run pebble on the lab gateway
address (they bring the lab up through the `lab` fixture) with a state dir
under /tmp; they skip without root or pebble, except with CI=true, where a
missing prerequisite fails.  The issuance test converges roles/tls on the VPS
named by MAILOPS_TEST_VPS (default vps4) and runs mailops/checks/test_tls.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from mailops.errors import MailopsError
from mailops.lab import acme, core
from mailops.lab import dns as labdns
from mailops.lab.system import pid_alive, wait_tcp
from tests.conftest import IN_CI, missing_prerequisite, require_lab_prerequisites
from tests.helpers import ROOT as REPO, VENV_BIN, playbook_env

# Ports for the tests' own pebble: not the lab's 14000/15000, which a pebble
# started by `mailops lab up` may hold (gateway-local traffic needs no firewall rule).
TEST_PORT, TEST_MGMT_PORT = 14001, 15001


# --------------------------------------------------------------------------- unit tests (no root)


def test_https_ca_covers_the_listen_address_and_is_reused(tmp_path):
    cfg = acme.AcmeConfig(state_dir=tmp_path / "acme", listen="198.51.100.1")
    bundle = acme.server_ca_bundle(cfg)
    ca = x509.load_pem_x509_certificate(bundle.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate((cfg.state_dir / acme.SERVER_CERT_NAME).read_bytes())
    assert server.issuer == ca.subject
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("198.51.100.1") in san.get_values_for_type(x509.IPAddress)
    assert (cfg.state_dir / acme.CA_KEY_NAME).stat().st_mode & 0o077 == 0
    assert (cfg.state_dir / acme.SERVER_KEY_NAME).stat().st_mode & 0o077 == 0
    # A second call keeps the CA (bundles copied to lab machines stay valid) ...
    before = bundle.read_bytes()
    assert acme.server_ca_bundle(cfg).read_bytes() == before
    # ... also when the listen address changes: only the server certificate is reissued.
    moved = acme.AcmeConfig(state_dir=cfg.state_dir, listen="2001:db8:51::1")
    assert acme.server_ca_bundle(moved).read_bytes() == before
    server = x509.load_pem_x509_certificate((cfg.state_dir / acme.SERVER_CERT_NAME).read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("2001:db8:51::1") in san.get_values_for_type(x509.IPAddress)


def test_write_config_and_urls(tmp_path):
    cfg = acme.AcmeConfig(state_dir=tmp_path, listen="2001:db8:51::1", port=14010, mgmt_port=15010, http_port=8080)
    conf = json.loads(acme.write_config(cfg).read_text())["pebble"]
    assert conf["listenAddress"] == "[2001:db8:51::1]:14010"
    assert conf["managementListenAddress"] == "[2001:db8:51::1]:15010"
    assert conf["httpPort"] == 8080
    assert Path(conf["certificate"]).is_file() and Path(conf["privateKey"]).is_file()
    assert acme.directory_url(cfg) == "https://[2001:db8:51::1]:14010/dir"
    assert acme.directory_url(acme.AcmeConfig(state_dir=tmp_path)) == "https://198.51.100.1:14000/dir"


def test_running_pid_ignores_a_foreign_process(tmp_path):
    cfg = acme.AcmeConfig(state_dir=tmp_path)
    assert acme.running_pid(cfg) is None
    (tmp_path / acme.PID_NAME).write_text(f"{os.getpid()}\n")  # alive, but not our pebble
    assert acme.running_pid(cfg) is None
    acme.stop(os.getpid(), cfg)  # must not signal it
    assert pid_alive(os.getpid())


# --------------------------------------------------------------------------- pebble on the gateway


def _require_pebble() -> None:
    require_lab_prerequisites()
    if shutil.which("pebble") is None and not os.access("/usr/bin/pebble", os.X_OK):
        missing_prerequisite("pebble is not installed (apt install pebble)")


@pytest.fixture()
def pebble(lab, lab_cfg):
    _require_pebble()
    state = Path(tempfile.mkdtemp(prefix="mailops-acme-test-"))
    cfg = acme.AcmeConfig(state_dir=state, listen=lab_cfg.gateway_ipv4, port=TEST_PORT, mgmt_port=TEST_MGMT_PORT,
                          dns_server=f"{lab_cfg.gateway_ipv4}:53")
    pid = acme.start(cfg)
    try:
        yield cfg, pid
    finally:
        acme.stop(pid, cfg)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.lab
def test_pebble_serves_the_directory_and_stops_cleanly(pebble):
    cfg, pid = pebble
    assert acme.running_pid(cfg) == pid
    assert acme.start(cfg) == pid, "a second start must reuse the running pebble"
    ctx = __import__("ssl").create_default_context(cafile=str(acme.server_ca_bundle(cfg)))
    with urllib.request.urlopen(acme.directory_url(cfg), context=ctx, timeout=5) as resp:
        directory = json.load(resp)
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory), directory
    pems = acme.issuing_roots(cfg)
    assert len(pems) >= 2, "expected at least one root and one intermediate"
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in pems]
    assert certs[0].subject == certs[0].issuer, "the first PEM must be the self-signed issuing root"
    assert any(c.issuer == certs[0].subject and c.subject != c.issuer for c in certs[1:])
    bundle = acme.write_issuing_roots(cfg)
    assert bundle.read_text().count("BEGIN CERTIFICATE") == len(pems)

    acme.stop(pid, cfg)
    assert not pid_alive(pid)
    assert acme.running_pid(cfg) is None
    # the listening socket goes with the process; allow the kernel a moment under load
    deadline = time.monotonic() + 10
    while wait_tcp(cfg.listen, cfg.port, 0.2) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not wait_tcp(cfg.listen, cfg.port, 0.5), "pebble's port still answers after stop"
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and str(acme.config_path(cfg)) in _cmdline(p)]
    assert leftovers == [], f"pebble processes left: {leftovers}"


@pytest.mark.lab
def test_start_refuses_a_port_in_use(pebble, tmp_path):
    cfg, _ = pebble
    other = acme.AcmeConfig(state_dir=tmp_path, listen=cfg.listen, port=cfg.port, mgmt_port=cfg.mgmt_port)
    with pytest.raises(MailopsError, match="already in use"):
        acme.start(other)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- issuance with roles/tls


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if not found:
        missing_prerequisite(f"{name} is not installed")
    return found


@pytest.fixture()
def lab_pebble(lab, lab_cfg):
    """The lab's pebble on the standard ports (14000/15000: the only ones lab machines may reach):
    the one `mailops lab up` runs, or one of our own for the duration of the test."""
    _require_pebble()
    lab_acme = acme.lab_acme_config(lab_cfg)
    if acme.running_pid(lab_acme):
        yield lab_acme
        return
    if wait_tcp(lab_acme.listen, lab_acme.port, 0.5):
        missing_prerequisite(f"{lab_acme.listen}:{lab_acme.port} is held by an ACME server this test does not know")
    state = Path(tempfile.mkdtemp(prefix="mailops-acme-lab-"))
    cfg = acme.AcmeConfig(state_dir=state, listen=lab_cfg.gateway_ipv4, dns_server=f"{lab_cfg.gateway_ipv4}:53")
    pid = acme.start(cfg)
    try:
        yield cfg
    finally:
        acme.stop(pid, cfg)
        shutil.rmtree(state, ignore_errors=True)


def _converge(playbook: Path, inventory: Path, env: dict, *extra: str) -> tuple[int, dict, str]:
    t0 = time.monotonic()
    proc = subprocess.run([_tool("ansible-playbook"), "-i", str(inventory), str(playbook), *extra],
                          capture_output=True, text=True, env=env, timeout=900)
    stats = {}
    for line in proc.stdout.splitlines():
        if " : ok=" in line:
            stats = dict(kv.split("=") for kv in line.split(":", 1)[1].split())
    print(f"ansible-playbook {' '.join(extra) or '(converge)'}: rc={proc.returncode} {stats} "
          f"in {time.monotonic() - t0:.1f}s")
    return proc.returncode, stats, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.lab
def test_tls_role_obtains_a_lab_certificate(lab, lab_cfg, lab_pebble, tmp_path):
    name = os.environ.get("MAILOPS_TEST_VPS", "vps4")
    number = int(name.removeprefix("vps"))
    if name not in core.load_state(lab_cfg).get("machines", {}):
        if not IN_CI:
            pytest.skip(f"lab machine {name} is not running (mailops lab up --vps {number})")
        core.up(lab_cfg, vps=number)
    vps = lab_cfg.vps(number)
    fqdn = f"mta{number}.shop.test"
    labdns.update(core.dns_config(lab_cfg), "shop.test.",
                  replace=[(f"mta{number}", "A", vps.ipv4, 60), (f"mta{number}", "AAAA", vps.ipv6, 60)])
    # Certificates and accounts from an earlier pebble are unknown to this one (pebble keeps no state).
    acct = f"{lab_pebble.listen}:{lab_pebble.port}"
    cleanup = core.ssh_run(lab_cfg, name, f"rm -rf /etc/letsencrypt/accounts/{acct} /etc/letsencrypt/live/{fqdn} "
                                          f"/etc/letsencrypt/archive/{fqdn} /etc/letsencrypt/renewal/{fqdn}.conf")
    assert cleanup.returncode == 0, cleanup.stderr

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"mailhosts": {
        "hosts": {fqdn: {
            "ansible_host": vps.ipv4, "ansible_user": "root",
            "ansible_ssh_private_key_file": str(lab_cfg.ssh_key),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab_cfg.known_hosts} -o StrictHostKeyChecking=yes",
            "mailops_ipv4": vps.ipv4, "mailops_ipv6": vps.ipv6}},
        "vars": {"mailops_apt_proxy": lab_cfg.proxy_url, "mailops_tls": {
            "mode": "acme", "acme_directory": acme.directory_url(lab_pebble),
            "acme_email": "postmaster@shop.test", "acme_ca_bundle": str(acme.server_ca_bundle(lab_pebble))}},
    }}}}))
    playbook = tmp_path / "tls.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Converge the tls role
          hosts: mailhosts
          gather_facts: false
          pre_tasks:
            - name: Use the lab's package proxy
              ansible.builtin.copy:
                dest: /etc/apt/apt.conf.d/01proxy
                content: 'Acquire::http::Proxy "{{ mailops_apt_proxy }}";'
                mode: "0644"
          roles:
            - tls
        """))
    env = playbook_env(ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1")

    rc, stats, out = _converge(playbook, inventory, env, "--check", "--diff")
    assert rc == 0, f"check run failed:\n{out}"
    rc, stats, out = _converge(playbook, inventory, env)
    assert rc == 0, f"first converge failed:\n{out}"
    assert "Obtain the certificate" in out
    rc, stats, out = _converge(playbook, inventory, env)
    assert rc == 0, f"second converge failed:\n{out}"
    assert stats.get("changed") == "0", f"second converge is not idempotent:\n{out}"

    roots = acme.write_issuing_roots(lab_pebble, tmp_path / "roots.pem")
    checks = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "testinfra", "-p", "no:cacheprovider", "-q",
         f"--hosts=ansible://{fqdn}", f"--ansible-inventory={inventory}", "--rootdir", str(tmp_path),
         str(REPO / "mailops" / "checks" / "test_tls.py")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env=dict(env, MAILOPS_ACME_ROOTS_FILE=str(roots)))
    assert checks.returncode == 0, checks.stdout[-4000:] + checks.stderr[-2000:]
    assert " passed" in checks.stdout and "skipped" not in checks.stdout, checks.stdout[-2000:]

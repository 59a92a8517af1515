"""Converge a lab VPS as a shop.test mail host with the mail roles only (sasl,
opendkim, postfix and whatever a test adds), for tests that need a real sending
server but not the whole site play: a key store made here, a stand-in
self-signed certificate, the host's A/AAAA/PTR and shop.test's SPF, DMARC and
DKIM records written straight into the lab BIND."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path

import yaml

from mailops.lab import core, dns as labdns
from tests.conftest import missing_prerequisite, require_lab_prerequisites
from tests.helpers import (HOSTS, ROOT, SETTINGS, VENV_BIN, changed_tasks, mailops, playbook_env,
                           write_yaml)


def ensure_lab_vps(lab_cfg, number: int) -> None:
    """Skip (or fail in CI) without the lab's prerequisites; bring the lab up with vps<number>
    and the receiving host running."""
    import shutil

    require_lab_prerequisites()
    if shutil.which("openssl") is None:
        missing_prerequisite("openssl is needed for the stand-in certificate")
    running = {m["name"] for m in core.status(lab_cfg)["machines"] if m["state"] == "running"}
    if f"vps{number}" not in running or "mx" not in running:
        core.up(lab_cfg, vps=number)


def write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization as ser

    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def make_keystore(store: Path, selectors: dict[str, str]) -> list[dict]:
    """A mailops key store for shop.test with one RSA-2048 key per selector ({selector: state})."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = []
    for selector, state in selectors.items():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rel = f"shop.test/{selector}.key"
        write_key(store / rel, key)
        pub = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        keys.append({"domain": "shop.test", "selector": selector, "algorithm": "rsa", "bits": 2048,
                     "state": state, "created": "2026-01-01T00:00:00+00:00",
                     "activated": "2026-01-02T00:00:00+00:00" if state == "active" else None,
                     "retired": None, "private_key": rel,
                     "dns_value": "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()})
    (store / "keys.json").write_text(json.dumps({"version": 1, "keys": keys}, indent=2))
    return keys


def self_signed(tls_dir: Path, fqdn: str) -> None:
    tls_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                    "-subj", f"/CN={fqdn}", "-addext", f"subjectAltName=DNS:{fqdn}",
                    "-keyout", str(tls_dir / "privkey.pem"), "-out", str(tls_dir / "fullchain.pem")],
                   check=True, capture_output=True)


def publish_host_dns(lab_cfg, number: int, fqdn: str, keys: list[dict]) -> None:
    ipv4, ipv6 = f"198.51.100.{10 + number}", f"2001:db8:51::{10 + number}"
    dcfg = core.dns_config(lab_cfg)
    labdns.update(dcfg, "shop.test.", replace=[
        ("shop.test.", "TXT", "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:51::/64 ~all", 60),
        ("_dmarc.shop.test.", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r", 60),
        (f"{fqdn}.", "A", ipv4, 60), (f"{fqdn}.", "AAAA", ipv6, 60),
        *[(f"{k['selector']}._domainkey.shop.test.", "TXT", k["dns_value"], 60) for k in keys]])
    labdns.update(dcfg, "100.51.198.in-addr.arpa.", replace=[(str(10 + number), "PTR", f"{fqdn}.", 60)])
    labdns.update(dcfg, labdns.reverse_zone_for("2001:db8:51::/64"),
                  replace=[(labdns.ptr_name(ipv6), "PTR", f"{fqdn}.", 60)])


class MailHost:
    """A lab VPS converged by the mail roles from a temporary inventory."""

    def __init__(self, lab_cfg, work: Path, number: int, *, selectors: dict[str, str],
                 users: list[dict], passwords: dict[str, str], group_vars: dict | None = None,
                 roles: tuple[str, ...] = ("sasl", "opendkim", "postfix"), env: dict | None = None,
                 publish_dns: bool = True):
        self.lab_cfg, self.work, self.number = lab_cfg, work, number
        self.name = f"vps{number}"
        self.fqdn = f"mta{number}.shop.test"
        self.ipv4, self.ipv6 = f"198.51.100.{10 + number}", f"2001:db8:51::{10 + number}"
        self.passwords = passwords
        self.mx_root = core.machine_root(lab_cfg, "mx")  # the receiving host's files, mailboxes included
        self.keys = make_keystore(work / "keys", selectors)
        self_signed(work / "tls", self.fqdn)
        if publish_dns:  # tests that probe by address leave the shared shop.test zone alone
            publish_host_dns(lab_cfg, number, self.fqdn, self.keys)
        self.inv = work / "inventory"
        (self.inv / "secrets").mkdir(parents=True)
        ssh = lab_cfg.state_dir / "ssh"
        write_yaml(self.inv / HOSTS, {"all": {"children": {"mailhosts": {"hosts": {
            self.fqdn: {
                "ansible_host": self.ipv4, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh / 'known_hosts'} "
                                           "-o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
                "mailops_ipv4": self.ipv4, "mailops_ipv6": self.ipv6}}}}}})
        vars_ = {
            "mailops_dkim_keystore": str(work / "keys"),
            "mailops_apt_proxy": f"http://{lab_cfg.gateway_ipv4}:3142",
            "mailops_domains": {"shop.test": {"dns_provider": "lab"}},
            # the records are written by hand above; the provider only makes the inventory complete
            "mailops_dns_providers": {"lab": {
                "type": "rfc2136", "server": lab_cfg.gateway_ipv4, "tsig_key_name": "mailops-lab.",
                "tsig_algorithm": "hmac-sha256", "tsig_secret": {"file": str(lab_cfg.state_dir / "dns/tsig.secret")},
                "zones": ["shop.test", "news.test"]}},
            "mailops_submission_users": users,
            **(group_vars or {})}
        self.write_group_vars(vars_)
        for login, pw in passwords.items():
            (self.inv / "secrets" / f"{login.split('@')[0]}.password").write_text(pw + "\n")
        self.playbook = work / "converge.yml"
        # the pre-tasks stand in for the roles this play leaves out: they run under --tags too
        self.playbook.write_text(yaml.safe_dump([{
            "name": "converge " + ", ".join(roles), "hosts": "mailhosts",
            "pre_tasks": [
                {"name": "apt proxy", "tags": ["always"], "ansible.builtin.copy": {
                    "content": "Acquire::http::Proxy \"{{ mailops_apt_proxy }}\";\n",
                    "dest": "/etc/apt/apt.conf.d/01proxy", "mode": "0644"}},
                # made in --check too, so that the stand-in certificate can be checked on a pristine VPS
                {"name": "tls dir", "tags": ["always"], "check_mode": False, "ansible.builtin.file": {
                    "path": "/etc/mailops/tls", "state": "directory", "mode": "0755"}},
                {"name": "stand-in certificate", "tags": ["always"], "no_log": True, "ansible.builtin.copy": {
                    "src": f"{work / 'tls'}/{{{{ item.name }}}}", "dest": "/etc/mailops/tls/{{ item.name }}",
                    "mode": "{{ item.mode }}"},
                 "loop": [{"name": "fullchain.pem", "mode": "0644"}, {"name": "privkey.pem", "mode": "0600"}]},
            ],
            "roles": list(roles)}]))
        self.env = playbook_env(ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_PIPELINING="True",
                                ANSIBLE_NOCOLOR="1", **(env or {}))

    def write_group_vars(self, vars_: dict) -> None:
        self.group_vars = vars_
        write_yaml(self.inv / SETTINGS, vars_)

    def converge(self, *extra: str) -> tuple[str, dict]:
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inv), str(self.playbook), *extra],
                              capture_output=True, text=True, env=self.env, cwd=self.work)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"ansible-playbook {' '.join(extra)} failed:\n{out[-4000:]}"
        for secret in (*self.passwords.values(), "PRIVATE KEY"):
            assert secret not in out, "a secret appeared in the Ansible output"
        recap = proc.stdout.split("PLAY RECAP", 1)[1]  # stderr's warnings may follow it in `out`
        stats = {k: int(v) for k, v in (part.split("=") for part in recap.split() if "=" in part)}
        return out, stats

    def converge_twice(self) -> "MailHost":
        """Converge, then converge again: ``first`` and ``second`` are the two runs' recap counts and
        ``second_changed`` names what the second run changed (for idempotence: nothing)."""
        _, self.first = self.converge()
        out, self.second = self.converge()
        self.second_changed = changed_tasks(out)
        return self

    def ssh(self, script: str, timeout: float = 60) -> str:
        proc = core.ssh_run(self.lab_cfg, self.name, script, timeout=timeout)
        assert proc.returncode == 0, f"{script!r} on {self.name} failed: {proc.stderr[-1000:]}"
        return proc.stdout


def publish_lab_inventory() -> None:
    """The lab inventory's DKIM keys generated and its DNS records published (--force: earlier lab
    tests write shop.test records by hand)."""
    mailops("dkim", "generate", "--all")
    mailops("dns", "sync", "--apply", "--force")


def new_password(who: str) -> str:
    return f"{who}-" + uuid.uuid4().hex[:12]


def assert_no_config_warnings(lab_cfg, name: str) -> None:
    """Nothing in the configuration the roles wrote on lab machine `name` is deprecated or unknown
    to its Postfix and Dovecot."""
    proc = core.ssh_run(lab_cfg, name, "postconf -n >/dev/null; postconf -M >/dev/null; "
                                       "doveconf -n >/dev/null; postfix check")
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr

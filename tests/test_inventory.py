"""Inventory loading and checking: the shipped inventories are clean, each bad input
gives exactly one actionable line naming file and field."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailops.errors import MailopsError
from mailops.inventory import (
    EnvSecret,
    FileSecret,
    Problem,
    check_inventory,
    load_inventory,
    resolve_inventory_path,
)
from mailops.inventory.problems import render_path
from mailops.inventory.secrets import resolve
from tests.helpers import HOSTS, LAB_INVENTORY as LAB, ROOT as REPO, SETTINGS as MAILOPS, VENV_BIN, copy_inventory, \
    replace_text

EXAMPLE = REPO / "inventories" / "example"
SHAPE = re.compile(r"^[^\n]+?(:\d+)?: [^\n]+: [^\n]+$")


@pytest.fixture
def inv(tmp_path, monkeypatch):
    """A copy of the lab inventory at ./inv, with the cwd at its parent."""
    monkeypatch.chdir(tmp_path)
    return copy_inventory(tmp_path / "inv")


def edit(inv: Path, file: str, old: str, new: str) -> None:
    replace_text(inv / file, old, new, count=1)


# --- clean inventories -------------------------------------------------------

@pytest.mark.parametrize("path", [LAB, EXAMPLE], ids=["lab", "example"])
def test_shipped_inventories_are_clean(path):
    inventory, problems = load_inventory(path)
    assert [str(p) for p in problems] == []
    assert inventory is not None and inventory.hosts and inventory.domains


@pytest.mark.parametrize("path", [LAB, EXAMPLE], ids=["lab", "example"])
def test_ansible_inventory_reads_them(path):
    result = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(path), "--list"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["mailhosts"]["hosts"]
    assert "WARNING" not in result.stderr, result.stderr


def test_lab_values():
    inv, problems = load_inventory(LAB)
    assert problems == []
    (host,) = inv.hosts
    assert (host.name, host.fqdn, str(host.ipv4), str(host.ipv6)) == \
        ("mta1.shop.test", "mta1.shop.test", "198.51.100.11", "2001:db8:51::11")
    assert (host.ssh_host, host.ssh_user, host.ssh_private_key_file, host.reverse_dns_provider) == \
        ("198.51.100.11", "root", "/var/lib/mailops/lab/ssh/id_ed25519", "lab-reverse")
    assert set(inv.domains) == {"shop.test", "news.test"}
    shop = inv.domains["shop.test"]
    assert shop.dmarc.policy == "reject" and shop.dmarc.rua == ["mailto:dmarc@shop.test"]
    assert shop.mta_sts.mode == "testing" and shop.tls_rpt.rua == ["mailto:tlsrpt@shop.test"]
    assert shop.hosts == ["mta1.shop.test"]  # default filled in: every mail host
    assert inv.domains["news.test"].dmarc.policy == "quarantine"
    rfc = inv.dns_providers["lab-rfc2136"]
    assert (rfc.type, rfc.server, rfc.tsig_key_name, rfc.tsig_algorithm, rfc.zones) == \
        ("rfc2136", "198.51.100.1", "mailops-lab.", "hmac-sha256", ["shop.test"])
    assert rfc.tsig_secret == FileSecret(file="/var/lib/mailops/lab/dns/tsig.secret")
    cf = inv.dns_providers["lab-cloudflare"]
    assert cf.api_base_url == "http://198.51.100.1:8787/client/v4"
    assert cf.api_token == FileSecret(file="/var/lib/mailops/lab/cloudflare/token")
    assert inv.reverse_dns_providers["lab-reverse"].type == "rfc2136"
    assert [u.login for u in inv.submission_users] == ["alice@shop.test", "news@news.test"]
    assert inv.submission_users[1].password == FileSecret(file="/var/lib/mailops/lab/secrets/news.password")
    assert inv.dkim_keystore == Path("/var/lib/mailops/lab/dkim")
    assert inv.apt_proxy == "http://198.51.100.1:3142"
    assert set(inv.rate_limits.destinations) == {"gmail.com", "outlook.com"}
    assert inv.rate_limits.warmup is not None
    assert inv.path == LAB


def test_resolve_inventory_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_inventory_path("lab") == LAB
    (tmp_path / "mine").mkdir()
    assert resolve_inventory_path("mine") == Path("mine")
    assert resolve_inventory_path("./x") == Path("./x")


# --- one bad input, one line --------------------------------------------------

G = "inv/" + MAILOPS
H = "inv/" + HOSTS
HOST = 'all.children.mailhosts.hosts["mta1.shop.test"]'

CASES = {
    "unknown global key": (MAILOPS, "mailops_apt_proxy:", "mailops_apt_proxi:",
                           G, "mailops_apt_proxi", "did you mean mailops_apt_proxy?"),
    "unknown host key": (HOSTS, "mailops_reverse_dns_provider:", "mailops_revers_dns_provider:",
                         H, HOST + ".mailops_revers_dns_provider", "did you mean mailops_reverse_dns_provider?"),
    "unknown nested key": (MAILOPS, "      policy: reject", "      polcy: reject",
                           G, 'mailops_domains["shop.test"].dmarc.polcy', "did you mean policy?"),
    "unknown group key": (HOSTS, "      hosts:", "      hostz:",
                          H, "all.children.mailhosts.hostz", "did you mean hosts?"),
    "bad fqdn": (HOSTS, "          mailops_ipv4:", "          mailops_fqdn: mta1..shop.test\n          mailops_ipv4:",
                 H, HOST + ".mailops_fqdn", "empty label"),
    "bare host name": (HOSTS, "mta1.shop.test:", "mta1:", H, 'all.children.mailhosts.hosts.mta1',
                       "not a fully qualified domain name"),
    "bad ipv4": (HOSTS, "mailops_ipv4: 198.51.100.11", "mailops_ipv4: 198.51.100.300",
                 H, HOST + ".mailops_ipv4", "is not an IPv4 address"),
    "private ipv4": (HOSTS, "mailops_ipv4: 198.51.100.11", "mailops_ipv4: 10.1.2.3",
                     H, HOST + ".mailops_ipv4", "not a public address"),
    "bad ipv6": (HOSTS, '"2001:db8:51::11"', '"2001:db8:51:::11"',
                 H, HOST + ".mailops_ipv6", "is not an IPv6 address"),
    "missing ipv4": (HOSTS, "          mailops_ipv4: 198.51.100.11\n", "",
                     H, HOST + ".mailops_ipv4", "required"),
    "domain without provider": (MAILOPS, "    dns_provider: lab-cloudflare\n", "",
                                G, 'mailops_domains["news.test"].dns_provider', "required"),
    "undefined provider": (MAILOPS, "dns_provider: lab-cloudflare", "dns_provider: lab-cloudflar",
                           G, 'mailops_domains["news.test"].dns_provider', "did you mean lab-cloudflare?"),
    "undefined reverse provider": (HOSTS, "mailops_reverse_dns_provider: lab-reverse",
                                   "mailops_reverse_dns_provider: lab-revers",
                                   H, HOST + ".mailops_reverse_dns_provider", "is not defined"),
    "inline secret": (MAILOPS, "api_token: {file: /var/lib/mailops/lab/cloudflare/token}",
                      "api_token: sk-SUPERSECRET-4711",
                      G, "mailops_dns_providers.lab-cloudflare.api_token", "secret written inline"),
    "inline password": (MAILOPS, "password: {file: /var/lib/mailops/lab/secrets/news.password}", "password: SUPERSECRET-4711",
                        G, "mailops_submission_users[1].password", "{env: NAME} or {file: PATH}"),
    "plain text as hash": (MAILOPS, "password: {file: /var/lib/mailops/lab/secrets/news.password}",
                           "password_hash: SUPERSECRET-4711",
                           G, "mailops_submission_users[1].password_hash", "not a crypt hash"),
    "rsa 1024": (MAILOPS, "    dmarc:\n      policy: reject", "    dkim: {rsa_bits: 1024}\n    dmarc:\n      policy: reject",
                 G, 'mailops_domains["shop.test"].dkim.rsa_bits', "set rsa_bits: 2048"),
    "ed25519 with opendkim": (MAILOPS, "    dmarc:\n      policy: reject",
                              "    dkim: {algorithms: [rsa, ed25519]}\n    dmarc:\n      policy: reject",
                              G, 'mailops_domains["shop.test"].dkim.algorithms', "set algorithms: [rsa]"),
    "bad dmarc policy": (MAILOPS, "policy: reject", "policy: rejectt",
                         G, 'mailops_domains["shop.test"].dmarc.policy',
                         "'rejectt' is not one of none, quarantine, reject; set one of those"),
    "bad rua": (MAILOPS, "rua: [mailto:dmarc@shop.test]", "rua: [dmarc@shop.test]",
                G, 'mailops_domains["shop.test"].dmarc.rua[0]', "not a mailto: URI"),
    "bad provider type": (MAILOPS, "type: cloudflare", "type: cloudflair",
                          G, "mailops_dns_providers.lab-cloudflare.type", "is not one of cloudflare, rfc2136"),
    "missing provider type": (MAILOPS, "    type: cloudflare\n", "",
                              G, "mailops_dns_providers.lab-cloudflare.type", "set type: to one of cloudflare, rfc2136"),
    "keystore with unset variable": (MAILOPS, "mailops_dkim_keystore: /var/lib/mailops/lab/dkim",
                                     "mailops_dkim_keystore: $MO_SURELY_UNSET_VAR/dkim",
                                     G, "mailops_dkim_keystore", "MO_SURELY_UNSET_VAR is not set"),
    "duplicate login": (MAILOPS, "login: news@news.test", "login: alice@shop.test",
                        G, "mailops_submission_users[1].login", "already used"),
    "login outside domains": (MAILOPS, "login: news@news.test", "login: news@elsewhere.test",
                              G, "mailops_submission_users[1].login", "not in mailops_domains"),
    "keystore inside inventory": (MAILOPS, "mailops_dkim_keystore: /var/lib/mailops/lab/dkim",
                                  "mailops_dkim_keystore: dkim-keys",
                                  G, "mailops_dkim_keystore", "keys must live outside git"),
    "keystore inside repo": (MAILOPS, "mailops_dkim_keystore: /var/lib/mailops/lab/dkim",
                             f"mailops_dkim_keystore: {REPO}/keys",
                             G, "mailops_dkim_keystore", "keys must live outside git"),
    "domain outside provider zones": (MAILOPS, "zones: [shop.test]", "zones: [lab.test]",
                                      G, 'mailops_domains["shop.test"].dns_provider', "only authoritative"),
    "unsorted warmup": (MAILOPS, "{day: 7, volume: 1000}", "{day: 2, volume: 1000}",
                        G, "mailops_rate_limits.warmup.schedule", "strictly increase"),
    "bad delay": (MAILOPS, "delay: 1s", "delay: 1 sec",
                  G, 'mailops_rate_limits.destinations["gmail.com"].delay', "not a duration"),
    "wrong type": (MAILOPS, "messages_per_hour: 500", "messages_per_hour: many",
                   G, "mailops_rate_limits.per_user.messages_per_hour", "expected a whole number"),
    "global in group scope": (HOSTS, "        ansible_python_interpreter:",
                              "        mailops_apt_proxy: http://x.test\n        ansible_python_interpreter:",
                              H, "all.children.mailhosts.vars.mailops_apt_proxy", "global setting"),
    "yaml syntax error": (MAILOPS, "mailops_domains:", "mailops_domains: [\n",
                          G, "(file)", "YAML syntax error"),
    "vault tag": (MAILOPS, "api_token: {file: /var/lib/mailops/lab/cloudflare/token}",
                  "api_token: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162636465",
                  G, "mailops_dns_providers.lab-cloudflare.api_token",
                  "encrypted/unknown tag !vault not supported here; use {env: VAR} or {file: PATH}"),
    "duplicate key": (MAILOPS, "mailops_apt_proxy: http://198.51.100.1:3142",
                      "mailops_apt_proxy: http://198.51.100.1:3142\nmailops_apt_proxy: http://198.51.100.1:3142",
                      G, "mailops_apt_proxy", "appears twice"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line(inv, case):
    file, old, new, want_file, want_field, want_text = CASES[case]
    edit(inv, file, old, new)
    problems = check_inventory(inv)
    assert len(problems) == 1, "\n".join(map(str, problems))
    (p,) = problems
    assert p.file == want_file
    assert p.field == want_field
    assert want_text in p.message
    assert p.line is not None and p.line >= 1
    assert str(p) == f"{p.file}:{p.line}: {p.field}: {p.message}"
    assert "SUPERSECRET" not in str(p)
    assert load_inventory(inv)[0] is None


def test_empty_file(inv):
    (inv / MAILOPS).write_text("# nothing yet\n")
    problems = check_inventory(inv)
    assert [str(p) for p in problems] == [f"{G}: (file): file is empty; add the settings or delete the file"]


def test_non_mapping_top_level(inv):
    (inv / HOSTS).write_text("- mta1.shop.test\n- mta2.shop.test\n")
    (p,) = check_inventory(inv)
    assert (p.file, p.field, p.line) == (H, "(file)", 1)
    assert "top level must be a mapping" in p.message and "found a list" in p.message


def test_missing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (p,) = check_inventory("nowhere")
    assert str(p).startswith("nowhere: (directory): inventory directory does not exist")


def test_directory_without_inventory_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (p,) = check_inventory("empty")
    assert p.file == "empty" and "no inventory file" in p.message


def test_not_utf8(inv):
    (inv / MAILOPS).write_bytes(b"mailops_domains: \xff\xfe\n")
    (p,) = check_inventory(inv)
    assert p.file == G and "UTF-8" in p.message


def test_vars_file_for_unknown_group(inv):
    (inv / "group_vars" / "mailhost.yml").write_text("ansible_user: root\n")
    (p,) = check_inventory(inv)
    assert p.file == "inv/group_vars/mailhost.yml" and "did you mean mailhosts?" in p.message


def test_host_vars_override_group_vars(inv):
    """Ansible precedence: host_vars/ beats hosts.yml beats group_vars/."""
    (inv / "group_vars" / "mailhosts.yml").write_text("ansible_port: 2222\nansible_user: deploy\n")
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "mta1.shop.test.yml").write_text("ansible_port: 2200\nmailops_fqdn: MX.Shop.Test.\n")
    inventory, problems = load_inventory(inv)
    assert problems == []
    host = inventory.hosts[0]
    assert (host.ssh_port, host.ssh_user, host.fqdn) == (2200, "root", "mx.shop.test")


def test_error_in_host_vars_file_names_that_file(inv):
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "mta1.shop.test.yml").write_text("ansible_port: 70000\n")
    (p,) = check_inventory(inv)
    assert str(p) == "inv/host_vars/mta1.shop.test.yml:1: ansible_port: 70000 is out of range; use a value <= 65535"


def test_several_problems_all_reported(inv):
    edit(inv, MAILOPS, "policy: reject", "policy: rejectt")
    edit(inv, MAILOPS, "delay: 1s", "delay: soon")
    edit(inv, HOSTS, "mailops_ipv4: 198.51.100.11", "mailops_ipv4: nope")
    assert len(check_inventory(inv)) == 3


def test_all_vars_in_hosts_yml_are_globals(tmp_path, monkeypatch):
    """Globals may also live in all.vars of hosts.yml (field path says so)."""
    monkeypatch.chdir(tmp_path)
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / HOSTS).write_text(
        "all:\n  vars:\n    mailops_dkim_keystore: /srv/dkim\n"
        "    mailops_dns_providers: {cf: {type: cloudflare, api_token: {env: T}}}\n"
        "    mailops_domains: {a.test: {dns_provider: cf, dmarc: {pct: 101}}}\n"
        "  children:\n    mailhosts:\n      hosts:\n        m.a.test: {ansible_host: m.a.test, mailops_ipv4: 192.0.2.1}\n")
    (p,) = check_inventory(inv)
    assert str(p) == 'inv/hosts.yml:5: all.vars.mailops_domains["a.test"].dmarc.pct: 101 is out of range; use a value <= 100'


def test_render_path():
    assert render_path(("mailops_domains", "shop.test", "dmarc", "policy")) == 'mailops_domains["shop.test"].dmarc.policy'
    assert render_path(("users", 0, "login")) == "users[0].login"
    assert render_path(("a\nb",)) == '["a\\nb"]'
    assert str(Problem("f.yml", "x", "line1\nline2")) == "f.yml: x: line1 line2"


# --- secrets -------------------------------------------------------------------

def test_resolve_env(monkeypatch):
    monkeypatch.setenv("MO_TEST_SECRET", "s3cr3t")
    assert resolve(EnvSecret(env="MO_TEST_SECRET"), "/") == "s3cr3t"
    assert resolve({"env": "MO_TEST_SECRET"}, "/") == "s3cr3t"
    monkeypatch.setenv("MO_TEST_SECRET", "")
    with pytest.raises(MailopsError, match=r"\{env: MO_TEST_SECRET\}.*empty"):
        resolve(EnvSecret(env="MO_TEST_SECRET"), "/")
    monkeypatch.delenv("MO_TEST_SECRET")
    with pytest.raises(MailopsError, match="not set"):
        resolve(EnvSecret(env="MO_TEST_SECRET"), "/")


def test_resolve_file(tmp_path, monkeypatch):
    (tmp_path / "tok").write_text("abc123\n")
    assert resolve(FileSecret(file="tok"), tmp_path) == "abc123"  # relative to the inventory
    monkeypatch.setenv("MO_DIR", str(tmp_path))
    assert resolve(FileSecret(file="$MO_DIR/tok"), "/") == "abc123"
    with pytest.raises(MailopsError, match="does not exist") as err:
        resolve(FileSecret(file="missing"), tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(MailopsError, match="is empty"):
        resolve(FileSecret(file="empty"), tmp_path)


def test_resolve_refuses_inline_without_echo():
    with pytest.raises(MailopsError) as err:
        resolve("hunter2-SECRET", "/")
    assert "hunter2" not in str(err.value) and "inline" in str(err.value)


# --- CLI -------------------------------------------------------------------------

@pytest.mark.lab  # `inventory check` resolves the lab's secret files (made by `lab up`)
def test_cli_ok_on_lab(lab, monkeypatch):
    from mailops.cli.inventory import inventory
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(inventory, ["check", "lab"])
    assert result.exit_code == 0, result.output
    assert result.output == "inventories/lab: OK (1 host, 2 domains)\n"
    result = CliRunner().invoke(inventory, ["check"])  # the default: MAILOPS_INVENTORY, the lab (tests/conftest.py)
    assert result.exit_code == 0


def test_cli_bad_inventory(inv):
    from mailops.cli.inventory import inventory
    edit(inv, MAILOPS, "policy: reject", "policy: rejectt")
    edit(inv, MAILOPS, "api_token: {file: /var/lib/mailops/lab/cloudflare/token}", "api_token: SUPERSECRET")
    result = CliRunner().invoke(inventory, ["check", str(inv)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(G + ":") and SHAPE.match(line) for line in lines)
    assert "Traceback" not in result.output and "SUPERSECRET" not in result.output


@pytest.mark.parametrize("content", [b"all: [\n", b"- 1\n", b"\xff\xfe", b"", b"all: !vault |\n  $ANSIBLE\n"])
def test_cli_never_tracebacks(inv, content):
    from mailops.cli.inventory import inventory
    (inv / HOSTS).write_bytes(content)
    result = CliRunner().invoke(inventory, ["check", str(inv)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.strip() and all(SHAPE.match(line) for line in result.output.splitlines())


def test_cli_missing_inventory(tmp_path, monkeypatch):
    from mailops.cli.inventory import inventory
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(inventory, ["check", "./nope"])
    assert result.exit_code == 1
    assert result.output.startswith("nope: (directory):")


def test_library_does_not_import_click():
    code = ("import sys, mailops.inventory, mailops.inventory.secrets; "
            "sys.exit(1 if 'click' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0

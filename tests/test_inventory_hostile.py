"""The inventory loader reads only regular files of bounded size (issue 14, item 2).

A FIFO where a vars file belongs used to hang `inventory check`, a link to
/dev/zero grew the process to gigabytes, and so did a secret `{file: /dev/zero}`
in `dns plan`. Each case runs the CLI in a subprocess with a timeout and an
address-space cap, so a regression fails here instead of hanging the suite or
eating the machine's memory."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

import pytest

from tests.helpers import SETTINGS, copy_inventory, mailops

HOST = "mta1.shop.test"
TIMEOUT = 20
MEMORY_CAP = 1 << 30  # the CLI needs far less; reading /dev/zero without limit needs more
# file: field: message (what is wrong; how to fix), exactly one line
PROBLEM = re.compile(r"^\S+: \(file\): .+; .+$")


@pytest.fixture(autouse=True)
def bounded_memory():
    """Children inherit the address-space limit of the test process; the limit is put back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP if hard == resource.RLIM_INFINITY else min(MEMORY_CAP, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def inv(tmp_path) -> Path:
    return copy_inventory(tmp_path / "inv")


def check(inv: Path):
    proc = mailops("inventory", "check", str(inv), check=False, timeout=TIMEOUT)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines


@pytest.mark.parametrize("kind", ["group_vars", "host_vars"])
def test_fifo_vars_file_is_refused_not_waited_for(inv, kind):
    name = "mailhosts" if kind == "group_vars" else HOST
    (inv / kind).mkdir(exist_ok=True)
    fifo = inv / kind / f"{name}.yml"
    os.mkfifo(fifo)
    lines = check(inv)
    assert len(lines) == 1 and PROBLEM.match(lines[0]), lines
    assert lines[0].startswith(f"{fifo}: (file): ") and "not a regular file (a FIFO)" in lines[0]


def test_fifo_inventory_file_is_refused(inv):
    hosts = inv / "hosts.yml"
    hosts.unlink()
    os.mkfifo(hosts)
    lines = check(inv)
    assert lines == [f"{hosts}: (file): not a regular file (a FIFO); mailops and Ansible read only regular files: "
                     "replace it with a YAML file or remove it"]


def test_fifo_inside_group_vars_directory_is_refused(inv):
    fifo = inv / "group_vars" / "all" / "zz.yml"
    os.mkfifo(fifo)
    lines = check(inv)
    assert len(lines) == 1 and lines[0].startswith(f"{fifo}: (file): ") and "FIFO" in lines[0], lines


def test_link_to_dev_zero_is_refused_without_reading_it(inv):
    link = inv / "group_vars" / "mailhosts.yml"
    link.symlink_to("/dev/zero")
    lines = check(inv)
    assert len(lines) == 1 and PROBLEM.match(lines[0]), lines
    assert lines[0].startswith(f"{link}: (file): ") and "not a regular file (a character device)" in lines[0]


def test_oversized_vars_file_is_refused(inv):
    big = inv / "group_vars" / "mailhosts.yml"
    big.write_text("# padding\n" * 120_000)  # 1.2 MB of comments: valid YAML, but no inventory is that large
    lines = check(inv)
    assert len(lines) == 1 and PROBLEM.match(lines[0]), lines
    assert lines[0].startswith(f"{big}: (file): ") and "larger than 1 MiB" in lines[0]


@pytest.mark.lab  # the copy's other secrets are the lab's own files (made by `lab up`)
def test_file_just_under_the_cap_is_read(lab, inv):
    (inv / "group_vars" / "mailhosts.yml").write_text("# padding\n" * 100_000 + "mailops_ipv6_ptr: true\n")
    proc = mailops("inventory", "check", str(inv), check=False, timeout=TIMEOUT)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def _hostile_secrets(inv: Path, target: Path | str) -> None:
    """Every DNS secret of the copied lab inventory points at ``target``, so whichever provider
    `dns plan` builds first reads it."""
    conf = inv / SETTINGS
    text = conf.read_text()
    for old in ("{file: /var/lib/mailops/lab/dns/tsig.secret}", "{file: /var/lib/mailops/lab/cloudflare/token}"):
        assert old in text
        text = text.replace(old, f"{{file: {target}}}")
    conf.write_text(text)


@pytest.mark.parametrize("target, words", [
    ("/dev/zero", "is not a regular file (a character device)"),
    ("fifo", "is not a regular file (a FIFO)"),
    ("big", "is larger than 64 KiB"),
])
@pytest.mark.lab  # the copy's other secrets are the lab's own files (made by `lab up`)
def test_secret_file_must_be_a_small_regular_file(lab, inv, tmp_path, target, words):
    if target == "fifo":
        target = tmp_path / "token.fifo"
        os.mkfifo(target)
    elif target == "big":
        target = tmp_path / "token.big"
        target.write_text("x" * 70_000)
    _hostile_secrets(inv, target)
    proc = mailops("dns", "plan", "-i", str(inv), check=False, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # one line per secret that points there, each at its field (both TSIG secrets and the token)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in proc.stderr, proc.stderr
    fields = ("lab-rfc2136.tsig_secret", "lab-cloudflare.api_token", "lab-reverse.tsig_secret")
    for line, field in zip(err, fields):
        assert f"{field}: secret {{file: {target}}}: {target} {words}" in line, line
    assert "x" * 100 not in proc.stdout + proc.stderr  # the content is never echoed


# --- issue 14, item 12: messages in the inventory's terms, not pydantic's ----------------------

def _problems_after(inv: Path, file: str, old: str, new: str) -> list[str]:
    from mailops.inventory import check_inventory

    path = inv / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return [str(p) for p in check_inventory(inv)]


@pytest.mark.parametrize("key, expected", [
    ("1", 'mailops_domains["shop.test"][1]: key 1 is a number, not text; write a field name here'),
    ("~", 'mailops_domains["shop.test"][null]: a key is empty (null); name the entry or remove it'),
])
def test_non_text_keys_are_named_where_they_are(inv, key, expected):
    old = "    dns_provider: lab-rfc2136\n"
    problems = _problems_after(inv, SETTINGS, old, f"{old}    {key}: x\n")
    line = (inv / SETTINGS).read_text().splitlines().index(f"    {key}: x") + 1  # the key's own line
    assert problems == [f"{inv / SETTINGS}:{line}: {expected}"]


def test_null_domain_key_is_not_rendered_as_none(inv):
    problems = _problems_after(inv, SETTINGS, "mailops_domains:\n", "mailops_domains:\n  ~:\n    dns_provider: lab-rfc2136\n")
    assert len(problems) == 1 and "mailops_domains[null]: key null: expected a fully qualified domain name" \
        in problems[0] and "None" not in problems[0], problems


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_number_says_so(inv, value):
    problems = _problems_after(inv, "hosts.yml", "ansible_user: root", f"ansible_user: root\n          ansible_port: {value}")
    assert len(problems) == 1 and problems[0].endswith(
        "ansible_port: " + {".nan": "nan", ".inf": "inf", "-.inf": "-inf"}[value]
        + " is not a finite number (.inf and .nan are not allowed); write an ordinary number"), problems


# --- issue 14, item 11 (URLs): check refuses what dns plan would refuse ------------------------

@pytest.mark.parametrize("url", ["http://127.", "http://256.1.1.1:8787/client/v4", "http://-x-.test/client/v4",
                                 "http://exa_mple.test/v4"])
def test_api_url_needs_a_valid_host(inv, url):
    problems = _problems_after(inv, SETTINGS, "api_base_url: http://198.51.100.1:8787/client/v4", f"api_base_url: {url}")
    assert len(problems) == 1 and "api_base_url: " in problems[0] and "has no valid host" in problems[0], problems


@pytest.mark.lab  # a clean check resolves the lab's secret files (made by `lab up`)
@pytest.mark.parametrize("url", ["http://localhost:8787/v4", "http://[2001:db8::1]:8787/v4", "https://api.cf.test/v4"])
def test_api_url_with_a_valid_host_passes(lab, inv, url):
    assert _problems_after(inv, SETTINGS, "api_base_url: http://198.51.100.1:8787/client/v4", f"api_base_url: {url}") == []


@pytest.mark.lab  # the copy's other secrets are the lab's own files (made by `lab up`)
@pytest.mark.parametrize("ref, words", [
    ("{env: MAILOPS_SURELY_UNSET}", "environment variable MAILOPS_SURELY_UNSET is not set"),
    ("{file: $MAILOPS_UNSET_DIR/token}", "$MAILOPS_UNSET_DIR/token does not exist"),
    ("{file: empty.token}", "is empty; write the secret into it"),
], ids=["unset variable", "unset directory variable", "empty file"])
def test_check_resolves_every_secret_as_dns_plan_would(lab, inv, ref, words):
    """`inventory check` said OK for a secret that `dns plan` then refused; both name file and field."""
    (inv / "empty.token").write_text("")
    (inv / "empty.token").chmod(0o600)
    old = "api_token: {file: /var/lib/mailops/lab/cloudflare/token}"
    [problem] = _problems_after(inv, SETTINGS, old, f"api_token: {ref}")
    assert 'mailops_dns_providers.lab-cloudflare.api_token: secret ' in problem and words in problem, problem
    assert problem.startswith(f"{inv.name}/{SETTINGS}:") or f"/{SETTINGS}:" in problem, problem
    plan = mailops("dns", "plan", "-i", str(inv), check=False, timeout=TIMEOUT)
    assert plan.returncode != 0 and problem.split(": ", 1)[1] in plan.stderr + plan.stdout, plan.stderr
    assert "Traceback" not in plan.stderr

"""The return-path settings of the inventory (issue 12): mailops_return_path and
mailops_domains.<d>.return_path, each bad value one line naming file and field, the key
secret resolved and its content checked by `inventory check` without showing it, and the
report addresses in a mailops domain refused while nothing would accept them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailops.inventory import check_inventory, load, load_inventory
from tests.helpers import SETTINGS as MAILOPS, copy_inventory, mailops

G = "inv/group_vars/all/mailops.yml"
KEY = "a3" * 32


def _on(key_file: str = "returnpath.key", **extra):
    def edit(data: dict) -> None:
        data["mailops_return_path"] = {"key": {"file": key_file}, "operator_email": "ops@inbox.test", **extra}
    return edit


@pytest.fixture
def inv(lab, tmp_path, monkeypatch):
    """The lab inventory with the return path on and a good key file at inv/returnpath.key (its
    other secrets are the lab's own files, made by `lab up`: the tests that use it are marked lab)."""
    monkeypatch.chdir(tmp_path)
    path = copy_inventory(tmp_path / "inv", settings=_on())
    key = path / "returnpath.key"
    key.write_text(f"{KEY}\n{'b4' * 16}\n")
    key.chmod(0o600)
    return path


def _edit(inv: Path, edit) -> None:
    from tests.helpers import edit_yaml
    edit_yaml(inv / MAILOPS, edit)


@pytest.mark.lab  # inv: the lab inventory, whose other secrets `lab up` makes
def test_on_loads_with_defaults_and_domains(inv):
    loaded = load(inv)
    rp = loaded.return_path
    assert rp is not None and rp.subdomain == "bounces" and rp.operator_email == "ops@inbox.test"
    assert (rp.soft_bounce.threshold, rp.soft_bounce.window, rp.soft_bounce.expiry) == (3, 7 * 86400, 30 * 86400)
    assert loaded.return_path_domains() == {"bounces.news.test": ["news.test"], "bounces.shop.test": ["shop.test"]}
    assert loaded.report_addresses() == [("shop.test", "dmarc.rua", "dmarc@shop.test"),
                                         ("shop.test", "tls_rpt.rua", "tlsrpt@shop.test")]
    assert check_inventory(inv) == []


@pytest.mark.lab  # inv: the lab inventory, whose other secrets `lab up` makes
def test_shared_override_and_soft_bounce(inv):
    def edit(data):
        data["mailops_return_path"]["subdomain"] = "rp"
        data["mailops_return_path"]["soft_bounce"] = {"threshold": 5, "window": "2d", "expiry": "90d"}
        data["mailops_domains"]["news.test"]["dns_provider"] = "lab-rfc2136"
        data["mailops_dns_providers"]["lab-rfc2136"]["zones"] = ["shop.test", "news.test"]
        data["mailops_domains"]["news.test"]["return_path"] = "rp.shop.test"
    _edit(inv, edit)
    loaded = load(inv)
    assert loaded.return_path_domains() == {"rp.shop.test": ["news.test", "shop.test"]}
    assert loaded.return_path.soft_bounce.expiry == 90 * 86400


def test_off_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = copy_inventory(tmp_path / "inv", settings=lambda d: (
        d.pop("mailops_return_path"), [d["mailops_domains"]["shop.test"].pop(k) for k in ("dmarc", "tls_rpt")]))
    loaded = load(path)
    assert loaded.return_path is None and loaded.return_path_domain("shop.test") is None
    assert loaded.return_path_domains() == {}


def test_report_address_in_mailops_domain_refused_without_return_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = copy_inventory(tmp_path / "inv", settings=lambda d: d.pop("mailops_return_path") and d[
        "mailops_domains"]["shop.test"].update(
        {"dmarc": {"rua": ["mailto:reports@elsewhere.test", "mailto:dmarc@shop.test!10m"],
                   "ruf": ["mailto:ruf@news.test"]},
         "tls_rpt": {"rua": ["https://tlsrpt.elsewhere.test/r"]}}))
    problems = [str(p) for p in check_inventory(path)]
    assert len(problems) == 2, problems
    want = ("is in a mailops domain, but nothing would accept it; set mailops_return_path or use an address "
            "outside the mailops domains")
    assert problems[0].startswith(f"{G}:") and \
        problems[0].endswith(f'mailops_domains["shop.test"].dmarc.rua[1]: dmarc@shop.test {want}')
    assert problems[1].endswith(f'mailops_domains["shop.test"].dmarc.ruf[0]: ruf@news.test {want}')


CASES = {
    "no key": (lambda d: d["mailops_return_path"].pop("key"), "mailops_return_path.key", "required"),
    "inline key": (lambda d: d["mailops_return_path"].update(key="a3" * 32), "mailops_return_path.key",
                   "{env: NAME} or {file: PATH}"),
    "no operator": (lambda d: d["mailops_return_path"].pop("operator_email"), "mailops_return_path.operator_email",
                    "required"),
    "bad operator": (lambda d: d["mailops_return_path"].update(operator_email="ops"),
                     "mailops_return_path.operator_email", "is not an email address"),
    "bad subdomain": (lambda d: d["mailops_return_path"].update(subdomain="bad_label"),
                      "mailops_return_path.subdomain", "letters, digits"),
    "unknown key": (lambda d: d["mailops_return_path"].update(subdomian="x"), "mailops_return_path.subdomian",
                    "subdomain"),
    "bad window": (lambda d: d["mailops_return_path"].update(soft_bounce={"window": "a week"}),
                   "mailops_return_path.soft_bounce.window", "7d"),
    "zero threshold": (lambda d: d["mailops_return_path"].update(soft_bounce={"threshold": 0}),
                       "mailops_return_path.soft_bounce.threshold", "1"),
    "sending domain": (lambda d: d["mailops_domains"]["shop.test"].update(return_path="news.test"),
                       'mailops_domains["shop.test"].return_path', "is a sending domain itself"),
    "outside zones": (lambda d: d["mailops_domains"]["shop.test"].update(return_path="bounces.other.test"),
                      'mailops_domains["shop.test"].return_path', "outside the zones of provider 'lab-rfc2136'"),
    "shared across providers": (lambda d: d["mailops_domains"]["news.test"].update(return_path="bounces.shop.test"),
                                'mailops_domains["news.test"].return_path', "shared with shop.test"),
    "bad return_path": (lambda d: d["mailops_domains"]["shop.test"].update(return_path="not a domain"),
                        'mailops_domains["shop.test"].return_path', "domain"),
}


@pytest.mark.lab  # inv: the lab inventory, whose other secrets `lab up` makes
@pytest.mark.parametrize("case", list(CASES))
def test_bad_settings_one_line(inv, case):
    edit, field, text = CASES[case]
    _edit(inv, edit)
    problems = check_inventory(inv)
    assert len(problems) == 1, "\n".join(map(str, problems))
    (p,) = problems
    assert p.file == G and p.field == field and text in p.message, str(p)
    assert KEY not in str(p) and "a3a3" not in str(p)


def test_return_path_without_global_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = copy_inventory(tmp_path / "inv", settings=lambda d: (
        d.pop("mailops_return_path"), d["mailops_domains"]["news.test"].update(return_path="rp.news.test"),
        [d["mailops_domains"]["shop.test"].pop(k) for k in ("dmarc", "tls_rpt")]))
    (p,) = check_inventory(path)
    assert p.field == 'mailops_domains["news.test"].return_path' and "mailops_return_path is not set" in p.message


KEY_CASES = {
    "missing": (None, 0o600, "does not exist; create it with one hex key per line"),
    "not hex": (f"{KEY}\nnot-hex-at-all\n", 0o600, "key 2 in "),
    "short": ("00112233445566778899\n", 0o600, "key 1 in "),
    "empty": ("# only a comment\n\n", 0o600, "no key in"),
    "world readable": (f"{KEY}\n", 0o644, "readable by others (mode 644); run chmod 600"),
    "binary": (b"\xff\xfe\x00", 0o600, "cannot read"),
}


@pytest.mark.lab  # inv: the lab inventory, whose other secrets `lab up` makes
@pytest.mark.parametrize("case", list(KEY_CASES))
def test_key_content_checked_never_shown(inv, case):
    content, mode, text = KEY_CASES[case]
    key = inv / "returnpath.key"
    if content is None:
        key.unlink()
    else:
        key.write_bytes(content if isinstance(content, bytes) else content.encode())
        key.chmod(mode)
    assert load_inventory(inv)[1] == []                 # commands that do not need the key still load
    (p,) = check_inventory(inv)
    assert p.file == G and p.field == "mailops_return_path.key" and text in p.message, str(p)
    assert "{file: returnpath.key}" in p.message
    assert KEY not in str(p) and "not-hex" not in str(p) and "00112233" not in str(p)


@pytest.mark.lab  # inv: the lab inventory, whose other secrets `lab up` makes
def test_env_key(inv, monkeypatch):
    _edit(inv, lambda d: d["mailops_return_path"].update(key={"env": "MAILOPS_TEST_RP_KEY"}))
    monkeypatch.delenv("MAILOPS_TEST_RP_KEY", raising=False)
    (p,) = check_inventory(inv)
    assert "environment variable MAILOPS_TEST_RP_KEY is not set" in p.message
    monkeypatch.setenv("MAILOPS_TEST_RP_KEY", "zz" * 20)
    (p,) = check_inventory(inv)
    assert "key 1 in environment variable MAILOPS_TEST_RP_KEY is not hex" in p.message and "zzzz" not in p.message
    monkeypatch.setenv("MAILOPS_TEST_RP_KEY", KEY)
    assert check_inventory(inv) == []


@pytest.mark.lab  # inv: the lab inventory, whose other secrets `lab up` makes
def test_cli_check_resolves_the_key(inv):
    proc = mailops("inventory", "check", str(inv), check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (inv / "returnpath.key").write_text("c0ffee\n")
    proc = mailops("inventory", "check", str(inv), check=False)
    assert proc.returncode == 1
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "mailops_return_path.key" in lines[0] and "has 3 bytes" in lines[0]
    assert "c0ffee" not in lines[0] and "Traceback" not in proc.stderr

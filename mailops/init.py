"""`mailops init DIR`: a starter inventory, the commented example with the operator's domain and host.

The source is the shipped example inventory (inventories/example in a checkout, mailops/example_inventory
in a wheel, see setup.py), edited as text so that every comment stays. Each edit names the text it
replaces and fails loudly when the example no longer has it, so the example and this stay in step.
The result is checked (schema and cross references) before it is put in place; its secrets are
references the operator still has to provide (:func:`missing_secrets` says which).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mailops.errors import MailopsError
from mailops.inventory import Problem, check_inventory, load_inventory, model as m
from mailops.inventory.paths import REPO_ROOT, display_path

EXAMPLE_HOST = "mta1.example.com"
EXAMPLE_DOMAIN = "example.com"
EXAMPLE_IPV4 = "203.0.113.10"


def example_dir() -> Path:
    """The example inventory: inside the installed package, else in the checkout."""
    for path in (Path(__file__).resolve().parent / "example_inventory", REPO_ROOT / "inventories" / "example"):
        if (path / "hosts.yml").is_file():
            return path
    raise MailopsError("the example inventory is missing from this mailops installation; reinstall mailops")


@dataclass
class InitResult:
    path: Path
    host: str
    domain: str
    # what `mailops inventory check` still refuses: the secrets to export or create, one line each
    secrets: list[Problem] = field(default_factory=list)


def _replace(text: str, old: str, new: str, where: str) -> str:
    if old not in text:
        raise MailopsError(f"{where}: the example inventory changed ({old.strip()[:60]!r} is gone); "
                           "update mailops/init.py")
    return text.replace(old, new)


def _cut(text: str, start: str, end: str, where: str, keep: str = "") -> str:
    """Remove from ``start`` up to (not including) ``end``, putting ``keep`` there."""
    i = text.find(start)
    j = text.find(end, i + 1) if i >= 0 else -1
    if i < 0 or j < 0:
        raise MailopsError(f"{where}: the example inventory changed ({start.strip()[:60]!r} is gone); "
                           "update mailops/init.py")
    return text[:i] + keep + text[j:]


def _hosts_yml(text: str, host: str, ipv4: str | None, ipv6: str | None) -> str:
    where = "hosts.yml"
    header_end = text.index("\nall:")
    text = ("# Written by `mailops init` from mailops' example inventory: one mail host, every field\n"
            "# explained. Edit it, then run `mailops inventory check <this directory>`.\n"
            + "\n".join(text[:header_end].splitlines()[4:]) + "\n" + text[header_end:])
    # one host: the example's second host goes
    text = _cut(text + "\x00", "        mta2.example.com:", "\x00", where)[:-1]
    text = _replace(text, EXAMPLE_HOST, host, where)
    ip_note = "" if ipv4 else "   # REPLACE: the server's public IPv4 address"
    text = _replace(text, f"ansible_host: {EXAMPLE_IPV4}", f"ansible_host: {ipv4 or EXAMPLE_IPV4}{ip_note}", where)
    text = _replace(text, f"mailops_ipv4: {EXAMPLE_IPV4}", f"mailops_ipv4: {ipv4 or EXAMPLE_IPV4}{ip_note}", where)
    v6 = '          mailops_ipv6: "2001:db8:10::10"\n'
    text = _replace(text, v6, f'          mailops_ipv6: "{ipv6}"\n' if ipv6 else
                    '          # mailops_ipv6: "2001:db8:10::10"\n', where)
    return text


def _settings_yml(text: str, domain: str, host: str) -> str:
    where = "group_vars/all/mailops.yml"
    text = _replace(text, "hosts: [mta1.example.com, mta2.example.com]", f"hosts: [{host}]", where)
    # one sending domain: the example's second domain, its parked domain and its bulk user go
    text = _cut(text, "  example.org:\n", "\n# mailops_parked_domains", where)
    text = _cut(text, "mailops_parked_domains:\n", "\n# mailops_dns_providers", where,
                keep="# mailops_parked_domains:\n#   example.net:\n#     dns_provider: cloudflare\n")
    text = _cut(text, "  - login: newsletter@example.org\n", "\n# mailops_rate_limits", where)
    text = _replace(text, "ops@example.net", f"postmaster@{domain}", where)
    return re.sub(r"(?<![\w-])example\.com(?![\w-])", domain, text)


def _valid_inputs(domain: str, host: str | None, ipv4: str | None, ipv6: str | None) -> tuple[str, str]:
    try:
        domain = m.dns_name(domain)
    except ValueError as exc:
        raise MailopsError(f"--domain {domain!r}: {exc}") from None
    host_name = host or f"mta1.{domain}"
    try:
        host_name = m.dns_name(host_name)
    except ValueError as exc:
        raise MailopsError(f"--host {host!r}: {exc}") from None
    if "." not in host_name:
        raise MailopsError(f"--host {host!r}: not a fully qualified name; give e.g. mail.{domain}")
    for opt, value, version in (("--ipv4", ipv4, 4), ("--ipv6", ipv6, 6)):
        if value is None:
            continue
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            addr = None
        if addr is None or addr.version != version:
            raise MailopsError(f"{opt} {value!r}: not an IPv{version} address")
    return domain, host_name


def init(dest: Path, *, domain: str = EXAMPLE_DOMAIN, host: str | None = None, ipv4: str | None = None,
         ipv6: str | None = None) -> InitResult:
    """Write a starter inventory at ``dest`` (which must not exist): the example, narrowed to one host
    and one sending domain, with ``domain``, ``host`` (default mta1.<domain>) and the addresses filled in."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise MailopsError(f"{display_path(dest)}: already exists; mailops init never overwrites, "
                           "choose a new directory")
    domain, host = _valid_inputs(domain, host, ipv4, ipv6)
    src = example_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # written next to dest and renamed into place once it checks clean: no half inventory is left behind
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(src, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
        hosts, settings = work / "hosts.yml", work / "group_vars" / "all" / "mailops.yml"
        hosts.write_text(_hosts_yml(hosts.read_text(), host, ipv4, ipv6))
        settings.write_text(_settings_yml(settings.read_text(), domain, host))
        problems = load_inventory(work)[1]  # the schema and cross references; secrets come later
        if problems:
            first = str(problems[0]).replace(display_path(work), display_path(dest))
            raise MailopsError(f"the starter inventory does not check clean ({first}); "
                               "check --domain, --host and the addresses")
        os.chmod(work, 0o755)
        work.rename(dest)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return InitResult(dest, host, domain, missing_secrets(dest))


def missing_secrets(path: Path) -> list[Problem]:
    """The problems `mailops inventory check` still reports: on a fresh starter only its secret
    references (an unset variable to export, a file to create)."""
    return check_inventory(path)

"""Checks of role "base": host name, /etc/mailname, apt proxy, time sync,
unattended security upgrades and the hardened sshd configuration.

Run with: pytest --pyargs mailops.checks --hosts=ansible://HOST --ansible-inventory=INV
Expected values come from the inventory (the role's variables, else the mailops
ones), with the role defaults as fallbacks.
"""

from __future__ import annotations

import re

import pytest

from mailops.checks.conftest import host_variables

PROXY_FILE = "/etc/apt/apt.conf.d/01mailops-proxy"


_vars = host_variables  # cached per host: each read runs ansible-inventory


def _plain(value):
    """An inventory value, or None when it is unset or still a Jinja template."""
    if value is None or (isinstance(value, str) and "{{" in value):
        return None
    return value


def _fqdn(host) -> str:
    v = _vars(host)
    fqdn = _plain(v.get("base_fqdn")) or _plain(v.get("mailops_fqdn")) or v.get("inventory_hostname")
    if not fqdn:
        pytest.skip("no inventory FQDN known (use the ansible:// backend)")
    return fqdn


def _apt_config(host, name: str) -> list[str]:
    """Values of an apt configuration item (a list item's values in order)."""
    out = host.check_output(f"apt-config dump {name}")
    return re.findall(r'^\S+ "(.*)";$', out, re.MULTILINE)


def test_hostname_is_the_inventory_fqdn(host):
    fqdn = _fqdn(host)
    short = fqdn.split(".")[0]
    assert host.check_output("hostname") == short, f"the host name should be {short!r}"
    assert host.check_output("hostname -f") == fqdn, (
        f"`hostname -f` should print {fqdn!r}: /etc/hosts must map the host's address to it")


def test_mailname_is_the_fqdn(host):
    fqdn = _fqdn(host)
    mailname = host.file("/etc/mailname")
    assert mailname.exists, "/etc/mailname is missing"
    assert mailname.content_string.strip() == fqdn, f"/etc/mailname should contain {fqdn!r}"


def test_apt_proxy_file_iff_configured(host):
    v = _vars(host)
    raw = v.get("base_apt_proxy", v.get("mailops_apt_proxy"))
    proxy_file = host.file(PROXY_FILE)
    if not raw:
        assert not proxy_file.exists, f"no apt proxy is configured, but {PROXY_FILE} exists"
        return
    assert proxy_file.exists, f"the apt proxy {raw} is configured but {PROXY_FILE} is missing"
    url = _plain(raw)
    if url:
        assert _apt_config(host, "Acquire::http::Proxy") == [url], (
            f"apt's Acquire::http::Proxy should be {url}")


def test_time_sync(host):
    svc = host.service("systemd-timesyncd")
    assert svc.is_enabled, "systemd-timesyncd is not enabled"
    in_container = host.run("systemd-detect-virt --container").rc == 0
    if in_container:
        # timesyncd's ConditionVirtualization=!container skips it in a container:
        # the host's clock is used. Enabled and "condition not met" is correct.
        props = host.check_output(
            "systemctl show systemd-timesyncd.service -p ActiveState -p ConditionResult")
        assert "ActiveState=active" in props or "ConditionResult=no" in props, (
            f"systemd-timesyncd is neither active nor skipped by its condition: {props}")
    else:
        assert svc.is_running, "systemd-timesyncd is not running (the clock is not synchronised)"


def test_unattended_upgrades_security_only(host):
    assert host.package("unattended-upgrades").is_installed, "unattended-upgrades is not installed"
    assert _apt_config(host, "APT::Periodic::Update-Package-Lists") == ["1"], (
        "APT::Periodic::Update-Package-Lists should be \"1\" (20auto-upgrades)")
    assert _apt_config(host, "APT::Periodic::Unattended-Upgrade") == ["1"], (
        "APT::Periodic::Unattended-Upgrade should be \"1\" (20auto-upgrades)")
    origins = [o for o in _apt_config(host, "Unattended-Upgrade::Origins-Pattern") if o]
    assert origins, "unattended-upgrades has no Origins-Pattern: it would upgrade nothing"
    not_security = [o for o in origins if "Debian-Security" not in o and "-security" not in o]
    assert not not_security, f"unattended-upgrades may install from non-security origins: {not_security}"
    assert host.service("apt-daily-upgrade.timer").is_enabled, "apt-daily-upgrade.timer is not enabled"
    assert host.service("unattended-upgrades").is_enabled, "unattended-upgrades.service is not enabled"


def test_no_pending_security_updates(host):
    # the updates apt already knows about (lists refreshed daily by apt-daily.timer)
    out = host.run("apt-get -s -o Debug::NoLocking=1 upgrade")
    assert out.rc == 0, f"apt-get -s upgrade failed: {out.stderr.strip()}"
    pending = sorted({line.split()[1] for line in out.stdout.splitlines()
                      if line.startswith("Inst ") and "-security" in line})
    assert not pending, f"{len(pending)} security update(s) pending: {', '.join(pending[:8])}"


@pytest.mark.parametrize("setting, allowed", [
    ("passwordauthentication", {"no"}),
    ("kbdinteractiveauthentication", {"no"}),
    ("permitrootlogin", {"prohibit-password", "without-password", "no"}),
    ("pubkeyauthentication", {"yes"}),
    ("x11forwarding", {"no"}),
])
def test_sshd_effective_config(host, setting, allowed):
    out = host.check_output("/usr/sbin/sshd -T")
    effective = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert effective.get(setting) in allowed, (
        f"sshd's effective {setting} is {effective.get(setting)!r}, expected one of {sorted(allowed)}")

"""Checks of role "firewall": the nftables input filter and fail2ban.

Run with: pytest --pyargs mailops.checks --hosts=ansible://HOST --ansible-inventory=INV
"""

from __future__ import annotations

import json

import pytest

from mailops.checks.conftest import host_variables

TABLE = "inet mailops_filter"
DEFAULT_TCP_PORTS = [22, 25, 465, 587]


_vars = host_variables  # cached per host: each read runs ansible-inventory


def _mailhosts(host) -> list[str]:
    """Group mailhosts in inventory order (testinfra's ``groups`` variable is sorted)."""
    try:
        inventory = host.backend.ansible_runner.inventory
    except AttributeError:  # not the ansible backend
        return []
    from testinfra.utils.ansible_runner import itergroup

    return list(dict.fromkeys(itergroup(inventory, "mailhosts")))


def serves_mta_sts(variables: dict, mailhosts: list[str]) -> bool:
    """Whether the host serves an MTA-STS policy: the default of firewall_mta_sts_https."""
    me = variables.get("inventory_hostname")
    for settings in (variables.get("mailops_domains") or {}).values():
        settings = settings if isinstance(settings, dict) else {}
        mode = (settings.get("mta_sts") or {}).get("mode") or "none"
        listed = settings.get("hosts") or []
        hosts = [h for h in mailhosts if h in listed] if listed else mailhosts
        if mode != "none" and hosts[:1] == [me]:
            return True
    return False


def expected_tcp_ports(variables: dict, mailhosts: list[str] = ()) -> set[int]:
    """The TCP ports the role opens for these inventory variables."""
    ports = variables.get("firewall_allowed_tcp_ports", DEFAULT_TCP_PORTS)
    if isinstance(ports, str):  # still a template: fall back to the default
        ports = DEFAULT_TCP_PORTS
    acme = variables.get("firewall_acme_http")
    if not isinstance(acme, bool):
        tls = variables.get("mailops_tls") or {}
        acme = isinstance(tls, dict) and tls.get("mode") == "acme"
    https = variables.get("firewall_mta_sts_https")
    if not isinstance(https, bool):
        https = serves_mta_sts(variables, list(mailhosts))
    return {int(p) for p in ports} | ({80} if acme else set()) | ({443} if https else set())


def _ports(right) -> set[int]:
    """Ports named by the right-hand side of an nft JSON match."""
    if isinstance(right, int):
        return {right}
    if isinstance(right, dict) and "set" in right:
        return set().union(*(_ports(item) for item in right["set"]))
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return set(range(int(low), int(high) + 1))
    return set()


def open_tcp_ports(rules: list[dict]) -> set[int]:
    """TCP destination ports that accept rules of a chain open."""
    opened: set[int] = set()
    for rule in rules:
        exprs = rule["expr"]
        if not any("accept" in e for e in exprs):
            continue
        for e in exprs:
            match = e.get("match")
            if not match or match.get("op", "==") not in ("==", "in"):
                continue
            payload = match["left"].get("payload", {}) if isinstance(match["left"], dict) else {}
            if payload.get("protocol") == "tcp" and payload.get("field") == "dport":
                opened |= _ports(match["right"])
    return opened


def _chain(host, name: str) -> tuple[dict, list[dict]]:
    cmd = host.run(f"nft -j list chain {TABLE} {name}")
    assert cmd.rc == 0, f"nftables has no chain {name} in table {TABLE}: {cmd.stderr.strip()}"
    items = json.loads(cmd.stdout)["nftables"]
    chain = next(i["chain"] for i in items if "chain" in i)
    rules = [i["rule"] for i in items if "rule" in i]
    return chain, rules


def test_nftables_enabled_and_active(host):
    svc = host.service("nftables")
    assert svc.is_enabled, "nftables.service is not enabled: the firewall would be gone after a reboot"
    assert svc.is_running, "nftables.service is not active"


def test_input_policy_drop(host):
    chain, rules = _chain(host, "input")
    assert chain.get("hook") == "input", f"chain input of {TABLE} is not hooked to input: {chain}"
    assert chain.get("policy") == "drop", f"the input policy is {chain.get('policy')!r}, expected drop"
    unconditional = [r for r in rules if [list(e) for e in r["expr"]] == [["accept"]]]
    assert not unconditional, "the input chain has an unconditional accept rule: everything is open"


def test_forward_policy_drop(host):
    chain, _ = _chain(host, "forward")
    assert chain.get("policy") == "drop", f"the forward policy is {chain.get('policy')!r}, expected drop"


def test_exactly_the_expected_tcp_ports_are_open(host):
    expected = expected_tcp_ports(_vars(host), _mailhosts(host))
    _, rules = _chain(host, "input")
    opened = open_tcp_ports(rules)
    assert opened == expected, (
        f"open TCP ports are {sorted(opened)}, expected {sorted(expected)} "
        f"(extra: {sorted(opened - expected)}, missing: {sorted(expected - opened)})")


def test_fail2ban_active_with_jails(host):
    svc = host.service("fail2ban")
    assert svc.is_enabled, "fail2ban.service is not enabled"
    assert svc.is_running, "fail2ban.service is not active"
    status = host.check_output("fail2ban-client status")
    jails = set()
    for line in status.splitlines():
        if "Jail list:" in line:
            jails = {j.strip() for j in line.split(":", 1)[1].split(",") if j.strip()}
    missing = {"sshd", "postfix-sasl"} - jails
    assert not missing, f"fail2ban jails missing: {sorted(missing)} (running: {sorted(jails)})"


@pytest.mark.parametrize("jail", ["sshd", "postfix-sasl"])
def test_fail2ban_bans_through_nftables(host, jail):
    actions = host.check_output(f"fail2ban-client get {jail} actions")
    assert "nftables" in actions, f"jail {jail} does not ban through nftables: {actions}"

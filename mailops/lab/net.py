"""The lab network: one bridge on the host with the gateway addresses, and an
nftables table that keeps lab machines inside the lab.

Lab machines get no default route; on top of that the ``inet mailops_lab``
table drops anything forwarded into or out of the bridge and only lets lab
machines reach the gateway's lab services (DNS, apt proxy, emulators).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from mailops.errors import MailopsError
from mailops.lab.config import LabConfig
from mailops.lab.system import run

NFT_TABLE = "mailops_lab"


def _json(cmd: list[str]) -> list[dict]:
    out = run(cmd, "reading the host's network configuration").stdout
    return json.loads(out or "[]")


def bridge_exists(cfg: LabConfig) -> bool:
    return Path(f"/sys/class/net/{cfg.bridge}").exists()


def conflicts(cfg: LabConfig) -> list[str]:
    """Routes or addresses on other interfaces that overlap the lab networks."""
    problems = []
    for family, net in (("-4", cfg.ipv4_network), ("-6", cfg.ipv6_network)):
        lab_net = ipaddress.ip_network(net)
        for route in _json(["ip", "-j", family, "route", "show", "table", "all"]):
            dst = route.get("dst", "")
            if route.get("dev") == cfg.bridge or dst in ("", "default") or route.get("type") in ("local", "broadcast", "multicast", "anycast"):
                continue
            try:
                other = ipaddress.ip_network(dst if "/" in dst else dst + ("/32" if family == "-4" else "/128"), strict=False)
            except ValueError:
                continue
            if other.version == lab_net.version and other.overlaps(lab_net) and not str(other).startswith("fe80"):
                problems.append(f"route {dst} via {route.get('dev', '?')} overlaps lab network {net}")
        for link in _json(["ip", "-j", family, "addr", "show"]):
            if link.get("ifname") == cfg.bridge:
                continue
            for addr in link.get("addr_info", []):
                iface = ipaddress.ip_interface(f"{addr['local']}/{addr['prefixlen']}")
                if iface.network.overlaps(lab_net) and not iface.ip.is_link_local:
                    problems.append(f"address {iface} on {link['ifname']} overlaps lab network {net}")
    return sorted(set(problems))


def up(cfg: LabConfig) -> bool:
    """Create the bridge and firewall table; return True if we created the bridge."""
    found = conflicts(cfg)
    if found:
        raise MailopsError(
            f"lab network conflicts with this host: {found[0]}; choose other ranges with "
            "MAILOPS_LAB_IPV4 / MAILOPS_LAB_IPV6")
    created = False
    if not bridge_exists(cfg):
        run(["ip", "link", "add", cfg.bridge, "type", "bridge"], "creating the lab bridge")
        created = True
    # Idempotent address setup: `replace` does not fail when the address exists.
    run(["ip", "-4", "addr", "replace", f"{cfg.gateway_ipv4}/{cfg.ipv4_prefixlen}", "dev", cfg.bridge],
        "adding the lab gateway IPv4 address")
    # nodad: the address must be usable at once (named binds to it right away).
    run(["ip", "-6", "addr", "replace", f"{cfg.gateway_ipv6}/{cfg.ipv6_prefixlen}", "dev", cfg.bridge, "nodad"],
        "adding the lab gateway IPv6 address")
    run(["ip", "link", "set", cfg.bridge, "up"], "bringing the lab bridge up")
    firewall_up(cfg)
    return created


def firewall_rules(cfg: LabConfig) -> str:
    br = cfg.bridge
    tcp = ", ".join(str(p) for p in cfg.gateway_tcp_ports)
    udp = ", ".join(str(p) for p in cfg.gateway_udp_ports)
    return f"""
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
        # nothing is routed between the lab and any other network
        iifname "{br}" oifname != "{br}" drop
        oifname "{br}" iifname != "{br}" drop
    }}
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname != "{br}" accept
        ct state established,related accept
        meta l4proto {{ icmp, ipv6-icmp }} accept
        tcp dport {{ {tcp} }} accept
        udp dport {{ {udp} }} accept
        drop
    }}
}}
"""


def firewall_up(cfg: LabConfig) -> None:
    # Delete-and-recreate in one nft transaction so rules are never half there.
    script = f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n" + firewall_rules(cfg)
    run(["nft", "-f", "-"], "installing the lab firewall (nftables)", input=script)


def firewall_present() -> bool:
    return run(["nft", "list", "table", "inet", NFT_TABLE], "", check=False).returncode == 0


def down(cfg: LabConfig) -> None:
    if firewall_present():
        run(["nft", "delete", "table", "inet", NFT_TABLE], "removing the lab firewall")
    if bridge_exists(cfg):
        run(["ip", "link", "del", cfg.bridge], "removing the lab bridge")


def leftover_links(cfg: LabConfig) -> list[str]:
    """Host interfaces that belong to the lab (the bridge and machine veths)."""
    names = []
    for link in _json(["ip", "-j", "link", "show"]):
        name = link.get("ifname", "")
        if name == cfg.bridge or link.get("master") == cfg.bridge:
            names.append(name)
    return names

"""A/AAAA records of the mail hosts, published in the inventory domain their name lies in."""

from __future__ import annotations

from mailops.dns.records import Record, in_zone


def owning_domain(inv, name: str) -> str | None:
    """The inventory domain (sending or parked) with the longest suffix match for ``name``."""
    candidates = [d for d in list(inv.domains) + list(inv.parked_domains) if in_zone(name, d)]
    return max(candidates, key=len) if candidates else None


def records(host, ttl: int) -> list[Record]:
    out = [Record.make(host.fqdn, "A", str(host.ipv4), ttl)]
    if host.ipv6:
        out.append(Record.make(host.fqdn, "AAAA", str(host.ipv6), ttl))
    return out


def unmanaged_warning(host) -> str:
    return (f"{host.fqdn}: its A/AAAA records are not managed (no inventory domain contains the name); "
            "publish them yourself or add the parent domain to mailops_domains")

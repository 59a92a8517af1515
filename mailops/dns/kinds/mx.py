"""MX records of a sending domain: one ``10 <host>.`` per mail host (RFC 5321 5.1)."""

from __future__ import annotations

from mailops.dns.records import Record, normalize_name

NULL = "0 ."  # the null MX: the domain accepts no mail (RFC 7505)


def value(fqdn: str) -> str:
    return f"10 {fqdn}."


def records(inv, domain: str, ttl: int) -> list[Record]:
    return [Record.make(domain, "MX", value(h.fqdn), ttl) for h in inv.hosts_for(domain)]


def targets(values) -> set[str]:
    """The exchange names of published MX values (``""`` for a null MX)."""
    return {normalize_name(v.split()[1]) for v in values}

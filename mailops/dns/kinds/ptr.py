"""PTR records (reverse DNS) of the addresses mail leaves from, set through a reverse DNS
provider, and the forward-confirmed check receivers make (PTR name -> address)."""

from __future__ import annotations

from dataclasses import dataclass

from mailops.dns.query import reverse_name
from mailops.dns.records import normalize_name


@dataclass(frozen=True)
class PtrWant:
    address: str
    hostname: str
    provider: str
    host: str


def sending_addresses(host) -> list[str]:
    """IPv4 always; IPv6 only where the host sends over it (ipv6_ptr)."""
    return [str(host.ipv4)] + ([str(host.ipv6)] if host.ipv6 and host.ipv6_ptr else [])


def wants(host) -> list[PtrWant]:
    """The PTRs the host needs ([] when no reverse DNS provider is configured)."""
    if not host.reverse_dns_provider:
        return []
    return [PtrWant(a, host.fqdn, host.reverse_dns_provider, host.name) for a in sending_addresses(host)]


def unmanaged_warning(host) -> str:
    return (f"{host.name}: PTR of {', '.join(sending_addresses(host))} not managed; set "
            "mailops_reverse_dns_provider or set the PTR to " + host.fqdn + " in your VPS provider's panel")


def record_name(address: str) -> str:
    return reverse_name(address)


def names(values) -> list[str]:
    """The host names of published PTR values, sorted."""
    return sorted(normalize_name(v) for v in values)


def shows(current: str | None, hostname: str) -> bool:
    """Whether a provider's PTR (or None) is the wanted host name."""
    return current == normalize_name(hostname)

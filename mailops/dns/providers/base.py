"""The provider interfaces: what ``dns plan``/``dns sync`` need from a DNS service.

A forward provider lists a zone's records, tells which of them mailops owns,
and applies one zone's changes (atomically where the service allows).  A
reverse provider gets and sets the PTR of one address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mailops.dns.records import Record


@dataclass(frozen=True)
class Existing:
    """A record as the provider holds it."""
    record: Record
    owned: bool
    ref: Any = None  # provider handle (Cloudflare record id, ...)
    # another mailops inventory (mailops_dns_owner) owns it: never adopted, never changed
    other_owner: str | None = None


@dataclass
class ZoneChanges:
    creates: list[Record] = field(default_factory=list)
    # (old, new): replace old by new; an unowned old becomes owned (adopt/--force)
    updates: list[tuple[Existing, Record]] = field(default_factory=list)
    deletes: list[Existing] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)


class DnsProvider(Protocol):
    name: str
    kind: str
    # True when all records of a (name, type) share one TTL (RFC 2136); False on Cloudflare.
    rrset_ttl: bool
    ownership: str  # how ownership is marked, for the plan's legend

    def zone_for(self, name: str) -> str | None:
        """The zone this provider serves that holds ``name`` (longest match), or None."""

    def list_records(self, zone: str) -> list[Existing]:
        """Every record of the zone except the provider's ownership bookkeeping."""

    def apply(self, zone: str, changes: ZoneChanges) -> None:
        """Apply one zone's changes; raise MailopsError (one line) on failure."""

    def nameservers(self, zone: str) -> list[str]:
        """Addresses of the zone's authoritative servers, for reading back through DNS ([] = ask NS)."""


class ReverseDnsProvider(Protocol):
    name: str
    kind: str

    def get_ptr(self, address: str) -> str | None:
        """The address's PTR (FQDN, no trailing dot, lower case) or None."""

    def set_ptr(self, address: str, hostname: str) -> None:
        """Set the PTR; raise MailopsError (one line) on failure."""

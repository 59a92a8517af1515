"""The records an inventory needs, computed from the inventory and the DKIM key store.

Returns data only: forward records grouped by the DNS provider that publishes
them, the PTR each sending address needs, and warnings for what mailops cannot
manage (a host name outside every inventory domain, a host without a reverse
DNS provider).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from mailops.dns.kinds import address, dkim, dmarc, mta_sts, mx, parked, ptr, return_path, spf, tls_rpt
from mailops.dns.kinds.address import owning_domain
from mailops.dns.kinds.dmarc import dmarc_record
from mailops.dns.kinds.mta_sts import mta_sts_id, mta_sts_policy
from mailops.dns.kinds.ptr import PtrWant
from mailops.dns.kinds.spf import LOOKUP_LIMIT as SPF_LOOKUP_LIMIT
from mailops.dns.kinds.spf import count_lookups as spf_lookups
from mailops.dns.records import Record
from mailops.errors import MailopsError

DEFAULT_TTL = 300
# Re-exported for callers that build records by hand (bench, tests).
__all__ = ["DEFAULT_TTL", "SPF_LOOKUP_LIMIT", "DesiredState", "PtrWant", "desired_state", "dmarc_record",
           "mta_sts_id", "mta_sts_policy", "owning_domain", "spf_lookups"]


@dataclass
class DesiredState:
    # provider name -> records (zone assignment is the provider's job: it knows its zones)
    forward: dict[str, list[Record]] = field(default_factory=dict)
    ptr: list[PtrWant] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, provider: str, record: Record) -> None:
        self.forward.setdefault(provider, []).append(record)


def provider_of(inv, domain: str) -> str:
    settings = inv.domains.get(domain) or inv.parked_domains[domain]
    return settings.dns_provider


def desired_state(inv, keystore=None, *, now: datetime | None = None,
                  resolve_txt: Callable[[str], list[str]] | None = None) -> DesiredState:
    """Every record the inventory needs. Raises MailopsError for a record that must not be published."""
    state = DesiredState()
    ttl = DEFAULT_TTL

    # Mail hosts: A/AAAA published by the provider of the domain their name lies in.
    sending_hosts = {h.name for d in inv.domains for h in inv.hosts_for(d)}
    for host in inv.hosts:
        if host.name not in sending_hosts:
            continue
        domain = owning_domain(inv, host.fqdn)
        if domain is None:
            state.warnings.append(address.unmanaged_warning(host))
        else:
            for record in address.records(host, ttl):
                state.add(provider_of(inv, domain), record)
        state.ptr += ptr.wants(host)
        if not host.reverse_dns_provider:
            state.warnings.append(ptr.unmanaged_warning(host))

    for domain, settings in sorted(inv.domains.items()):
        provider = settings.dns_provider
        value = spf.value(inv, domain)
        _within_lookup_limit(value, domain, f"mailops_domains[{domain!r}].spf", resolve_txt)
        records = mx.records(inv, domain, ttl) + [Record.make(domain, "TXT", value, ttl)]
        if keystore is not None:
            records += dkim.records(keystore, domain, now, ttl)
        records += dmarc.records(inv, domain, ttl) + mta_sts.records(inv, domain, ttl)
        records += tls_rpt.records(inv, domain, ttl)
        for record in records:
            state.add(provider, record)

    # Return-path domains (only with mailops_return_path): MX and SPF, one set per shared domain,
    # published by the provider of the sending domains using it (the inventory check makes it one).
    for return_domain, senders in sorted(return_path.domains(inv).items()):
        value = return_path.spf_value(inv, return_domain)
        _within_lookup_limit(value, return_domain, f"return-path domain {return_domain} ({', '.join(senders)})",
                             resolve_txt)
        for record in return_path.records(inv, return_domain, ttl):
            state.add(inv.domains[senders[0]].dns_provider, record)

    for domain, settings in sorted(inv.parked_domains.items()):
        for record in parked.records(domain, ttl):
            state.add(settings.dns_provider, record)
    return state


def _within_lookup_limit(value: str, name: str, what: str, resolve_txt) -> None:
    lookups = spf_lookups(value, resolve_txt, name)
    if lookups > SPF_LOOKUP_LIMIT:
        raise MailopsError(
            f"{what}: the SPF record needs {lookups} DNS lookups, more than the limit of {SPF_LOOKUP_LIMIT} "
            "(receivers then fail SPF); drop includes or list their addresses under spf.ip4/ip6")

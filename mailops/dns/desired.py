"""The records an inventory needs, computed from the inventory and the DKIM key store.

Returns data only: forward records grouped by the DNS provider that publishes
them, the PTR each sending address needs, and warnings for what mailops cannot
manage (a host name outside every inventory domain, a host without a reverse
DNS provider).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from mailops.dns.records import Record, in_zone
from mailops.errors import MailopsError

DEFAULT_TTL = 300
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
# Mechanisms and modifiers that cost a DNS lookup (RFC 7208 4.6.4).
_SPF_LOOKUP_TERMS = ("include:", "a", "mx", "ptr", "exists:", "redirect=")


@dataclass(frozen=True)
class PtrWant:
    address: str
    hostname: str
    provider: str
    host: str


@dataclass
class DesiredState:
    # provider name -> records (zone assignment is the provider's job: it knows its zones)
    forward: dict[str, list[Record]] = field(default_factory=dict)
    ptr: list[PtrWant] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, provider: str, record: Record) -> None:
        self.forward.setdefault(provider, []).append(record)


def spf_record(ips4: list[str], ips6: list[str], includes: list[str], all_: str) -> str:
    terms = ["v=spf1"] + [f"ip4:{ip}" for ip in ips4] + [f"ip6:{ip}" for ip in ips6]
    terms += [f"include:{name}" for name in includes] + [all_]
    return " ".join(terms)


def spf_lookups(record: str, resolve_txt: Callable[[str], list[str]] | None = None,
                _depth: int = 0) -> int:
    """DNS lookups an SPF record costs a receiver, following includes when a resolver is given."""
    count = 0
    for term in record.split()[1:]:
        term = term.lstrip("+-~?").lower()
        if not any(term == t or term.startswith(t if t.endswith((":", "=")) else t + ":")
                   or term.startswith(t + "/") for t in _SPF_LOOKUP_TERMS):
            continue
        count += 1
        if resolve_txt and _depth < 10 and term.startswith(("include:", "redirect=")):
            target = term.split(":", 1)[1] if term.startswith("include:") else term.split("=", 1)[1]
            nested = [t for t in resolve_txt(target) if t.lower().startswith("v=spf1")]
            if nested:
                count += spf_lookups(nested[0], resolve_txt, _depth + 1)
    return count


def dmarc_record(policy: str, *, subdomain_policy: str | None = None, pct: int = 100,
                 rua: list[str] = (), ruf: list[str] = (), adkim: str = "r", aspf: str = "r") -> str:
    parts = ["v=DMARC1", f"p={policy}"]
    if subdomain_policy:
        parts.append(f"sp={subdomain_policy}")
    if pct != 100:
        parts.append(f"pct={pct}")
    if rua:
        parts.append("rua=" + ",".join(rua))
    if ruf:
        parts.append("ruf=" + ",".join(ruf))
    if adkim != "r":
        parts.append(f"adkim={adkim}")
    if aspf != "r":
        parts.append(f"aspf={aspf}")
    return "; ".join(parts)


def mta_sts_policy(mode: str, mx_hosts: list[str], max_age: int) -> str:
    """The policy file served at https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.2)."""
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {h}" for h in mx_hosts] + [f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(policy: str) -> str:
    # Derived from the policy text: it changes exactly when the policy does, so senders refetch.
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def owning_domain(inv, name: str) -> str | None:
    """The inventory domain (sending or parked) with the longest suffix match for ``name``."""
    candidates = [d for d in list(inv.domains) + list(inv.parked_domains) if in_zone(name, d)]
    return max(candidates, key=len) if candidates else None


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
            state.warnings.append(
                f"{host.fqdn}: its A/AAAA records are not managed (no inventory domain contains the name); "
                "publish them yourself or add the parent domain to mailops_domains")
        else:
            provider = provider_of(inv, domain)
            state.add(provider, Record.make(host.fqdn, "A", str(host.ipv4), ttl))
            if host.ipv6:
                state.add(provider, Record.make(host.fqdn, "AAAA", str(host.ipv6), ttl))
        addresses = [str(host.ipv4)] + ([str(host.ipv6)] if host.ipv6 and host.ipv6_ptr else [])
        if host.reverse_dns_provider:
            state.ptr += [PtrWant(a, host.fqdn, host.reverse_dns_provider, host.name) for a in addresses]
        else:
            state.warnings.append(
                f"{host.name}: PTR of {', '.join(addresses)} not managed; set mailops_reverse_dns_provider "
                "or set the PTR to " + host.fqdn + " in your VPS provider's panel")

    for domain, settings in sorted(inv.domains.items()):
        provider = settings.dns_provider
        hosts = inv.hosts_for(domain)
        mx_hosts = [h.fqdn for h in hosts]
        for h in hosts:
            state.add(provider, Record.make(domain, "MX", f"10 {h.fqdn}.", ttl))

        ips4 = [str(h.ipv4) for h in hosts] + [str(n) for n in settings.spf.ip4]
        ips6 = [str(h.ipv6) for h in hosts if h.ipv6] + [str(n) for n in settings.spf.ip6]
        spf = spf_record(ips4, ips6, list(settings.spf.include), settings.spf.all)
        lookups = spf_lookups(spf, resolve_txt)
        if lookups > SPF_LOOKUP_LIMIT:
            raise MailopsError(
                f"mailops_domains[{domain!r}].spf: the SPF record needs {lookups} DNS lookups, more than "
                f"the limit of {SPF_LOOKUP_LIMIT} (receivers then fail SPF); drop includes or list their "
                "addresses under spf.ip4/ip6")
        state.add(provider, Record.make(domain, "TXT", spf, ttl))

        if keystore is not None:
            for key in keystore.published(domain, now):
                state.add(provider, Record.make(f"{key.selector}._domainkey.{domain}", "TXT", key.dns_value, ttl))

        d = settings.dmarc
        state.add(provider, Record.make(f"_dmarc.{domain}", "TXT", dmarc_record(
            d.policy, subdomain_policy=d.subdomain_policy, pct=d.pct, rua=list(d.rua), ruf=list(d.ruf),
            adkim=d.adkim, aspf=d.aspf), ttl))

        if settings.mta_sts.mode != "none":
            policy = mta_sts_policy(settings.mta_sts.mode, mx_hosts, settings.mta_sts.max_age)
            state.add(provider, Record.make(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={mta_sts_id(policy)}", ttl))
            # The policy is served by the domain's first mail host.
            state.add(provider, Record.make(f"mta-sts.{domain}", "A", str(hosts[0].ipv4), ttl))
            if hosts[0].ipv6:
                state.add(provider, Record.make(f"mta-sts.{domain}", "AAAA", str(hosts[0].ipv6), ttl))
        if settings.tls_rpt is not None:
            state.add(provider, Record.make(f"_smtp._tls.{domain}", "TXT",
                                            "v=TLSRPTv1; rua=" + ",".join(settings.tls_rpt.rua), ttl))

    # Names that never send: nobody may send as them (M3AAWG parked-domain set).
    for domain, settings in sorted(inv.parked_domains.items()):
        provider = settings.dns_provider
        state.add(provider, Record.make(domain, "TXT", "v=spf1 -all", ttl))
        state.add(provider, Record.make(f"_dmarc.{domain}", "TXT",
                                        "v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s", ttl))
        state.add(provider, Record.make(domain, "MX", "0 .", ttl))  # null MX, RFC 7505
        state.add(provider, Record.make(f"*._domainkey.{domain}", "TXT", "v=DKIM1; p=", ttl))
    return state

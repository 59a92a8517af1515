"""DKIM activation for an inventory: which servers must show the key, then the store's activation.

``activate(inv, domain, ...)`` is what ``mailops dkim activate`` runs: it decides
the servers that prove a pending key visible (the ones given, else the domain's
RFC 2136 server, else every address of the zone's NS records) and asks the key
store to activate once all of them show the key.
"""

from __future__ import annotations

from mailops.dkim.store import ActivationResult, KeyStore
from mailops.errors import MailopsError

DNS_PORT = 53


def sending_domain(inv, domain: str) -> str:
    """``domain`` normalised, or a MailopsError when the inventory does not send for it."""
    name = domain.strip().lower().rstrip(".")
    if name not in inv.domains:
        known = ", ".join(sorted(inv.domains)) or "none"
        raise MailopsError(f"{domain} is not a sending domain of inventory {inv.path} "
                           f"(mailops_domains: {known}); add it there or pick one of those")
    return name


def servers_to_ask(inv, domain: str, nameservers: list[str] | None = None) -> tuple[list[str] | None, int]:
    """(addresses, port) of the servers that must show the key; None: the zone's NS records."""
    if nameservers:
        return list(nameservers), DNS_PORT
    provider = inv.dns_providers.get(inv.domains[domain].dns_provider)
    if provider is not None and provider.type == "rfc2136":
        return [provider.server], provider.port
    return None, DNS_PORT


def activate(inv, domain: str, selector: str | None = None, *, nameservers: list[str] | None = None,
             force: bool = False, store: KeyStore | None = None) -> ActivationResult:
    """Activate the domain's pending key(s) once the servers show them (see :meth:`KeyStore.activate`)."""
    name = sending_domain(inv, domain)
    store = store or KeyStore.for_inventory(inv)
    servers, port = servers_to_ask(inv, name, nameservers)
    return store.activate(name, selector, nameservers=servers, port=port, force=force)

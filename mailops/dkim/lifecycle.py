"""The DKIM key life cycle for an inventory: what each ``mailops dkim`` command runs.

The key store (:class:`KeyStore`) knows keys; these functions add what the
inventory says: which domains send, their dkim settings, and -- for activation
-- which servers prove a pending key visible (the ones given, else the domain's
RFC 2136 server, else every address of the zone's NS records).
"""

from __future__ import annotations

from mailops.dkim.manifest import DkimKey, format_time
from mailops.dkim.store import ActivationResult, GenerateResult, KeyStore
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


def generate(inv, domains: list[str] | None = None, *, store: KeyStore | None = None) -> dict[str, GenerateResult]:
    """The first key(s) of each domain (every sending domain when ``domains`` is None)."""
    store = store or KeyStore.for_inventory(inv)
    names = sorted(inv.domains) if domains is None else [sending_domain(inv, d) for d in domains]
    return {name: store.generate(name, inv.domains[name].dkim) for name in names}


def rotate(inv, domain: str, *, store: KeyStore | None = None) -> list[DkimKey]:
    name = sending_domain(inv, domain)
    return (store or KeyStore.for_inventory(inv)).rotate(name, inv.domains[name].dkim)


def retire(inv, domain: str, selector: str, *, store: KeyStore | None = None) -> tuple[DkimKey, bool]:
    """(the key, whether it was retired already)."""
    store = store or KeyStore.for_inventory(inv)
    name = sending_domain(inv, domain)
    already = store.get(name, selector).state == "retired"
    return store.retire(name, selector), already


def unsigned_algorithms(store: KeyStore, domain: str, algorithms) -> list[str]:
    """Of ``algorithms``, those no key of the domain signs with any more."""
    signing = {k.algorithm for k in store.signing(domain)}
    return [a for a in algorithms if a not in signing]


def key_rows(store: KeyStore, keys: list[DkimKey]) -> list[dict]:
    """Keys as data (``dkim list --json``): the manifest fields, published, signing, published_until."""
    rows = []
    for k in keys:
        until = store.published_until(k)
        rows.append({**k.to_dict(), "published": store.is_published(k), "signing": store.is_signing(k),
                     "published_until": format_time(until) if until else None})
    return rows

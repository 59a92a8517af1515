"""Is a DKIM key record visible on a zone's authoritative servers?

``published_value(domain, selector, nameservers)`` asks each authoritative server
directly (no recursion) for the TXT record ``<selector>._domainkey.<domain>`` and
returns ``{server: value}`` where value is the record's text (multi-string TXT
joined), ``None`` when the server says there is no such record, or a
:class:`LookupFailed` saying why the server gave no usable answer.

The record's name and the comparison (``matches``, ``describe``) are the DKIM
kind's, in :mod:`mailops.dns.kinds.dkim`.  No click here; nothing is printed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from mailops.dns.kinds.dkim import describe, matches, parse_tags, record_name
from mailops.dns.query import QueryFailed, ask, txt_text
from mailops.errors import MailopsError

__all__ = [
    "Checker", "LookupFailed", "describe", "matches", "parse_tags", "published_value", "record_name",
]

DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class LookupFailed:
    """A server gave no usable answer (timeout, REFUSED, not authoritative, ...)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


# value per server: the TXT text, None (no record), or LookupFailed
Result = dict[str, "str | None | LookupFailed"]
Checker = Callable[[str, str], Mapping[str, "str | None | LookupFailed"]]


def _query(qname: dns.name.Name, server: str, port: int, timeout: float) -> "str | None | LookupFailed":
    name = qname.to_text()
    try:  # one retry: a single lost UDP packet must not fail the check
        reply = ask(server, name, "TXT", port=port, timeout=timeout, recursion=False, attempts=2)
    except QueryFailed as exc:
        return LookupFailed(exc.reason)
    if not reply.usable:
        return LookupFailed(f"answered {dns.rcode.to_text(reply.rcode)}")
    if not reply.authoritative:
        return LookupFailed("answer is not authoritative (server does not serve the zone)")
    if reply.rcode == dns.rcode.NXDOMAIN:
        return None
    texts = [txt_text(rd) for rd in reply.rdatas("TXT", name)]
    if not texts:
        return None
    if len(texts) > 1:
        return LookupFailed(f"{len(texts)} TXT records at the name; a DKIM selector must have exactly one")
    return texts[0]


def _authoritative_servers(name: dns.name.Name, timeout: float) -> list[tuple[str, str]]:
    """[(label, address)] for every address of every NS of the zone holding ``name``."""
    try:
        zone = dns.resolver.zone_for_name(name, lifetime=timeout * 2)
        ns_answer = dns.resolver.resolve(zone, dns.rdatatype.NS, lifetime=timeout * 2)
    except (dns.exception.DNSException, OSError) as exc:
        raise MailopsError(
            f"cannot find the authoritative name servers of {name.to_text(omit_final_dot=True)} "
            f"through the system resolver ({exc or type(exc).__name__}); pass the servers explicitly "
            "(--nameserver IP)") from None
    servers: list[tuple[str, str]] = []
    for ns in sorted(rd.target.to_text(omit_final_dot=True) for rd in ns_answer):
        found = False
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                addrs = dns.resolver.resolve(ns, rdtype, lifetime=timeout * 2)
            except (dns.exception.DNSException, OSError):
                continue
            for rd in addrs:
                servers.append((f"{ns} ({rd.address})", rd.address))
                found = True
        if not found:
            servers.append((ns, ""))
    return servers


def published_value(domain: str, selector: str, nameservers: list[str] | None = None, *,
                    port: int = 53, timeout: float = DEFAULT_TIMEOUT) -> Result:
    """What each authoritative server answers for ``<selector>._domainkey.<domain>`` TXT.

    ``nameservers``: IP addresses to ask; ``None`` finds the zone's NS records through
    the system resolver and asks every address of every NS.  Returns ``{server: value}``
    with value the record text, ``None`` (no record) or :class:`LookupFailed`.
    """
    try:
        qname = dns.name.from_text(record_name(domain, selector))
    except dns.exception.DNSException as exc:
        raise MailopsError(f"{record_name(domain, selector)!r} is not a valid DNS name ({exc})") from None
    result: Result = {}
    if nameservers is None:
        for label, address in _authoritative_servers(qname, timeout):
            result[label] = _query(qname, address, port, timeout) if address else \
                LookupFailed("the name server has no A/AAAA address")
        return result
    if not nameservers:
        raise MailopsError("no name servers to ask; pass at least one IP address (--nameserver IP)")
    for server in nameservers:
        try:
            address = str(ipaddress.ip_address(server.strip()))
        except ValueError:
            raise MailopsError(f"name server {server!r} is not an IP address; pass e.g. --nameserver 198.51.100.1") from None
        result[address] = _query(qname, address, port, timeout)
    return result

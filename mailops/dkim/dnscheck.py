"""Is a DKIM key record visible on a zone's authoritative servers?

``published_value(domain, selector, nameservers)`` asks each authoritative server
directly (no recursion) for the TXT record ``<selector>._domainkey.<domain>`` and
returns ``{server: value}`` where value is the record's text (multi-string TXT
joined), ``None`` when the server says there is no such record, or a
:class:`LookupFailed` saying why the server gave no usable answer.

``matches(expected, found)`` compares two DKIM key records the way a verifier
would: same key type (``k=``, default rsa) and same public key (``p=``), ignoring
whitespace.  No click here; nothing is printed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

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


def record_name(domain: str, selector: str) -> str:
    """``<selector>._domainkey.<domain>`` (no trailing dot)."""
    return f"{selector}._domainkey.{domain.rstrip('.')}"


def parse_tags(value: str) -> dict[str, str]:
    """DKIM tag=value list (RFC 6376 3.2) with all whitespace removed from values."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        if "=" not in part:
            continue
        name, _, val = part.partition("=")
        tags[name.strip().lower()] = "".join(val.split())
    return tags


def matches(expected: str, found: str | None) -> bool:
    """True if ``found`` publishes the same key (k= and p=) as ``expected``."""
    if not isinstance(found, str):
        return False
    want, got = parse_tags(expected), parse_tags(found)
    if not got.get("p"):
        return False  # empty p= means revoked (RFC 6376 3.6.1)
    return (want.get("p") == got.get("p")
            and want.get("k", "rsa").lower() == got.get("k", "rsa").lower())


def describe(expected: str, found: "str | None | LookupFailed") -> str:
    """Short words for what a server answered, relative to the expected record."""
    if isinstance(found, LookupFailed):
        return f"no answer ({found.reason})"
    if found is None:
        return "no record"
    if matches(expected, found):
        return "the expected key"
    tags = parse_tags(found)
    if "p" in tags and not tags["p"]:
        return "a revoked key (empty p=)"
    if not tags.get("p"):
        return "a record without p= (not a DKIM key)"
    p = tags["p"]
    short = p if len(p) <= 16 else f"{p[:6]}...{p[-6:]}"
    return f"a different key (k={tags.get('k', 'rsa')}, p={short})"


def _query(qname: dns.name.Name, server: str, port: int, timeout: float) -> "str | None | LookupFailed":
    query = dns.message.make_query(qname, dns.rdatatype.TXT, use_edns=0, payload=4096)
    query.flags &= ~dns.flags.RD  # the servers are authoritative: no recursion wanted
    last: LookupFailed | None = None
    for _attempt in range(2):  # one retry: a single lost UDP packet must not fail the check
        try:
            response, _tcp = dns.query.udp_with_fallback(query, server, timeout=timeout, port=port)
            break
        except dns.exception.Timeout:
            last = LookupFailed(f"timeout after {timeout:g}s")
        except (dns.exception.DNSException, OSError) as exc:
            last = LookupFailed(f"query failed: {exc or type(exc).__name__}")
    else:
        return last
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return LookupFailed(f"answered {dns.rcode.to_text(rcode)}")
    if not response.flags & dns.flags.AA:
        return LookupFailed("answer is not authoritative (server does not serve the zone)")
    if rcode == dns.rcode.NXDOMAIN:
        return None
    rrset = next((r for r in response.answer if r.name == qname and r.rdtype == dns.rdatatype.TXT), None)
    if rrset is None or len(rrset) == 0:
        return None
    texts = [b"".join(rd.strings).decode("utf-8", "replace") for rd in rrset]
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

"""The one DNS query mailops sends: ``ask(server, name, rtype)``.

DKIM activation asks authoritative servers without recursion; ``dns sync``
read-back and ``verify`` ask authoritative servers and resolvers (through
:class:`mailops.dns.sync.DnsReader`, with verify's cache on top).  All of them
send this query: EDNS0 with a 4096-byte buffer, UDP with TCP when truncated,
a retry for a lost packet.  Also the helpers every reader of answers needs:
the logical text of a TXT rdata and the reverse name of an address.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename

from mailops.dns.records import Record

DEFAULT_TIMEOUT = 3.0


class QueryFailed(Exception):
    """No usable answer: timeout, network error (the reason says which)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    rcode: int
    authoritative: bool
    answer: list  # the answer section's RRsets

    @property
    def usable(self) -> bool:
        """NOERROR or NXDOMAIN: the server said what it has (SERVFAIL, REFUSED, ... say nothing)."""
        return self.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)

    def rdatas(self, rtype: str, name: str | None = None) -> list:
        """The answer's rdatas of ``rtype`` (at ``name`` only, when given; else after any CNAME)."""
        want = dns.rdatatype.from_text(rtype)
        qname = dns.name.from_text(name) if name else None
        return [rd for rrset in self.answer if rrset.rdtype == want and (qname is None or rrset.name == qname)
                for rd in rrset]


def ask(server: str, name: str, rtype: str, *, port: int = 53, timeout: float = DEFAULT_TIMEOUT,
        recursion: bool = True, attempts: int = 1) -> Reply:
    """Ask ``server`` once (``attempts`` tries) for (name, rtype); raises QueryFailed without an answer."""
    query = dns.message.make_query(name if name.endswith(".") else name + ".", rtype, use_edns=0, payload=4096)
    if not recursion:
        query.flags &= ~dns.flags.RD  # authoritative servers: no recursion wanted
    failure = QueryFailed("no query sent")
    for _attempt in range(max(1, attempts)):
        try:
            response, _tcp = dns.query.udp_with_fallback(query, server, timeout=timeout, port=port)
        except dns.exception.Timeout:
            failure = QueryFailed(f"timeout after {timeout:g}s")
            continue
        except (dns.exception.DNSException, OSError) as exc:
            failure = QueryFailed(f"query failed: {exc or type(exc).__name__}")
            continue
        return Reply(response.rcode(), bool(response.flags & dns.flags.AA), list(response.answer))
    raise failure


def txt_text(rdata) -> str:
    """The logical string of one TXT rdata: its character-strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
    return b"".join(rdata.strings).decode("utf-8", "replace")


def value_of(name: str, rtype: str, rdata) -> str:
    """One answered rdata in mailops' canonical form (as :class:`Record` holds values)."""
    if rtype == "TXT":
        text = txt_text(rdata)
    elif rtype == "MX":
        text = f"{rdata.preference} {rdata.exchange.to_text()}"
    else:
        text = rdata.to_text()
    return Record.make(name, rtype, text).value


def reverse_name(address: str, under: str | None = None) -> str:
    """``192.0.2.1`` -> ``1.2.0.192.in-addr.arpa``; with ``under`` the same labels below that zone
    instead (a DNSBL query name, RFC 5782)."""
    reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    if under is None:
        return reverse
    return reverse.rsplit(".", 2)[0] + "." + under.strip().rstrip(".").lower()

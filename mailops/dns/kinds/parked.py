"""Domains that never send: nobody may send as them (M3AAWG parked-domain set):
SPF ``-all``, a rejecting DMARC record, a null MX and an empty DKIM wildcard."""

from __future__ import annotations

from mailops.dns.kinds import dkim, dmarc, mx
from mailops.dns.records import Record

SPF = "v=spf1 -all"
DKIM_WILDCARD = "v=DKIM1; p="  # every selector: a revoked key (RFC 6376 3.6.1)


def records(domain: str, ttl: int) -> list[Record]:
    return [Record.make(domain, "TXT", SPF, ttl),
            Record.make(dmarc.record_name(domain), "TXT", dmarc.PARKED, ttl),
            Record.make(domain, "MX", mx.NULL, ttl),
            Record.make(dkim.record_name(domain, "*"), "TXT", DKIM_WILDCARD, ttl)]

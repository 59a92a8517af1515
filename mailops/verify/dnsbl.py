"""DNS blocklists (RFC 5782): the query name of an address or domain and what a list's answer means."""

from __future__ import annotations

import ipaddress

from mailops.dns.query import reverse_name
from mailops.dns.records import normalize_name
from mailops.verify.dnsview import ATTEMPTS, GROUP, DnsView
from mailops.verify.result import CheckResult, failed, inconclusive, passed

_ZEN = {2: "SBL (Spamhaus Block List: spam source)", 3: "CSS (Spamhaus snowshoe spam)",
        **{n: "XBL (exploited host: malware, open proxy or botnet)" for n in (4, 5, 6, 7)},
        9: "DROP (hijacked or criminal network)", 10: "PBL (ISP policy: end-user range)",
        11: "PBL (Spamhaus policy: end-user range)"}
_DBL = {2: "spam domain", 4: "phishing domain", 5: "malware domain", 6: "botnet C&C domain",
        102: "abused legitimate domain (spam)", 103: "abused spammed redirector", 104: "abused legitimate (phish)",
        105: "abused legitimate (malware)", 106: "abused legitimate (botnet C&C)"}
_ERRORS = {252: "typo in the DNSBL name or malformed query", 254: "query came through a public or "
           "shared resolver, which the list refuses: use your own resolver or a DQS key",
           255: "excessive number of queries: rate-limited"}


def dnsbl_query_name(address: str, zone: str) -> str:
    """RFC 5782: reversed octets (IPv4) or nibbles (IPv6) under the list's zone."""
    return reverse_name(address, zone)


def decode_dnsbl(zone: str, code: str) -> tuple[str, str]:
    """(status, meaning) of one A answer: fail = listed, inconclusive = an error code, not a listing."""
    try:
        addr = ipaddress.IPv4Address(code)
    except ValueError:
        return "inconclusive", f"{code} is not an IPv4 answer"
    if addr not in ipaddress.IPv4Network("127.0.0.0/8"):
        return "inconclusive", f"{code} is outside 127.0.0.0/8: not a DNSBL answer (a resolver rewriting NXDOMAIN?)"
    octets = addr.packed
    if octets[1:3] == b"\xff\xff":
        return "inconclusive", f"{code}: error, not a listing ({_ERRORS.get(octets[3], 'list error code')})"
    labels = normalize_name(zone).split(".")
    if "spamhaus" in labels:
        table = _DBL if "dbl" in labels else _ZEN
        expected = 1 if table is _DBL else 0
        if octets[1:3] == bytes([0, expected]) and octets[3] in table:
            return "fail", f"{table[octets[3]]} ({code})"
        return "inconclusive", f"{code}: not a listing code of {zone}"
    if int(addr) <= int(ipaddress.IPv4Address("127.0.0.1")):
        return "inconclusive", f"{code}: not a listing (127.0.0.0/127.0.0.1 are reserved, RFC 5782)"
    return "fail", f"listed ({code})"


def dnsbl_check(view: DnsView, subject: str, name: str, query: str, what: str, zone: str) -> CheckResult:
    codes = view.resolve(query, "A")
    if codes is None:
        return inconclusive(GROUP, subject, name, f"{zone}: no answer for {query} after {ATTEMPTS} tries")
    if not codes:
        return passed(GROUP, subject, name, f"{what} is not listed in {zone}")
    decoded = [decode_dnsbl(zone, c) for c in sorted(codes)]
    listed = [meaning for status, meaning in decoded if status == "fail"]
    if not listed:
        return inconclusive(GROUP, subject, name, f"{zone}: " + "; ".join(m for _, m in decoded))
    reason = "; ".join(sorted(view.resolve(query, "TXT") or ()))
    return failed(GROUP, subject, name, f"{what} is listed in {zone}: {', '.join(listed)}"
                  + (f" -- {reason}" if reason else ""),
                  f"find and stop the cause (see {reason or zone + ' lookup page'}), "
                  f"then request delisting from {zone}")


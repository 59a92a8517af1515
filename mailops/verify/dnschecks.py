"""`mailops verify`, DNS group: what receivers see of each sending domain and mail host.

``check_domains`` (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, domain DNSBL) and
``check_hosts`` (forward-confirmed reverse DNS, EHLO name, address DNSBLs)
return :class:`CheckResult` lists; nothing prints.

Every record a domain publishes is read from the zone's authoritative servers
(zone found by SOA through the inventory's resolvers) and from the resolvers:
what the authoritative servers publish decides pass/fail, a resolver that
still answers something else turns a pass into a warn (propagation), and a
source that never answered (timeout, SERVFAIL, REFUSED, after retries) makes
the check inconclusive -- never pass, never fail.  Everything else a receiver
would look up (SPF includes, MX target addresses, DNSBLs) goes through the
resolvers only.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import re
import smtplib
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable

import dns.reversename
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mailops.dkim.dnscheck import parse_tags
from mailops.dns.desired import SPF_LOOKUP_LIMIT, mta_sts_id, mta_sts_policy
from mailops.dns.records import normalize_name
from mailops.dns.sync import DnsReader
from mailops.errors import MailopsError
from mailops.verify.result import CheckResult, failed, inconclusive, passed, warned

GROUP = "dns"
QUERY_TIMEOUT = 1.5  # seconds per try: a lost UDP packet costs little...
ATTEMPTS = 3         # ...and one lost packet never decides a check
SPF_VOID_LIMIT = 2   # RFC 7208 4.6.4
MIN_RSA_BITS = 2048
NEUTRAL_EHLO = "mailops-verify.invalid"  # our own EHLO name: says nothing about the checked host
MTA_STS_PATH = "/.well-known/mta-sts.txt"
HTTPS_TIMEOUT = 5.0
SYNC = "run `mailops dns sync --apply`"

# A lookup: (name, type) -> the values (TXT joined, MX "10 host.", PTR "host."), an empty set
# for NXDOMAIN/no data, or None when no usable answer came (timeout, SERVFAIL, REFUSED).
Lookup = Callable[[str, str], "frozenset[str] | None"]


# --- asking DNS -------------------------------------------------------------------

@dataclass(frozen=True)
class Observed:
    """One record set as the authoritative servers and the resolvers see it."""
    values: frozenset[str] | None  # the authoritative answer (the resolvers' when no server answered)
    lagging: str = ""              # sources answering something else: propagation in progress
    silent: str = ""               # sources that gave no answer after retries


class DnsView:
    """Queries with retries and a per-run cache, through DnsReader (the inventory's resolvers)."""

    def __init__(self, reader: DnsReader, attempts: int = ATTEMPTS):
        self.reader = reader
        self.resolvers = list(reader.resolver.nameservers)
        self.attempts = attempts
        self._cache: dict[tuple, frozenset[str] | None] = {}
        self._zones: dict[str, str | None] = {}
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def _ask(self, servers: list[str], name: str, rtype: str) -> frozenset[str] | None:
        key = (tuple(servers), normalize_name(name), rtype)
        if key not in self._cache:
            found, timeouts = None, Counter()
            live = [s for s in servers if s not in self._down]
            for _ in range(self.attempts if live else 0):
                for server in live:
                    started = time.monotonic()
                    found = self.reader.values(server, key[1], rtype)
                    if found is not None:
                        break
                    timeouts[server] += time.monotonic() - started >= self.reader.timeout
                if found is not None:
                    break
            with self._lock:
                # A server that let every try time out is down: later queries skip it rather than
                # wait again (a dead resolver would otherwise cost minutes over 100 domains).
                self._down.update(s for s in live if timeouts[s] == self.attempts)
                self._cache[key] = None if found is None else frozenset(found)
        return self._cache[key]

    def resolve(self, name: str, rtype: str) -> frozenset[str] | None:
        """What a receiver's resolver answers."""
        return self._ask(self.resolvers, name, rtype)

    def zone_of(self, name: str) -> str | None:
        """The zone holding ``name``: the closest enclosing name with an SOA, asked through the resolvers."""
        name = normalize_name(name)
        if name not in self._zones:
            soa = self.resolve(name, "SOA")
            if soa is None or "." not in name:
                zone = None  # no answer, or walked up to a TLD without finding a zone
            else:
                zone = name if soa else self.zone_of(name.split(".", 1)[1])
            self._zones[name] = zone
        return self._zones[name]

    def observe(self, name: str, rtype: str) -> Observed:
        zone = self.zone_of(name)
        servers = self.reader.authoritative(zone) if zone else []
        answers = {f"authoritative server {s}": self._ask([s], name, rtype) for s in servers}
        answers["resolver " + ", ".join(self.resolvers)] = self.resolve(name, rtype)
        given = [v for v in answers.values() if v is not None]
        if not given:
            return Observed(None, silent=", ".join(answers))
        values = given[0]  # authoritative first: dict order
        lagging = [f"{src} answers {_short(sorted(v))}" for src, v in answers.items() if v is not None and v != values]
        return Observed(values, "; ".join(lagging), ", ".join(s for s, v in answers.items() if v is None))


def _short(items, limit: int = 80) -> str:
    text = ", ".join(items) if items else "nothing"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _finish(result: CheckResult, seen: Observed) -> CheckResult:
    """Only a pass needs every source: the published data alone proves a fail or a warn."""
    if result.status != "pass":
        return result
    if seen.lagging:
        return warned(result.group, result.subject, result.name, f"{result.detail}; but {seen.lagging}",
                      "wait for the old record's TTL to expire (propagation); if it persists, check that "
                      "every authoritative server serves the current zone")
    if seen.silent:
        return inconclusive(result.group, result.subject, result.name,
                            f"{result.detail}; no answer from {seen.silent}")
    return result


def _unanswered(subject: str, names: list[str], what: str, seen: Observed) -> list[CheckResult]:
    return [inconclusive(GROUP, subject, n, f"{what}: no answer from {seen.silent} after {ATTEMPTS} tries")
            for n in names]


def _with(lookup: Lookup, known: dict[tuple[str, str], frozenset[str]]) -> Lookup:
    """``lookup`` with some answers fixed (the authoritative view of the record being checked)."""
    def fixed(name: str, rtype: str) -> frozenset[str] | None:
        key = (normalize_name(name), rtype)
        return known[key] if key in known else lookup(name, rtype)
    return fixed


# --- SPF (RFC 7208) ------------------------------------------------------------------

class SpfError(Exception):
    def __init__(self, result: str, reason: str):
        super().__init__(reason)
        self.result, self.reason = result, reason


@dataclass(frozen=True)
class SpfTerm:
    qualifier: str
    mechanism: str
    target: str | None
    cidr4: int
    cidr6: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


@dataclass(frozen=True)
class SpfRecord:
    terms: list[SpfTerm]
    redirect: str | None
    notes: list[str]  # legal but wrong: receivers ignore these parts


_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_QUALIFIED = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_TERM = re.compile(r"([+\-~?]?)([a-z0-9]+)(?::([^/]*))?(?:/(\d+))?(?://(\d+))?", re.I)
_MODIFIER = re.compile(r"([a-z][a-z0-9_.-]*)=(.*)", re.I)
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-", re.I)
_LABELS = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9])?\.)+[a-z0-9-]*[a-z][a-z0-9-]*\.?", re.I)


def _domain_spec(text: str | None, term: str) -> None:
    if not text:
        raise SpfError("permerror", f"{term!r} needs a domain")
    plain = _MACRO.sub("x", text)
    if "%" in plain or not all(0x21 <= ord(c) <= 0x7E for c in plain) \
            or ("%" not in text and not _LABELS.fullmatch(text)):
        raise SpfError("permerror", f"{term!r}: {text!r} is not a domain name")


def parse_spf(record: str) -> SpfRecord:
    """Parse a ``v=spf1`` record; raises SpfError (permerror) for what makes receivers fail it."""
    words = record.split()
    if not words or words[0].lower() != "v=spf1":
        raise SpfError("permerror", "does not start with v=spf1")
    terms: list[SpfTerm] = []
    redirect, exp, notes = None, None, []
    for word in words[1:]:
        mod = _MODIFIER.fullmatch(word)
        if mod and mod.group(1).lower() not in _MECHANISMS:
            key, value = mod.group(1).lower(), mod.group(2)
            if key in ("redirect", "exp"):
                if (redirect if key == "redirect" else exp) is not None:
                    raise SpfError("permerror", f"{key}= appears more than once")
                _domain_spec(value, word)
                redirect, exp = (value, exp) if key == "redirect" else (redirect, value)
            else:
                notes.append(f"unknown modifier {word!r} is ignored")
            continue
        m = _TERM.fullmatch(word)
        if not m or m.group(2).lower() not in _MECHANISMS:
            raise SpfError("permerror", f"unknown mechanism {word!r}")
        qualifier, mech, target, c4, c6 = m.groups()
        mech, network = mech.lower(), None
        if mech in ("ip4", "ip6"):
            if not target or c6 is not None:
                raise SpfError("permerror", f"{word!r} needs an address")
            try:
                network = ipaddress.ip_network(target + (f"/{c4}" if c4 else ""), strict=False)
            except ValueError:
                network = None
            if network is None or network.version != int(mech[-1]):
                raise SpfError("permerror", f"{word!r} is not a valid IPv{mech[-1]} address or network")
        elif (c4 or c6) and mech not in ("a", "mx"):
            raise SpfError("permerror", f"{word!r}: only a, mx, ip4 and ip6 take a prefix length")
        elif mech == "all" and target is not None:
            raise SpfError("permerror", f"{word!r}: all takes no argument")
        elif mech in ("include", "exists") or target is not None:
            _domain_spec(target, word)
        cidr4, cidr6 = int(c4) if c4 else 32, int(c6) if c6 else 128
        if mech in ("a", "mx") and (cidr4 > 32 or cidr6 > 128):
            raise SpfError("permerror", f"{word!r}: prefix length out of range")
        terms.append(SpfTerm(_QUALIFIED[qualifier or "+"], mech, target, cidr4, cidr6, network))
    mechs = [t.mechanism for t in terms]
    if "all" in mechs and mechs.index("all") != len(mechs) - 1:
        notes.append("terms after 'all' are never evaluated; put all last")
    if "all" in mechs and redirect:
        notes.append("redirect= is ignored because the record has an 'all'")
    return SpfRecord(terms, redirect, notes)


def spf_records(values) -> list[str]:
    return sorted(v for v in values if re.match(r"v=spf1(\s|$)", v, re.I))


class SpfEvaluation:
    """RFC 7208 check_host() against ``lookup``.

    With ``ip`` it answers what a receiver decides for mail from that address.  With ip=None
    nothing matches, so every term is visited: the DNS lookups and void lookups counted are
    the most a receiver ever spends on the record."""

    def __init__(self, lookup: Lookup, ip: str | None = None):
        self.lookup = lookup
        self.ip = ipaddress.ip_address(ip) if ip else None
        self.lookups = self.voids = 0

    def run(self, domain: str) -> tuple[str, str]:
        """(result, reason): pass/fail/softfail/neutral/none/permerror/temperror."""
        try:
            return self._check_host(domain, 0), ""
        except SpfError as e:
            return e.result, e.reason

    def _query(self, name: str, rtype: str) -> frozenset[str]:
        found = self.lookup(normalize_name(name), rtype)
        if found is None:
            raise SpfError("temperror", f"no answer for {name} {rtype}")
        return found

    def _void(self, found) -> None:
        if not found:
            self.voids += 1
            if self.ip is not None and self.voids > SPF_VOID_LIMIT:
                raise SpfError("permerror", f"more than {SPF_VOID_LIMIT} void lookups")

    def _count(self) -> None:
        self.lookups += 1
        if self.ip is not None and self.lookups > SPF_LOOKUP_LIMIT:
            raise SpfError("permerror", f"more than {SPF_LOOKUP_LIMIT} DNS lookups")

    def _expand(self, spec: str, domain: str) -> str:
        ip = self.ip or ipaddress.ip_address("192.0.2.1")  # walk: an address nothing lists
        sender = f"postmaster@{domain}"
        values = {"s": sender, "l": "postmaster", "o": domain, "d": domain, "h": domain, "p": "unknown",
                  "v": "in-addr" if ip.version == 4 else "ip6",
                  "i": str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))}

        def one(m: re.Match) -> str:
            if m.group(0) in ("%%", "%_", "%-"):
                return {"%%": "%", "%_": " ", "%-": "%20"}[m.group(0)]
            letter, digits, reverse, delimiters = m.groups()
            parts = re.split("[" + re.escape(delimiters or ".") + "]", values.get(letter.lower(), "unknown"))
            parts = parts[::-1] if reverse else parts
            return ".".join(parts[-int(digits):] if digits else parts)
        return _MACRO.sub(one, spec)

    def _check_host(self, domain: str, depth: int) -> str:
        if depth > SPF_LOOKUP_LIMIT:
            raise SpfError("permerror", "include/redirect loop")
        found = self._query(domain, "TXT")
        if depth:
            self._void(found)
        records = spf_records(found)
        if not records:
            return "none"
        if len(records) > 1:
            raise SpfError("permerror", f"{domain} has {len(records)} SPF records")
        record = parse_spf(records[0])
        for term in record.terms:
            if self._matches(term, domain, depth):
                return term.qualifier
        if record.redirect and "all" not in [t.mechanism for t in record.terms]:
            self._count()
            target = self._expand(record.redirect, domain)
            result = self._check_host(target, depth + 1)
            if result == "none":
                raise SpfError("permerror", f"redirect target {target} has no SPF record")
            return result
        return "neutral"

    def _matches(self, term: SpfTerm, domain: str, depth: int) -> bool:
        mech, ip = term.mechanism, self.ip
        if mech == "all":
            return ip is not None
        if mech in ("ip4", "ip6"):
            return ip is not None and ip.version == term.network.version and ip in term.network
        self._count()
        target = self._expand(term.target or domain, domain)
        if mech == "include":
            result = self._check_host(target, depth + 1)
            if result == "none":
                raise SpfError("permerror", f"include target {target} has no SPF record")
            return result == "pass" and ip is not None
        if mech == "exists":
            found = self._query(target, "A")
            self._void(found)
            return bool(found) and ip is not None
        if mech == "a":
            return self._has_address(target, term, void=True)
        if mech == "mx":
            hosts = [v.split()[1] for v in self._query(target, "MX")]
            self._void(hosts)
            hosts = [h for h in hosts if normalize_name(h)]  # null MX "0 ." names no host
            if len(hosts) > 10:
                raise SpfError("permerror", f"{target} has more than 10 MX hosts")
            return ip is not None and any(self._has_address(h, term) for h in hosts)
        # ptr (deprecated): a validated PTR name inside target
        if ip is None:
            return False
        names = self.lookup(dns.reversename.from_address(str(ip)).to_text(), "PTR") or frozenset()
        target = normalize_name(target)
        return any((n == target or n.endswith("." + target)) and self._has_address(n, term)
                   for n in sorted(normalize_name(v) for v in names)[:10])

    def _has_address(self, name: str, term: SpfTerm, void: bool = False) -> bool:
        ip = self.ip
        types = ("A", "AAAA") if ip is None else ("A",) if ip.version == 4 else ("AAAA",)
        found = set().union(*(self._query(name, t) for t in types))
        if void:
            self._void(found)
        if ip is None:
            return False
        prefix = term.cidr4 if ip.version == 4 else term.cidr6
        return any(ip in ipaddress.ip_network(f"{a}/{prefix}", strict=False) for a in found)


# --- DNSBL (RFC 5782) ----------------------------------------------------------------

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
    reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    return reverse.rsplit(".", 2)[0] + "." + normalize_name(zone)


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


def _dnsbl_check(view: DnsView, subject: str, name: str, query: str, what: str, zone: str) -> CheckResult:
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


# --- per-domain checks ---------------------------------------------------------------

def _mx(inv, view: DnsView, domain: str) -> list[CheckResult]:
    seen = view.observe(domain, "MX")
    if seen.values is None:
        return _unanswered(domain, ["mx"], "MX", seen)
    targets = {normalize_name(v.split()[1]) for v in seen.values}
    wanted = {h.fqdn for h in inv.hosts_for(domain)}
    if not targets or targets == {""}:
        what = "no MX record" if not targets else "null MX (0 .): the domain accepts no mail"
        return [failed(GROUP, domain, "mx", what, f"publish MX records for {', '.join(sorted(wanted))}: {SYNC}")]
    missing = sorted(wanted - targets)
    if missing:
        return [failed(GROUP, domain, "mx", f"MX targets {', '.join(sorted(targets))} lack {', '.join(missing)}",
                       f"add MX 10 {missing[0]}.: {SYNC}")]
    silent, unresolved = [], []
    for target in sorted(targets):
        addrs = [view.resolve(target, t) for t in ("A", "AAAA")]
        if any(a is None for a in addrs):
            silent.append(target)
        elif not any(addrs):
            unresolved.append(target)
    if unresolved:
        return [failed(GROUP, domain, "mx", f"MX target(s) {', '.join(unresolved)} have no A/AAAA record",
                       f"publish the address of {unresolved[0]} ({SYNC}) or remove it from the MX set")]
    if silent:
        return [inconclusive(GROUP, domain, "mx", f"no answer for the address of {', '.join(silent)}")]
    extra = sorted(targets - wanted)
    if extra:
        return [warned(GROUP, domain, "mx", f"extra MX targets not in the inventory: {', '.join(extra)}",
                       f"remove them or add their hosts to the domain's hosts: ({SYNC} afterwards)")]
    return [_finish(passed(GROUP, domain, "mx", "MX " + ", ".join(sorted(targets)) + " all resolve"), seen)]


def _sending_addresses(hosts, version: int) -> list[tuple[str, str]]:
    """(host name, address) this version's mail leaves from (IPv6 only when it has a PTR)."""
    if version == 4:
        return [(h.name, str(h.ipv4)) for h in hosts]
    return [(h.name, str(h.ipv6)) for h in hosts if h.ipv6 and h.ipv6_ptr]


def _spf(inv, view: DnsView, domain: str) -> list[CheckResult]:
    hosts = inv.hosts_for(domain)
    families = [v for v in (4, 6) if _sending_addresses(hosts, v)]
    names = ["spf.record", "spf.lookups", "spf.void-lookups"] + [f"spf.authorises-ipv{v}" for v in families]
    seen = view.observe(domain, "TXT")
    if seen.values is None:
        return _unanswered(domain, names, "TXT", seen)
    records = spf_records(seen.values)
    fix = f"publish one valid SPF record: {SYNC}"
    if not records:
        results = [failed(GROUP, domain, "spf.record", "no SPF record (v=spf1)", fix)]
    elif len(records) > 1:
        results = [failed(GROUP, domain, "spf.record", f"{len(records)} SPF records: receivers return permerror",
                          f"merge them into one, then {SYNC} --force")]
    else:
        try:
            notes = parse_spf(records[0]).notes
            results = [failed(GROUP, domain, "spf.record", "; ".join(notes) + f": {records[0]}", fix) if notes
                       else passed(GROUP, domain, "spf.record", records[0])]
        except SpfError as e:
            results = [failed(GROUP, domain, "spf.record", f"permerror: {e.reason}: {records[0]}", fix)]

    lookup = _with(view.resolve, {(domain, "TXT"): seen.values})
    walk = SpfEvaluation(lookup)
    result, reason = walk.run(domain)
    stopped = f" (evaluation stopped: {reason})" if reason else ""
    for name, count, limit, how in (
            ("spf.lookups", walk.lookups, SPF_LOOKUP_LIMIT, "replace include:/a/mx terms by ip4:/ip6: ranges"),
            ("spf.void-lookups", walk.voids, SPF_VOID_LIMIT, "remove the terms whose names do not exist")):
        detail = f"{count} {name[4:].replace('-', ' ')} (limit {limit}, RFC 7208 4.6.4){stopped}"
        if result == "temperror":
            results.append(inconclusive(GROUP, domain, name, detail))
        elif count > limit:
            results.append(failed(GROUP, domain, name, detail + ": receivers return permerror", how))
        else:
            results.append(passed(GROUP, domain, name, detail))

    for version in families:
        name, missing, silent = f"spf.authorises-ipv{version}", [], []
        for host, address in _sending_addresses(hosts, version):
            result, reason = SpfEvaluation(lookup, address).run(domain)
            if result == "temperror":
                silent.append(f"{address}: {reason}")
            elif result != "pass":
                why = f" ({reason})" if reason else ""
                missing.append((address, result, f"{address} ({host}) gets {result}{why}"))
        if missing:
            address, result, _ = missing[0]
            how = (f"correct the SPF record of {domain} (see spf.record, spf.lookups, spf.void-lookups): {SYNC}"
                   if result == "permerror" else f"add ip{version}:{address} to the SPF record of {domain}: {SYNC}")
            results.append(failed(GROUP, domain, name, "SPF: " + "; ".join(m for *_, m in missing), how))
        elif silent:
            results.append(inconclusive(GROUP, domain, name, "SPF temperror: " + "; ".join(silent)))
        else:
            results.append(passed(GROUP, domain, name, "SPF passes " + ", ".join(
                a for _, a in _sending_addresses(hosts, version))))
    return [_finish(r, seen) for r in results]


def _dkim(view: DnsView, key) -> list[CheckResult]:
    name, record = f"dkim.{key.selector}", key.record_name
    seen = view.observe(record, "TXT")
    if seen.values is None:
        return _unanswered(key.domain, [name], record, seen)
    fix = f"publish the key store's record: {SYNC} (add --force if another record holds the selector)"
    if len(seen.values) != 1:
        return [failed(GROUP, key.domain, name, f"{record}: {len(seen.values) or 'no'} TXT record(s), want one "
                       f"({key.state} key)", fix)]
    tags, want = parse_tags(next(iter(seen.values))), parse_tags(key.dns_value)
    problems = []
    if tags.get("v", "DKIM1") != "DKIM1":
        problems.append(f"v={tags['v']} (want DKIM1)")
    if not tags.get("p"):
        problems.append("no public key (empty p= means revoked)" if "p" in tags else "no p= tag")
    elif tags["p"] != want.get("p"):
        problems.append(f"publishes a different key than the key store (p=...{tags['p'][-12:]})")
    if tags.get("k", "rsa").lower() != want.get("k", "rsa").lower():
        problems.append(f"k={tags.get('k', 'rsa')} but the key is {want.get('k', 'rsa')}")
    if problems:
        return [failed(GROUP, key.domain, name, f"{record}: " + "; ".join(problems), fix)]
    if want.get("k", "rsa").lower() == "rsa":
        try:
            public = load_der_public_key(base64.b64decode(tags["p"], validate=True))
        except (ValueError, binascii.Error, TypeError):
            public = None
        if not isinstance(public, rsa.RSAPublicKey):
            return [failed(GROUP, key.domain, name, f"{record}: p= is not an RSA SubjectPublicKeyInfo", fix)]
        if public.key_size < MIN_RSA_BITS:
            return [failed(GROUP, key.domain, name, f"{record}: {public.key_size}-bit RSA (receivers want >= 2048)",
                           "rotate to a 2048-bit key: `mailops dkim rotate`, then " + SYNC)]
    if "y" in tags.get("t", "").split(":"):
        return [failed(GROUP, key.domain, name, f"{record}: t=y (test mode: receivers ignore failures)",
                       f"remove t=y from the record: {SYNC} --force")]
    return [_finish(passed(GROUP, key.domain, name, f"{record} publishes the {key.state} key"), seen)]


_DMARC_TAGS = {
    "v": None, "p": r"none|quarantine|reject", "sp": r"none|quarantine|reject", "np": r"none|quarantine|reject",
    "adkim": r"[rs]", "aspf": r"[rs]", "pct": r"\d{1,2}|100", "ri": r"\d+", "fo": r"[01ds](:[01ds])*",
    "rf": r"afrf(:[a-z0-9-]+)*|[a-z0-9-]+(:[a-z0-9-]+)*",
    "rua": r"(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?(\s*,\s*(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?)*",
    "ruf": r"(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?(\s*,\s*(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?)*",
}
_STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}


def parse_dmarc(record: str) -> tuple[dict[str, str], list[str]]:
    """Tags and the syntax problems (RFC 7489 6.3/6.4)."""
    tags, problems = {}, []
    parts = [p.strip() for p in record.split(";") if p.strip()]
    for part in parts:
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or key not in _DMARC_TAGS:
            problems.append(f"unknown tag {part!r}")
        elif key in tags:
            problems.append(f"tag {key}= appears twice")
        elif _DMARC_TAGS[key] and not re.fullmatch(_DMARC_TAGS[key], value, re.I):
            problems.append(f"invalid {key}={value}")
        else:
            tags[key] = value
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        problems.append("v=DMARC1 must come first")
    if "p" not in tags:
        problems.append("p= is required")
    return tags, problems


def _dmarc(inv, view: DnsView, domain: str) -> list[CheckResult]:
    names, record = ["dmarc.record", "dmarc.policy", "dmarc.rua"], f"_dmarc.{domain}"
    seen = view.observe(record, "TXT")
    if seen.values is None:
        return _unanswered(domain, names, record, seen)
    found = sorted(v for v in seen.values if re.match(r"\s*v\s*=\s*DMARC1\s*(;|$)", v))
    want = inv.domains[domain].dmarc
    if len(found) != 1:
        detail = f"{record}: {len(found) or 'no'} DMARC record(s)" + (" (receivers ignore them all)" if found else "")
        return [failed(GROUP, domain, n, detail, f"publish exactly one DMARC record: {SYNC}") for n in names]
    tags, problems = parse_dmarc(found[0])
    results = [failed(GROUP, domain, "dmarc.record", f"{'; '.join(problems)}: {found[0]}",
                      f"publish a valid record: {SYNC} --force") if problems
               else passed(GROUP, domain, "dmarc.record", found[0])]
    policy = tags.get("p", "none").lower()
    if _STRENGTH[policy] < _STRENGTH[want.policy]:
        results.append(failed(GROUP, domain, "dmarc.policy", f"p={policy}, weaker than the configured {want.policy}",
                              f"publish p={want.policy}: {SYNC}"))
    elif policy != want.policy:
        results.append(warned(GROUP, domain, "dmarc.policy", f"p={policy}, the inventory says {want.policy}",
                              f"{SYNC} (or set dmarc.policy: {policy} in the inventory)"))
    elif policy == "none":
        results.append(warned(GROUP, domain, "dmarc.policy", "p=none: receivers only report, spoofed mail is delivered",
                              f"set mailops_domains.{domain}.dmarc.policy to quarantine or reject "
                              "once reports are clean"))
    else:
        results.append(passed(GROUP, domain, "dmarc.policy", f"p={policy}"))
    published = {u.strip().split("!")[0].lower() for u in tags.get("rua", "").split(",") if u.strip()}
    missing = [u for u in want.rua if u.split("!")[0].lower() not in published]
    if missing:
        results.append(failed(GROUP, domain, "dmarc.rua", f"rua lacks {', '.join(missing)}",
                              f"publish rua={','.join(want.rua)}: {SYNC}"))
    else:
        results.append(passed(GROUP, domain, "dmarc.rua", f"rua={tags.get('rua', '')}" if want.rua
                              else "no report address configured"))
    return [_finish(r, seen) for r in results]


def _mta_sts(inv, view: DnsView, domain: str, ca_bundle: str | None) -> list[CheckResult]:
    settings, host = inv.domains[domain].mta_sts, f"mta-sts.{domain}"
    mx_hosts = [h.fqdn for h in inv.hosts_for(domain)]
    intended = mta_sts_policy(settings.mode, mx_hosts, settings.max_age)
    results = []
    seen = view.observe(f"_mta-sts.{domain}", "TXT")
    if seen.values is None:
        results += _unanswered(domain, ["mta-sts.record"], f"_mta-sts.{domain}", seen)
    else:
        found = sorted(v for v in seen.values if v.startswith("v=STSv1"))
        ids = [m.group(1) for v in found for m in [re.search(r"(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(;|$)", v)] if m]
        if len(found) != 1 or len(ids) != 1:
            results.append(failed(GROUP, domain, "mta-sts.record",
                                  f"_mta-sts.{domain}: {_short(found)} (want one 'v=STSv1; id=...')",
                                  f"publish it: {SYNC}"))
        elif ids[0] != mta_sts_id(intended):
            results.append(warned(GROUP, domain, "mta-sts.record", f"id={ids[0]} does not follow the policy "
                                  "(senders keep a cached old policy)", f"publish the new id: {SYNC}"))
        else:
            results.append(_finish(passed(GROUP, domain, "mta-sts.record", found[0]), seen))
    results.append(_mta_sts_policy(view, domain, host, settings, mx_hosts, ca_bundle))
    return results


def _mta_sts_policy(view: DnsView, domain: str, host: str, settings, mx_hosts: list[str],
                    ca_bundle: str | None) -> CheckResult:
    name = "mta-sts.policy"
    found = [view.resolve(host, t) for t in ("A", "AAAA")]
    if all(f is None for f in found):
        return inconclusive(GROUP, domain, name, f"no answer for the address of {host}")
    addresses = sorted(found[0] or ()) + sorted(found[1] or ())
    serve = f"serve the policy at https://{host}{MTA_STS_PATH} with a certificate valid for {host} " \
            "(`mailops provision`), or set mta_sts.mode: none"
    if not addresses:
        return failed(GROUP, domain, name, f"{host} has no address", f"publish {host} A/AAAA: {SYNC}")
    text, problems = None, []
    for address in addresses:
        try:
            text = fetch_mta_sts_policy(host, address, ca_bundle=ca_bundle)
            break
        except PolicyFetchError as e:
            problems.append(str(e))
    if text is None:
        return failed(GROUP, domain, name, "policy published but unusable: " + "; ".join(problems), serve)
    policy, problems = parse_mta_sts_policy(text)
    if policy.get("mode") != settings.mode:
        problems.append(f"mode {policy.get('mode')}, the inventory says {settings.mode}")
    # The published MX set is what senders match; the inventory's hosts when it cannot be read.
    targets = sorted(normalize_name(v.split()[1]) for v in view.resolve(domain, "MX") or ()) or mx_hosts
    uncovered = [t for t in targets if not any(_mx_pattern_matches(p, t) for p in policy.get("mx", []))]
    if uncovered:
        problems.append(f"MX {', '.join(uncovered)} matches no mx: line (senders refuse to deliver in enforce mode)")
    if problems:
        return failed(GROUP, domain, name, "; ".join(problems), serve)
    return passed(GROUP, domain, name, f"mode {policy['mode']}, max_age {policy['max_age']}, mx "
                  + ", ".join(policy["mx"]))


def _mx_pattern_matches(pattern: str, host: str) -> bool:
    pattern, host = normalize_name(pattern), normalize_name(host)
    if pattern.startswith("*."):
        return host.split(".", 1)[-1] == pattern[2:] and "." in host  # one label only (RFC 8461 4.1)
    return pattern == host


class PolicyFetchError(Exception):
    pass


def fetch_mta_sts_policy(host: str, address: str, *, ca_bundle: str | None = None, port: int = 443,
                         timeout: float = HTTPS_TIMEOUT) -> str:
    """GET https://<host>/.well-known/mta-sts.txt from ``address`` (SNI and Host: ``host``), no redirects."""
    context = ssl.create_default_context()  # the system CAs...
    if ca_bundle:
        context.load_verify_locations(ca_bundle)  # ...plus a private CA (the lab's)
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    where = f"https://{host}{MTA_STS_PATH} at {address}"
    try:
        conn.sock = context.wrap_socket(socket.create_connection((address, port), timeout=timeout),
                                        server_hostname=host)
        conn.request("GET", MTA_STS_PATH, headers={"Host": host, "User-Agent": "mailops-verify"})
        response = conn.getresponse()
        body = response.read(65536)
    except ssl.SSLCertVerificationError as e:
        raise PolicyFetchError(f"{where}: certificate not trusted ({e.verify_message})") from None
    except (OSError, http.client.HTTPException) as e:
        raise PolicyFetchError(f"{where}: {e or type(e).__name__}") from None
    finally:
        conn.close()
    if 300 <= response.status < 400:
        raise PolicyFetchError(f"{where}: redirect ({response.status} to {response.getheader('Location')}); "
                               "RFC 8461 3.3 forbids following it")
    if response.status != 200:
        raise PolicyFetchError(f"{where}: HTTP {response.status}")
    return body.decode("utf-8", "replace")


def parse_mta_sts_policy(text: str) -> tuple[dict, list[str]]:
    """RFC 8461 3.2 key: value lines -> ({version, mode, mx: [...], max_age}, problems)."""
    policy: dict = {"mx": []}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            key, value = key.strip(), value.strip()
            if key == "mx":
                policy["mx"].append(value)
            else:
                policy.setdefault(key, value)
    problems = []
    if policy.get("version") != "STSv1":
        problems.append("version: STSv1 missing")
    if policy.get("mode") not in ("enforce", "testing", "none"):
        problems.append(f"invalid mode {policy.get('mode')!r}")
    if not re.fullmatch(r"\d{1,10}", policy.get("max_age", "")) or int(policy["max_age"]) > 31557600:
        problems.append("max_age missing or invalid")
    if not policy["mx"] and policy.get("mode") != "none":
        problems.append("no mx: line")
    return policy, problems


def _tls_rpt(inv, view: DnsView, domain: str) -> list[CheckResult]:
    record, want = f"_smtp._tls.{domain}", inv.domains[domain].tls_rpt.rua
    seen = view.observe(record, "TXT")
    if seen.values is None:
        return _unanswered(domain, ["tls-rpt"], record, seen)
    found = sorted(v for v in seen.values if re.match(r"v=TLSRPTv1\s*(;|$)", v))
    fix = f"publish v=TLSRPTv1; rua={','.join(want)}: {SYNC}"
    if len(found) != 1:
        return [failed(GROUP, domain, "tls-rpt", f"{record}: {len(found) or 'no'} TLS-RPT record(s), want one", fix)]
    rua = re.search(r"rua=([^;]*)", found[0])
    published = {u.strip().lower() for u in (rua.group(1) if rua else "").split(",")}
    missing = [u for u in want if u.lower() not in published]
    if missing:
        return [failed(GROUP, domain, "tls-rpt", f"rua lacks {', '.join(missing)}: {found[0]}", fix)]
    return [_finish(passed(GROUP, domain, "tls-rpt", found[0]), seen)]


def _domain_dnsbl(view: DnsView, domain: str, zone: str) -> list[CheckResult]:
    return [_dnsbl_check(view, domain, f"dnsbl.{zone}", f"{domain}.{zone}", domain, zone)]


# --- per-host checks ------------------------------------------------------------------

def _ptr_fix(host, address: str) -> str:
    if host.reverse_dns_provider:
        return f"{SYNC} (sets the PTR of {address} to {host.fqdn} through {host.reverse_dns_provider})"
    return f"set the PTR of {address} to {host.fqdn} in your VPS provider's panel (or set mailops_reverse_dns_provider)"


def _fcrdns(view: DnsView, host, address: str, version: int) -> list[CheckResult]:
    name, ptr = f"fcrdns.ipv{version}", dns.reversename.from_address(address).to_text(omit_final_dot=True)
    seen = view.observe(ptr, "PTR")
    if seen.values is None:
        return _unanswered(host.name, [name], f"PTR of {address}", seen)
    names = sorted(normalize_name(v) for v in seen.values)
    if not names:
        return [failed(GROUP, host.name, name, f"{address} has no PTR record", _ptr_fix(host, address))]
    if host.fqdn not in names:
        return [failed(GROUP, host.name, name, f"PTR of {address} is {', '.join(names)}, not {host.fqdn}",
                       _ptr_fix(host, address))]
    back = view.resolve(host.fqdn, "A" if version == 4 else "AAAA")
    if back is None:
        return [inconclusive(GROUP, host.name, name, f"no answer for the address of {host.fqdn}")]
    if address not in {str(ipaddress.ip_address(a)) for a in back}:
        return [failed(GROUP, host.name, name, f"{host.fqdn} resolves to {_short(sorted(back))}, not {address}",
                       f"publish {host.fqdn} {'A' if version == 4 else 'AAAA'} {address}: {SYNC}")]
    return [_finish(passed(GROUP, host.name, name, f"{address} -> {host.fqdn} -> {address}"), seen)]


def smtp_names(address: str, *, port: int = 25, timeout: float = 10.0) -> tuple[str, str]:
    """The host names a server announces in its greeting and in its EHLO reply."""
    with smtplib.SMTP(timeout=timeout, local_hostname=NEUTRAL_EHLO) as smtp:
        _, banner = smtp.connect(address, port)
        code, reply = smtp.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)
    first = lambda text: normalize_name((text.decode("utf-8", "replace").split() or [""])[0])  # noqa: E731
    return first(banner), first(reply)


def _ehlo(view: DnsView, host, timeout: float, port: int = 25) -> list[CheckResult]:
    address = str(host.ipv4)
    ptrs = view.resolve(dns.reversename.from_address(address).to_text(), "PTR")
    expected = sorted(normalize_name(p) for p in ptrs)[0] if ptrs else host.fqdn
    try:
        greeting, ehlo = smtp_names(address, port=port, timeout=timeout)
    except (OSError, smtplib.SMTPException) as e:
        return [inconclusive(GROUP, host.name, "ehlo-name", f"cannot talk SMTP to {address}:{port} from this "
                             f"machine ({e or type(e).__name__}); outbound port {port} may be blocked here")]
    wrong = [f"{what} says {seen}" for what, seen in (("greeting", greeting), ("EHLO", ehlo)) if seen != expected]
    if wrong:
        return [failed(GROUP, host.name, "ehlo-name", f"{', '.join(wrong)}, but the PTR name is {expected}",
                       f"make Postfix announce {expected} (myhostname = {expected}; `mailops provision` sets it "
                       "from mailops_fqdn)")]
    return [passed(GROUP, host.name, "ehlo-name", f"greeting and EHLO say {expected} = PTR of {address}")]


def _address_dnsbl(view: DnsView, host, address: str, version: int, zone: str) -> list[CheckResult]:
    return [_dnsbl_check(view, host.name, f"dnsbl.ipv{version}.{zone}", dnsbl_query_name(address, zone),
                         address, zone)]


# --- entry points ------------------------------------------------------------------

def _run(jobs: list[Callable[[], list[CheckResult]]], workers: int) -> list[CheckResult]:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [r for results in pool.map(lambda job: job(), jobs) for r in results]


def _view(inv, reader: DnsReader | None) -> DnsView:
    return DnsView(reader or DnsReader(inv.dns_resolvers, timeout=QUERY_TIMEOUT))


def check_domains(inv, keystore, *, domains: list[str] | None = None, reader: DnsReader | None = None,
                  ca_bundle: str | None = None, workers: int = 32) -> list[CheckResult]:
    """DNS checks of every sending domain (or ``domains``), run concurrently."""
    names = domains or sorted(inv.domains)
    unknown = [d for d in names if d not in inv.domains]
    if unknown:
        raise MailopsError(f"{', '.join(unknown)}: not a sending domain of {inv.path}; "
                           f"choose from {', '.join(sorted(inv.domains))}")
    view, keys = _view(inv, reader), keystore.keys()
    jobs: list[Callable[[], list[CheckResult]]] = []
    for domain in names:
        settings = inv.domains[domain]
        jobs += [partial(_mx, inv, view, domain), partial(_spf, inv, view, domain),
                 partial(_dmarc, inv, view, domain)]
        signing = [k for k in keys if k.domain == domain and k.state in ("pending", "active")]
        jobs += [partial(_dkim, view, k) for k in signing]
        if not signing:
            jobs.append(lambda d=domain: [failed(GROUP, d, "dkim", "no pending or active DKIM key in the key store",
                                                 f"`mailops dkim generate --domain {d}`, then {SYNC}")])
        if settings.mta_sts.mode != "none":
            jobs.append(partial(_mta_sts, inv, view, domain, ca_bundle))
        if settings.tls_rpt is not None:
            jobs.append(partial(_tls_rpt, inv, view, domain))
        jobs += [partial(_domain_dnsbl, view, domain, zone) for zone in inv.dnsbl.domain_zones]
    return _run(jobs, workers)


def check_hosts(inv, *, hosts: list[str] | None = None, reader: DnsReader | None = None,
                smtp_timeout: float = 10.0, workers: int = 32) -> list[CheckResult]:
    """Reverse DNS, EHLO name and blocklists of every mail host (or ``hosts``), run concurrently."""
    try:
        chosen = [inv.host(h) for h in hosts] if hosts else list(inv.hosts)
    except KeyError as e:
        raise MailopsError(f"{e.args[0]}: not a mail host of {inv.path}; "
                           f"choose from {', '.join(h.name for h in inv.hosts)}") from None
    view = _view(inv, reader)
    jobs: list[Callable[[], list[CheckResult]]] = []
    for host in chosen:
        jobs.append(partial(_ehlo, view, host, smtp_timeout))
        for version in (4, 6):
            for _, address in _sending_addresses([host], version):
                jobs.append(partial(_fcrdns, view, host, address, version))
                jobs += [partial(_address_dnsbl, view, host, address, version, z) for z in inv.dnsbl.ip_zones]
    return _run(jobs, workers)

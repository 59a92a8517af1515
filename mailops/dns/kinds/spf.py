"""SPF (RFC 7208): the TXT record at a sending domain's apex.

:func:`value` builds the record from the inventory (the domain's mail hosts plus
``spf.ip4/ip6/include/all``); :func:`parse_spf` and :class:`SpfEvaluation`
(check_host() of RFC 7208 5) read a published one, and the evaluation is the one
DNS lookup counter: ``verify`` walks the published record with it and
``dns plan`` counts the record it is about to publish with :func:`count_lookups`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

from mailops.dns.query import reverse_name
from mailops.dns.records import normalize_name

LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
VOID_LIMIT = 2     # RFC 7208 4.6.4

# A lookup: (name, type) -> the values (TXT joined, MX "10 host.", PTR "host."), an empty set
# for NXDOMAIN/no data, or None when no usable answer came (timeout, SERVFAIL, REFUSED).
Lookup = Callable[[str, str], "frozenset[str] | None"]


def record(ips4: list[str], ips6: list[str], includes: list[str], all_: str) -> str:
    terms = ["v=spf1"] + [f"ip4:{ip}" for ip in ips4] + [f"ip6:{ip}" for ip in ips6]
    terms += [f"include:{name}" for name in includes] + [all_]
    return " ".join(terms)


def authorised(inv, domain: str) -> tuple[list[str], list[str], list[str]]:
    """(ip4, ip6, include) the domain's SPF record authorises: its mail hosts' addresses and
    the inventory's spf settings (the return-path domain authorises the same, kinds/return_path)."""
    settings, hosts = inv.domains[domain], inv.hosts_for(domain)
    ips4 = [str(h.ipv4) for h in hosts] + [str(n) for n in settings.spf.ip4]
    ips6 = [str(h.ipv6) for h in hosts if h.ipv6] + [str(n) for n in settings.spf.ip6]
    return ips4, ips6, list(settings.spf.include)


def value(inv, domain: str) -> str:
    """The domain's SPF record: its mail hosts' addresses and the inventory's spf settings."""
    return record(*authorised(inv, domain), inv.domains[domain].spf.all)


def count_lookups(text: str, resolve_txt: Callable[[str], list[str]] | None = None,
                  domain: str = "spf.invalid") -> int:
    """DNS lookups the record ``text`` costs a receiver, following includes when a resolver is given.

    Counts as :class:`SpfEvaluation` does for a published record, but leniently: an include
    that cannot be resolved, or holds no SPF record, costs its lookup and is not followed."""
    def lookup(name: str, rtype: str) -> frozenset[str]:
        if rtype != "TXT" or resolve_txt is None:
            return frozenset()
        return frozenset(resolve_txt(name))
    walk = SpfEvaluation(lookup, lenient=True)
    try:
        walk.evaluate(text, normalize_name(domain), 0)
    except SpfError:
        pass  # a loop: what was counted up to it already exceeds the limit
    return walk.lookups


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
    the most a receiver ever spends on the record.  ``lenient`` (counting a record before
    it is published): an include without a usable SPF record costs its lookup and is skipped."""

    def __init__(self, lookup: Lookup, ip: str | None = None, *, lenient: bool = False):
        self.lookup = lookup
        self.ip = ipaddress.ip_address(ip) if ip else None
        self.lenient = lenient
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
            if self.ip is not None and self.voids > VOID_LIMIT:
                raise SpfError("permerror", f"more than {VOID_LIMIT} void lookups")

    def _count(self) -> None:
        self.lookups += 1
        if self.ip is not None and self.lookups > LOOKUP_LIMIT:
            raise SpfError("permerror", f"more than {LOOKUP_LIMIT} DNS lookups")

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
        if depth > LOOKUP_LIMIT:
            raise SpfError("permerror", "include/redirect loop")
        found = self._query(domain, "TXT")
        if depth:
            self._void(found)
        records = spf_records(found)
        if not records:
            return "none"
        if len(records) > 1 and not self.lenient:
            raise SpfError("permerror", f"{domain} has {len(records)} SPF records")
        return self.evaluate(records[0], domain, depth)

    def evaluate(self, text: str, domain: str, depth: int) -> str:
        """check_host() for the record ``text`` found at ``domain``."""
        try:
            record = parse_spf(text)
        except SpfError:
            if self.lenient and depth:
                return "neutral"
            raise
        for term in record.terms:
            if self._matches(term, domain, depth):
                return term.qualifier
        if record.redirect and "all" not in [t.mechanism for t in record.terms]:
            self._count()
            target = self._expand(record.redirect, domain)
            result = self._check_host(target, depth + 1)
            if result == "none" and not self.lenient:
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
            if result == "none" and not self.lenient:
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
        names = self.lookup(reverse_name(str(ip)), "PTR") or frozenset()
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

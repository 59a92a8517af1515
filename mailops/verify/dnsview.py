"""How ``verify`` reads DNS: every query through :class:`mailops.dns.sync.DnsReader`
(the one query primitive, :func:`mailops.dns.query.ask`), with retries and one
cache per run on top, and a record set seen from the authoritative servers and
the resolvers at once (:class:`Observed`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from mailops.dns.kinds.spf import Lookup
from mailops.dns.records import normalize_name
from mailops.dns.sync import DnsReader
from mailops.verify.result import CheckResult, inconclusive, warned

GROUP = "dns"
QUERY_TIMEOUT = 1.5  # seconds per try: a lost UDP packet costs little...
ATTEMPTS = 3         # ...and one lost packet never decides a check


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
        lagging = [f"{src} answers {short(sorted(v))}" for src, v in answers.items() if v is not None and v != values]
        return Observed(values, "; ".join(lagging), ", ".join(s for s, v in answers.items() if v is None))


def short(items, limit: int = 80) -> str:
    text = ", ".join(items) if items else "nothing"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def finish(result: CheckResult, seen: Observed) -> CheckResult:
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


def unanswered(subject: str, names: list[str], what: str, seen: Observed) -> list[CheckResult]:
    return [inconclusive(GROUP, subject, n, f"{what}: no answer from {seen.silent} after {ATTEMPTS} tries")
            for n in names]


def with_known(lookup: Lookup, known: dict[tuple[str, str], frozenset[str]]) -> Lookup:
    """``lookup`` with some answers fixed (the authoritative view of the record being checked)."""
    def fixed(name: str, rtype: str) -> frozenset[str] | None:
        key = (normalize_name(name), rtype)
        return known[key] if key in known else lookup(name, rtype)
    return fixed

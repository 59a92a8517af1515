"""``dns plan`` / ``dns sync`` as a library: build providers, plan, apply, read back.

``sync_inventory`` is the whole ``dns sync`` (with callbacks for showing the plan,
confirming it and reporting each step); ``make_plan``, ``apply_plan`` and
``readback`` are its parts.

Nothing here prints: every function returns data or raises MailopsError.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import dns.exception
import dns.resolver

from mailops.dns.desired import DesiredState, desired_state
from mailops.dns.kinds import ptr, shows
from mailops.dns.plan import DEFAULT_THRESHOLD, ZonePlan, plan_zone
from mailops.dns.query import QueryFailed, ask, txt_text, value_of
from mailops.dns.records import Record
from mailops.errors import MailopsError

_WORKERS = 8  # DNS queries to the authoritative servers at once (read-back)
# Provider API calls at once (zone listings, zone applies); each provider's own limiter
# (mailops.dns.apilimit) keeps them under its documented rate limit.
API_WORKERS = 16


@dataclass
class PtrChange:
    provider: str
    address: str
    hostname: str
    old: str | None

    def to_dict(self) -> dict:
        return {"provider": self.provider, "address": self.address, "old": self.old, "new": self.hostname}


@dataclass
class Plan:
    zones: list[ZonePlan] = field(default_factory=list)
    ptr_changes: list[PtrChange] = field(default_factory=list)
    ptr_ok: list[PtrChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    desired: DesiredState | None = None

    @property
    def pending(self) -> int:
        return sum(len(z.rows()) for z in self.zones) + len(self.ptr_changes)

    @property
    def refused(self) -> list[str]:
        return [z.refused for z in self.zones if z.refused]

    @property
    def conflicts(self) -> list[str]:
        return [str(c) for z in self.zones for c in z.conflicts]

    def to_dict(self) -> dict:
        return {"pending": self.pending, "zones": [z.to_dict() for z in self.zones],
                "ptr": [p.to_dict() for p in self.ptr_changes], "warnings": self.warnings,
                "conflicts": self.conflicts, "refused": self.refused}


# --- providers ------------------------------------------------------------

def forward_provider(inv, name: str):
    cfg = inv.dns_providers.get(name)
    if cfg is None:
        raise MailopsError(f"{inv.path}: DNS provider {name!r} is not defined; add it under mailops_dns_providers")
    if cfg.type == "cloudflare":
        from mailops.dns.providers.cloudflare import CloudflareProvider
        return CloudflareProvider(name, inv.secret(cfg.api_token), cfg.api_base_url, owner=inv.dns_owner)
    if cfg.type == "hetzner":
        from mailops.dns.providers.hetzner import HetznerProvider
        return HetznerProvider(name, inv.secret(cfg.api_token), cfg.api_base_url, owner=inv.dns_owner)
    if cfg.type == "route53":
        from mailops.dns.providers.route53 import Route53Provider
        keys = (inv.secret(cfg.access_key_id), inv.secret(cfg.secret_access_key)) if cfg.access_key_id else None
        return Route53Provider(name, keys=keys, region=cfg.region, endpoint_url=cfg.endpoint_url,
                               zones=cfg.zones, owner=inv.dns_owner)
    from mailops.dns.providers.rfc2136 import Rfc2136Provider
    return Rfc2136Provider(name, server=cfg.server, port=cfg.port, key_name=cfg.tsig_key_name,
                           algorithm=cfg.tsig_algorithm, secret=inv.secret(cfg.tsig_secret), zones=cfg.zones,
                           owner=inv.dns_owner)


def reverse_provider(inv, name: str):
    cfg = inv.reverse_dns_providers.get(name)
    if cfg is None:
        raise MailopsError(f"{inv.path}: reverse DNS provider {name!r} is not defined; "
                           "add it under mailops_reverse_dns_providers")
    if cfg.type == "hcloud":
        from mailops.dns.providers.hcloud import HcloudReverseProvider
        return HcloudReverseProvider(name, inv.secret(cfg.api_token), cfg.api_base_url)
    from mailops.dns.providers.rfc2136 import Rfc2136ReverseProvider
    return Rfc2136ReverseProvider(name, server=cfg.server, port=cfg.port, key_name=cfg.tsig_key_name,
                                  algorithm=cfg.tsig_algorithm, secret=inv.secret(cfg.tsig_secret), zones=cfg.zones)


class Providers:
    """Providers built on first use (so a plan touching only RFC 2136 needs no Cloudflare token)."""

    def __init__(self, inv, overrides: dict | None = None):
        self.inv = inv
        self._built: dict[tuple[str, str], object] = {}
        for name, p in (overrides or {}).items():
            self._built[("reverse" if hasattr(p, "get_ptr") else "forward", name)] = p

    def forward(self, name: str):
        if ("forward", name) not in self._built:
            self._built[("forward", name)] = forward_provider(self.inv, name)
        return self._built[("forward", name)]

    def reverse(self, name: str):
        if ("reverse", name) not in self._built:
            self._built[("reverse", name)] = reverse_provider(self.inv, name)
        return self._built[("reverse", name)]

    def requests(self) -> dict[str, int]:
        return {name: getattr(p, "requests", 0) for (_, name), p in self._built.items()}


# --- plan -------------------------------------------------------------------

def _by_zone(providers: Providers, desired: DesiredState) -> dict[tuple[str, str], list[Record]]:
    zones: dict[tuple[str, str], list[Record]] = {}
    for pname, records in desired.forward.items():
        provider = providers.forward(pname)
        for rec in records:
            zone = provider.zone_for(rec.name)
            if zone is None:
                raise MailopsError(f"DNS provider {pname!r} ({provider.kind}) has no zone holding {rec.name}; "
                                   "create the zone there or change the domain's dns_provider")
            zones.setdefault((pname, zone), []).append(rec)
    return zones


def make_plan(inv, keystore=None, *, providers: Providers | None = None, force: bool = False,
              threshold: float = DEFAULT_THRESHOLD, resolve_txt: Callable | None = None) -> tuple[Plan, Providers]:
    providers = providers or Providers(inv)
    unresolved: list[str] = []
    if resolve_txt is None:
        resolve_txt = _txt_resolver(inv.dns_resolvers, unresolved)
    desired = desired_state(inv, keystore, resolve_txt=resolve_txt)
    desired.warnings += [f"SPF include {name} could not be resolved; its nested lookups are not counted"
                         for name in unresolved]
    plan = Plan(warnings=list(desired.warnings), desired=desired)
    zones = _by_zone(providers, desired)

    def one(item):
        (pname, zone), records = item
        provider = providers.forward(pname)
        return plan_zone(provider, zone, records, provider.list_records(zone), force=force, threshold=threshold)

    with ThreadPoolExecutor(API_WORKERS) as pool:
        plan.zones = list(pool.map(one, sorted(zones.items())))
    for want in desired.ptr:
        current = providers.reverse(want.provider).get_ptr(want.address)
        change = PtrChange(want.provider, want.address, want.hostname, current)
        (plan.ptr_ok if ptr.shows(current, want.hostname) else plan.ptr_changes).append(change)
    return plan, providers


def _txt_resolver(resolvers: list[str], unresolved: list[str]) -> Callable[[str], list[str]]:
    """TXT lookups for counting nested SPF includes (only called when a domain has includes)."""
    reader = None

    def resolve_txt(name: str) -> list[str]:
        nonlocal reader
        reader = reader or DnsReader(resolvers)
        try:
            return [txt_text(r) for r in reader.resolver.resolve(name, "TXT")]
        except dns.exception.DNSException:
            unresolved.append(name)
            return []
    return resolve_txt


# --- apply ------------------------------------------------------------------

class ApplyFailed(MailopsError):
    """Some zones failed to apply: says which, and exactly which zones were applied and which not."""

    def __init__(self, message: str, applied: list[str], failed: list[str], not_applied: list[str]):
        super().__init__(message)
        self.applied, self.failed, self.not_applied = applied, failed, not_applied


def _zone_label(zp: ZonePlan) -> str:
    return f"{zp.zone} ({zp.provider})"


def apply_plan(plan: Plan, providers: Providers, *, on_step: Callable[[str], None] = lambda _: None,
               workers: int = API_WORKERS) -> None:
    """Apply every zone's changes, then the PTRs. Refuses the whole plan if any zone was refused.

    Zones publishing address records are applied first, all of them concurrently, then the
    other zones concurrently (each zone atomic as its provider allows: one Cloudflare batch, one
    RFC 2136 UPDATE).  When a zone fails, no further zone is started (zones already in flight
    finish), no later group and no PTR is applied, and :class:`ApplyFailed` names the failed
    zones (their own errors), the zones applied and those not applied, all in plan order.
    ``on_step`` is called in plan order, from this thread, as each group starts."""
    if plan.refused:
        raise MailopsError("refusing to apply: " + plan.refused[0]
                           + (f" (and {len(plan.refused) - 1} more zone(s))" if len(plan.refused) > 1 else ""))
    # Zones that publish address records go first: MX and PTR elsewhere point at those names.
    todo = [z for z in plan.zones if z.changes]
    addresses = [z for z in todo if any(r.type in ("A", "AAAA") for r in z.changes.creates)]
    groups = [addresses, [z for z in todo if z not in addresses]]
    for zp in todo:  # built here, once, not raced for by the workers
        providers.forward(zp.provider)
    outcome: dict[int, object] = {}  # id(zone plan) -> None (applied) or the exception
    stop = threading.Event()

    def one(zp: ZonePlan):
        if stop.is_set():
            return  # not started: a zone failed before this one's turn
        try:
            providers.forward(zp.provider).apply(zp.zone, zp.changes)
            outcome[id(zp)] = None
        except Exception as exc:  # noqa: BLE001 - recorded, re-raised below after the others finish
            outcome[id(zp)] = exc
            stop.set()

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for group in groups:
            if stop.is_set():
                break
            for zp in group:
                on_step(f"{_zone_label(zp)}: {len(zp.rows())} change(s)")
            list(pool.map(one, group))
    failed = [zp for zp in todo if isinstance(outcome.get(id(zp)), BaseException)]
    if failed:
        errors = [outcome[id(zp)] for zp in failed]
        bug = next((e for e in errors if not isinstance(e, MailopsError)), None)
        if bug is not None:
            raise bug
        applied = [zp.zone for zp in todo if id(zp) in outcome and outcome[id(zp)] is None]
        not_applied = [zp.zone for zp in todo if id(zp) not in outcome]
        message = str(errors[0])
        if len(failed) > 1:
            message += "; also failed: " + "; ".join(str(e) for e in errors[1:])
        message += (f" [of {len(todo)} zone(s) to change: {len(applied)} applied, {len(failed)} failed and left "
                    f"unchanged ({', '.join(zp.zone for zp in failed)}), {len(not_applied)} not applied"
                    + (f" ({', '.join(not_applied)})" if not_applied else "")
                    + (f"; {len(plan.ptr_changes)} PTR change(s) not applied" if plan.ptr_changes else "")
                    + "; run again to apply the rest]")
        raise ApplyFailed(message, applied, [zp.zone for zp in failed], not_applied)
    for ch in plan.ptr_changes:
        on_step(f"PTR {ch.address} -> {ch.hostname} ({ch.provider})")
        providers.reverse(ch.provider).set_ptr(ch.address, ch.hostname)


# --- read back ----------------------------------------------------------------

class DnsReader:
    """Asks a zone's authoritative servers (found through the inventory's resolvers) or the
    resolvers themselves, each query sent by :func:`mailops.dns.query.ask`."""

    def __init__(self, resolvers: list[str] | None = None, timeout: float = 3.0):
        self.resolver = dns.resolver.Resolver(configure=not resolvers)
        if resolvers:
            self.resolver.nameservers = list(resolvers)
        self.resolver.cache = None
        self.resolver.lifetime = timeout
        self.timeout = timeout
        self._ns: dict[str, list[str]] = {}

    def authoritative(self, zone: str) -> list[str]:
        if zone not in self._ns:
            addrs: list[str] = []
            try:
                for ns in self.resolver.resolve(zone + ".", "NS"):
                    for rtype in ("A", "AAAA"):
                        try:
                            addrs += [r.address for r in self.resolver.resolve(ns.target, rtype)]
                        except dns.exception.DNSException:
                            pass
            except dns.exception.DNSException:
                pass
            self._ns[zone] = sorted(set(addrs))
        return self._ns[zone]

    def values(self, server: str, name: str, rtype: str) -> set[str] | None:
        """The values a server answers for (name, type); None when it gave no usable answer."""
        try:
            reply = ask(server, name, rtype, timeout=self.timeout)
        except QueryFailed:
            return None
        if not reply.usable:
            return None
        return {value_of(name, rtype, rd) for rd in reply.rdatas(rtype)}


def readback(inv, plan: Plan, providers: Providers, *, attempts: int = 10, delay: float = 1.0) -> list[str]:
    """After applying: what the provider and the authoritative servers do not show as planned."""
    problems: list[str] = []
    reader = DnsReader(inv.dns_resolvers)
    conflicted = {(c.wanted.name, c.wanted.type) for z in plan.zones for c in z.conflicts}
    wanted: list[tuple[ZonePlan, Record]] = []
    with ThreadPoolExecutor(API_WORKERS) as pool:
        listed = list(pool.map(lambda zp: providers.forward(zp.provider).list_records(zp.zone), plan.zones))
    for zp, existing in zip(plan.zones, listed):
        owned = {e.record.key for e in existing if e.owned or e.other_owner}
        records = [r for r in _by_zone(providers, plan.desired).get((zp.provider, zp.zone), [])
                   if (r.name, r.type) not in conflicted]
        for r in records:
            if r.key not in owned:
                problems.append(f"{r.name} {r.type}: {zp.provider} does not hold {r.value!r} as a mailops record")
            wanted.append((zp, r))

    def check(item) -> str | None:
        zp, r = item
        servers = providers.forward(zp.provider).nameservers(zp.zone) or reader.authoritative(zp.zone)
        if not servers:
            return f"{zp.zone}: no authoritative server found through the resolvers {inv.dns_resolvers or 'of /etc/resolv.conf'}"
        for attempt in range(attempts):
            missing = [s for s in servers if not shows(r.name, r.type, r.value, reader.values(s, r.name, r.type) or ())]
            if not missing:
                return None
            time.sleep(delay)
        return f"{r.name} {r.type}: {', '.join(missing)} do(es) not answer {r.value!r} (checked {attempts} times)"

    with ThreadPoolExecutor(_WORKERS) as pool:
        problems += [p for p in pool.map(check, wanted) if p]

    for ch in plan.ptr_changes + plan.ptr_ok:
        got = providers.reverse(ch.provider).get_ptr(ch.address)
        if not ptr.shows(got, ch.hostname):
            problems.append(f"PTR {ch.address}: {ch.provider} returns {got or 'nothing'}, wanted {ch.hostname}")
    return problems


@dataclass
class SyncResult:
    plan: Plan
    providers: Providers
    applied: bool = False
    readback: list[str] = field(default_factory=list)  # mismatches after applying (empty: all as planned)
    read_back: bool = False  # whether the read-back ran (not when changes were left pending)

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "applied": self.applied, "readback": self.readback,
                "requests": self.providers.requests()}


def sync_inventory(inv, keystore=None, *, force: bool = False, threshold: float = DEFAULT_THRESHOLD,
                   providers: Providers | None = None, confirm: Callable[[Plan], bool] = lambda _plan: True,
                   on_plan: Callable[[Plan], None] = lambda _plan: None,
                   on_step: Callable[[str], None] = lambda _step: None) -> SyncResult:
    """``dns sync``: plan, apply when ``confirm(plan)`` says so, then read back through the
    provider and the authoritative servers (also when nothing was pending)."""
    plan, providers = make_plan(inv, keystore, providers=providers, force=force, threshold=threshold)
    on_plan(plan)
    result = SyncResult(plan, providers)
    if plan.pending and confirm(plan):
        apply_plan(plan, providers, on_step=on_step)
        result.applied = True
    if result.applied or not plan.pending:
        result.readback, result.read_back = readback(inv, plan, providers), True
    return result


def sync(inv, keystore=None, *, force: bool = False, threshold: float = DEFAULT_THRESHOLD,
         providers: Providers | None = None) -> dict:
    """Plan, apply and read back in one go (for the demo and scripts): returns the figures."""
    result = sync_inventory(inv, keystore, force=force, threshold=threshold, providers=providers)
    problems, plan = result.readback, result.plan
    if problems:
        raise MailopsError(f"DNS read-back after sync: {problems[0]}"
                           + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return {"changes": plan.pending, "zones": len(plan.zones), "conflicts": plan.conflicts,
            "warnings": plan.warnings, "requests": result.providers.requests()}

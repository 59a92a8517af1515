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

Each check reads its record with the kind's own name and parser
(:mod:`mailops.dns.kinds`); DNS is read through :mod:`mailops.verify.dnsview`,
blocklists are decoded in :mod:`mailops.verify.dnsbl`.
"""

from __future__ import annotations

import ipaddress
import smtplib
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable

from mailops.dns.kinds import dkim, dmarc, mta_sts, mx, ptr, return_path, spf, tls_rpt
from mailops.dns.kinds.mta_sts import MTA_STS_PATH, PolicyFetchError, fetch_mta_sts_policy, parse_mta_sts_policy
from mailops.dns.kinds.spf import Lookup, SpfError, SpfEvaluation, parse_spf
from mailops.dns.records import normalize_name
from mailops.dns.sync import DnsReader
from mailops.errors import MailopsError
from mailops.verify.dnsbl import decode_dnsbl, dnsbl_check, dnsbl_query_name
from mailops.verify.dnsview import (ATTEMPTS, GROUP, QUERY_TIMEOUT, DnsView, Observed, finish, short,
                                    unanswered, with_known)
from mailops.verify.result import CheckResult, failed, inconclusive, passed, warned

# Names tests and callers reach through this module (their homes are the kind modules).
__all__ = ["ATTEMPTS", "MTA_STS_PATH", "DnsView", "Lookup", "Observed", "PolicyFetchError", "SpfError",
           "SpfEvaluation", "check_domains", "check_hosts", "decode_dnsbl", "dnsbl_query_name", "fcrdns",
           "fetch_mta_sts_policy", "parse_mta_sts_policy", "parse_spf", "smtp_names"]

NEUTRAL_EHLO = "mailops-verify.invalid"  # our own EHLO name: says nothing about the checked host
SYNC = "run `mailops dns sync --apply`"


# --- per-domain checks ---------------------------------------------------------------

def _mx(inv, view: DnsView, domain: str, *, hosts=None, prefix: str = "") -> list[CheckResult]:
    """The MX set names the domain's mail hosts (``hosts``, e.g. a return-path domain's; check names
    then start with ``prefix``) and each target resolves."""
    seen = view.observe(domain, "MX")
    name = prefix + "mx"
    if seen.values is None:
        return unanswered(domain, [name], "MX", seen)
    targets = mx.targets(seen.values)
    wanted = {h.fqdn for h in (hosts if hosts is not None else inv.hosts_for(domain))}
    if not targets or targets == {""}:
        what = "no MX record" if not targets else "null MX (0 .): the domain accepts no mail"
        return [failed(GROUP, domain, name, what, f"publish MX records for {', '.join(sorted(wanted))}: {SYNC}")]
    missing = sorted(wanted - targets)
    if missing:
        return [failed(GROUP, domain, name, f"MX targets {', '.join(sorted(targets))} lack {', '.join(missing)}",
                       f"add MX 10 {missing[0]}.: {SYNC}")]
    silent, unresolved = [], []
    for target in sorted(targets):
        addrs = [view.resolve(target, t) for t in ("A", "AAAA")]
        if any(a is None for a in addrs):
            silent.append(target)
        elif not any(addrs):
            unresolved.append(target)
    if unresolved:
        return [failed(GROUP, domain, name, f"MX target(s) {', '.join(unresolved)} have no A/AAAA record",
                       f"publish the address of {unresolved[0]} ({SYNC}) or remove it from the MX set")]
    if silent:
        return [inconclusive(GROUP, domain, name, f"no answer for the address of {', '.join(silent)}")]
    extra = sorted(targets - wanted)
    if extra:
        return [warned(GROUP, domain, name, f"extra MX targets not in the inventory: {', '.join(extra)}",
                       f"remove them or add their hosts to the domain's hosts: ({SYNC} afterwards)")]
    return [finish(passed(GROUP, domain, name, "MX " + ", ".join(sorted(targets)) + " all resolve"), seen)]


def _sending_addresses(hosts, version: int) -> list[tuple[str, str]]:
    """(host name, address) this version's mail leaves from (:func:`mailops.dns.kinds.ptr.sending_addresses`)."""
    return [(h.name, a) for h in hosts for a in ptr.sending_addresses(h) if ipaddress.ip_address(a).version == version]


def _spf(inv, view: DnsView, domain: str, *, hosts=None, prefix: str = "") -> list[CheckResult]:
    """One valid SPF record within the lookup limits that passes every sending address of the
    domain's mail hosts (``hosts``, e.g. a return-path domain's; check names start with ``prefix``)."""
    hosts = hosts if hosts is not None else inv.hosts_for(domain)
    families = [v for v in (4, 6) if _sending_addresses(hosts, v)]
    names = [prefix + n for n in ["spf.record", "spf.lookups", "spf.void-lookups"]
             + [f"spf.authorises-ipv{v}" for v in families]]
    seen = view.observe(domain, "TXT")
    if seen.values is None:
        return unanswered(domain, names, "TXT", seen)
    records = spf.spf_records(seen.values)
    fix = f"publish one valid SPF record: {SYNC}"
    if not records:
        results = [failed(GROUP, domain, prefix + "spf.record", "no SPF record (v=spf1)", fix)]
    elif len(records) > 1:
        results = [failed(GROUP, domain, prefix + "spf.record",
                          f"{len(records)} SPF records: receivers return permerror",
                          f"merge them into one, then {SYNC} --force")]
    else:
        try:
            notes = parse_spf(records[0]).notes
            results = [failed(GROUP, domain, prefix + "spf.record", "; ".join(notes) + f": {records[0]}", fix)
                       if notes else passed(GROUP, domain, prefix + "spf.record", records[0])]
        except SpfError as e:
            results = [failed(GROUP, domain, prefix + "spf.record", f"permerror: {e.reason}: {records[0]}", fix)]

    lookup = with_known(view.resolve, {(domain, "TXT"): seen.values})
    walk = SpfEvaluation(lookup)
    result, reason = walk.run(domain)
    stopped = f" (evaluation stopped: {reason})" if reason else ""
    for name, count, limit, how in (
            ("spf.lookups", walk.lookups, spf.LOOKUP_LIMIT, "replace include:/a/mx terms by ip4:/ip6: ranges"),
            ("spf.void-lookups", walk.voids, spf.VOID_LIMIT, "remove the terms whose names do not exist")):
        detail = f"{count} {name[4:].replace('-', ' ')} (limit {limit}, RFC 7208 4.6.4){stopped}"
        name = prefix + name
        if result == "temperror":
            results.append(inconclusive(GROUP, domain, name, detail))
        elif count > limit:
            results.append(failed(GROUP, domain, name, detail + ": receivers return permerror", how))
        else:
            results.append(passed(GROUP, domain, name, detail))

    for version in families:
        name, missing, silent = f"{prefix}spf.authorises-ipv{version}", [], []
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
    return [finish(r, seen) for r in results]


def _dkim(view: DnsView, key) -> list[CheckResult]:
    name, record = f"dkim.{key.selector}", key.record_name
    seen = view.observe(record, "TXT")
    if seen.values is None:
        return unanswered(key.domain, [name], record, seen)
    fix = f"publish the key store's record: {SYNC} (add --force if another record holds the selector)"
    if len(seen.values) != 1:
        return [failed(GROUP, key.domain, name, f"{record}: {len(seen.values) or 'no'} TXT record(s), want one "
                       f"({key.state} key)", fix)]
    found = next(iter(seen.values))
    problems = dkim.problems(key.dns_value, found)
    if problems:
        return [failed(GROUP, key.domain, name, f"{record}: " + "; ".join(problems), fix)]
    if dkim.parse_tags(key.dns_value).get("k", "rsa").lower() == "rsa":
        bits = dkim.rsa_bits(dkim.parse_tags(found)["p"])
        if bits is None:
            return [failed(GROUP, key.domain, name, f"{record}: p= is not an RSA SubjectPublicKeyInfo", fix)]
        if bits < dkim.MIN_RSA_BITS:
            return [failed(GROUP, key.domain, name, f"{record}: {bits}-bit RSA (receivers want >= 2048)",
                           "rotate to a 2048-bit key: `mailops dkim rotate`, then " + SYNC)]
    if dkim.is_testing(found):
        return [failed(GROUP, key.domain, name, f"{record}: t=y (test mode: receivers ignore failures)",
                       f"remove t=y from the record: {SYNC} --force")]
    return [finish(passed(GROUP, key.domain, name, f"{record} publishes the {key.state} key"), seen)]


def _dmarc(inv, view: DnsView, domain: str) -> list[CheckResult]:
    names, record = ["dmarc.record", "dmarc.policy", "dmarc.rua"], dmarc.record_name(domain)
    seen = view.observe(record, "TXT")
    if seen.values is None:
        return unanswered(domain, names, record, seen)
    found = dmarc.dmarc_records(seen.values)
    want = inv.domains[domain].dmarc
    if len(found) != 1:
        detail = f"{record}: {len(found) or 'no'} DMARC record(s)" + (" (receivers ignore them all)" if found else "")
        return [failed(GROUP, domain, n, detail, f"publish exactly one DMARC record: {SYNC}") for n in names]
    tags, problems = dmarc.parse_dmarc(found[0])
    results = [failed(GROUP, domain, "dmarc.record", f"{'; '.join(problems)}: {found[0]}",
                      f"publish a valid record: {SYNC} --force") if problems
               else passed(GROUP, domain, "dmarc.record", found[0])]
    policy = tags.get("p", "none").lower()
    if dmarc.STRENGTH[policy] < dmarc.STRENGTH[want.policy]:
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
    return [finish(r, seen) for r in results]


def _mta_sts(inv, view: DnsView, domain: str, ca_bundle: str | None) -> list[CheckResult]:
    settings, host = inv.domains[domain].mta_sts, mta_sts.policy_host(domain)
    mx_hosts = [h.fqdn for h in inv.hosts_for(domain)]
    record = mta_sts.record_name(domain)
    results = []
    seen = view.observe(record, "TXT")
    if seen.values is None:
        results += unanswered(domain, ["mta-sts.record"], record, seen)
    else:
        found = mta_sts.announcements(seen.values)
        ids = mta_sts.announced_ids(found)
        if len(found) != 1 or len(ids) != 1:
            results.append(failed(GROUP, domain, "mta-sts.record",
                                  f"{record}: {short(found)} (want one 'v=STSv1; id=...')",
                                  f"publish it: {SYNC}"))
        elif ids[0] != mta_sts.mta_sts_id(mta_sts.policy_for(inv, domain)):
            results.append(warned(GROUP, domain, "mta-sts.record", f"id={ids[0]} does not follow the policy "
                                  "(senders keep a cached old policy)", f"publish the new id: {SYNC}"))
        else:
            results.append(finish(passed(GROUP, domain, "mta-sts.record", found[0]), seen))
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
    targets = sorted(mx.targets(view.resolve(domain, "MX") or ())) or mx_hosts
    uncovered = [t for t in targets if not any(mta_sts.mx_pattern_matches(p, t) for p in policy.get("mx", []))]
    if uncovered:
        problems.append(f"MX {', '.join(uncovered)} matches no mx: line (senders refuse to deliver in enforce mode)")
    if problems:
        return failed(GROUP, domain, name, "; ".join(problems), serve)
    return passed(GROUP, domain, name, f"mode {policy['mode']}, max_age {policy['max_age']}, mx "
                  + ", ".join(policy["mx"]))



def _tls_rpt(inv, view: DnsView, domain: str) -> list[CheckResult]:
    record, want = tls_rpt.record_name(domain), inv.domains[domain].tls_rpt.rua
    seen = view.observe(record, "TXT")
    if seen.values is None:
        return unanswered(domain, ["tls-rpt"], record, seen)
    found = tls_rpt.tls_rpt_records(seen.values)
    fix = f"publish v=TLSRPTv1; rua={','.join(want)}: {SYNC}"
    if len(found) != 1:
        return [failed(GROUP, domain, "tls-rpt", f"{record}: {len(found) or 'no'} TLS-RPT record(s), want one", fix)]
    published = tls_rpt.report_addresses(found[0])
    missing = [u for u in want if u.lower() not in published]
    if missing:
        return [failed(GROUP, domain, "tls-rpt", f"rua lacks {', '.join(missing)}: {found[0]}", fix)]
    return [finish(passed(GROUP, domain, "tls-rpt", found[0]), seen)]


def _return_path(inv, view: DnsView, return_domain: str) -> list[CheckResult]:
    """The return-path domain's MX (the mail hosts of the domains using it) and SPF (their
    addresses pass), checked like a sending domain's (kinds/return_path publishes them)."""
    hosts = return_path.hosts(inv, return_domain)
    return (_mx(inv, view, return_domain, hosts=hosts, prefix="return-path.")
            + _spf(inv, view, return_domain, hosts=hosts, prefix="return-path."))


def _domain_dnsbl(view: DnsView, domain: str, zone: str) -> list[CheckResult]:
    return [dnsbl_check(view, domain, f"dnsbl.{zone}", f"{domain}.{zone}", domain, zone)]


# --- per-host checks ------------------------------------------------------------------

def _ptr_fix(host, address: str) -> str:
    if host.reverse_dns_provider:
        return f"{SYNC} (sets the PTR of {address} to {host.fqdn} through {host.reverse_dns_provider})"
    return f"set the PTR of {address} to {host.fqdn} in your VPS provider's panel (or set mailops_reverse_dns_provider)"


def fcrdns(view: DnsView, host, address: str, version: int) -> list[CheckResult]:
    """Forward-confirmed reverse DNS of one sending address (also a row of the requirements group)."""
    name = f"fcrdns.ipv{version}"
    seen = view.observe(ptr.record_name(address), "PTR")
    if seen.values is None:
        return unanswered(host.name, [name], f"PTR of {address}", seen)
    names = ptr.names(seen.values)
    if not names:
        return [failed(GROUP, host.name, name, f"{address} has no PTR record", _ptr_fix(host, address))]
    if host.fqdn not in names:
        return [failed(GROUP, host.name, name, f"PTR of {address} is {', '.join(names)}, not {host.fqdn}",
                       _ptr_fix(host, address))]
    back = view.resolve(host.fqdn, "A" if version == 4 else "AAAA")
    if back is None:
        return [inconclusive(GROUP, host.name, name, f"no answer for the address of {host.fqdn}")]
    if address not in {str(ipaddress.ip_address(a)) for a in back}:
        return [failed(GROUP, host.name, name, f"{host.fqdn} resolves to {short(sorted(back))}, not {address}",
                       f"publish {host.fqdn} {'A' if version == 4 else 'AAAA'} {address}: {SYNC}")]
    return [finish(passed(GROUP, host.name, name, f"{address} -> {host.fqdn} -> {address}"), seen)]


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
    ptrs = view.resolve(ptr.record_name(address), "PTR")
    expected = ptr.names(ptrs)[0] if ptrs else host.fqdn
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
    return [dnsbl_check(view, host.name, f"dnsbl.ipv{version}.{zone}", dnsbl_query_name(address, zone),
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
    if getattr(inv, "return_path", None) is not None:
        jobs += [partial(_return_path, inv, view, rp) for rp, senders in sorted(inv.return_path_domains().items())
                 if set(senders) & set(names)]
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
                jobs.append(partial(fcrdns, view, host, address, version))
                jobs += [partial(_address_dnsbl, view, host, address, version, z) for z in inv.dnsbl.ip_zones]
    return _run(jobs, workers)

"""`mailops verify`, group returnpath: the addresses receivers send things back to accept mail.

Each DMARC rua/ruf and TLS-RPT mailto: address of the inventory, and (with
``mailops_return_path``) a freshly minted return-path address of each sending domain, gets
an SMTP RCPT probe at every MX of its domain: EHLO, ``MAIL FROM:<>`` (what a bounce or
report carries), ``RCPT TO``, then RSET and QUIT - never DATA, so nothing is delivered.

A group of its own, not part of ``dns``: these checks talk SMTP to port 25 (which the machine
running verify may not reach, so they can be run or left out on their own with ``--only``)
and the return-path probe needs the key secret; what they prove is that mail is accepted,
which DNS alone cannot show.

Outcomes: every reachable MX accepts -> pass; one refuses (4xx or 5xx) -> fail with the fix;
no MX answered on port 25, or DNS gave no answer -> inconclusive, never pass.
"""

from __future__ import annotations

import smtplib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from mailops.errors import MailopsError
from mailops.verify.result import CheckResult, failed, inconclusive, passed

GROUP = "returnpath"
NEUTRAL_EHLO = "mailops-verify.invalid"
SYNC = "run `mailops dns sync --apply`"
PROVISION = "run `mailops provision` (role returnpath)"

# (name, rtype) -> values, an empty set for no data, None for no answer (dnsview.DnsView.resolve)
Resolve = Callable[[str, str], "frozenset[str] | None"]


def rcpt_probe(address: str, server: str, *, port: int = 25, timeout: float = 10.0) -> tuple[int, str]:
    """(code, text) of the RCPT TO reply for ``address`` at ``server`` after MAIL FROM:<>.
    A refused MAIL FROM is returned as its own reply.  OSError/SMTPException when it cannot talk."""
    with smtplib.SMTP(timeout=timeout, local_hostname=NEUTRAL_EHLO) as smtp:
        smtp.connect(server, port)
        code, _ = smtp.ehlo()
        if code != 250:
            smtp.helo()
        code, reply = smtp.mail("")
        if code == 250:
            code, reply = smtp.rcpt(address)
            smtp.rset()
    return code, " ".join(reply.decode("utf-8", "replace").split())[:200]


def _mx_targets(resolve: Resolve, domain: str) -> list[str] | None:
    values = resolve(domain, "MX")
    if values is None:
        return None
    ordered = []
    for value in values:
        parts = value.split()
        if len(parts) == 2 and parts[1] not in (".", ""):
            ordered.append((int(parts[0]) if parts[0].isdigit() else 0, parts[1].rstrip(".").lower()))
    return [name for _, name in sorted(ordered)]


def probe_address(address: str, *, subject: str, name: str, reject_fix: str, resolve: Resolve,
                  ours: bool = True, port: int = 25, timeout: float = 10.0) -> CheckResult:
    """One check: every MX of the address's domain accepts RCPT TO:<address> from the null sender."""
    domain = address.rpartition("@")[2].lower()
    targets = _mx_targets(resolve, domain)
    if targets is None:
        return inconclusive(GROUP, subject, name, f"no DNS answer for the MX of {domain}")
    if not targets:
        return failed(GROUP, subject, name, f"{domain} has no MX: nothing can deliver to {address}",
                      f"publish its MX records: {SYNC}" if ours
                      else f"use an address whose domain has an MX instead of {address}")
    accepted, refused, unreachable = [], [], []
    for target in targets:
        addresses = [a for rtype in ("A", "AAAA") for a in sorted(resolve(target, rtype) or ())]
        if not addresses:
            unreachable.append(f"{target} (no address)")
            continue
        for server in addresses:
            try:
                code, text = rcpt_probe(address, server, port=port, timeout=timeout)
            except (OSError, smtplib.SMTPException) as exc:
                unreachable.append(f"{target} [{server}]:{port} ({exc or type(exc).__name__})")
                continue
            (accepted if 200 <= code < 300 else refused).append(f"{target} [{server}]: {code} {text}")
            break
    if refused:
        return failed(GROUP, subject, name, f"{address} refused by " + "; ".join(refused), reject_fix)
    if unreachable:
        return inconclusive(GROUP, subject, name, f"{address}: cannot talk SMTP to " + "; ".join(unreachable)
                            + " from this machine (outbound port 25 may be blocked here)")
    return passed(GROUP, subject, name, f"{address} accepted (MAIL FROM:<>) by " + ", ".join(
        a.split(":")[0] for a in accepted))


def probes(inv, keys: list[bytes] | None, domains: list[str] | None = None
           ) -> list[tuple[str, str, str, str, bool]]:
    """(address, subject, check name, fix when refused, in an inventory domain) of every address to
    probe, for every sending domain or those in ``domains``."""
    from mailops.inventory.model import report_mailtos
    jobs, seen = [], set()
    for domain, settings in sorted(inv.domains.items()):
        if domains is not None and domain not in domains:
            continue
        for where, address in report_mailtos(settings):
            if (where, address) in seen:
                continue
            seen.add((where, address))
            ours = address.rpartition("@")[2] in inv.domains
            fix = (f"the mail hosts accept {address} only with mailops_return_path set: set it and {PROVISION}"
                   if ours and inv.return_path is None else
                   f"{PROVISION}: the mail hosts accept the report addresses the inventory names" if ours else
                   f"make {address} accept mail (reports come from the null sender) or point {where} elsewhere")
            jobs.append((address, domain, f"rcpt.{where}", fix, ours))
    if inv.return_path is not None and keys:
        from mailops.returnpath import address as tokens
        for rp_domain, senders in sorted(inv.return_path_domains().items()):
            if domains is not None and not set(senders) & set(domains):
                continue
            minted = tokens.encode(keys, senders[0], return_domain=rp_domain).address
            jobs.append((minted, rp_domain, "rcpt.return-path",
                         f"{PROVISION} on every mail host, and make /etc/mailops/returnpath.keys there hold the keys "
                         "of mailops_return_path.key (tokens are checked with them)", True))
    return jobs


def check(inv, *, resolve: Resolve, domains: list[str] | None = None, port: int = 25, timeout: float = 10.0,
          workers: int = 16) -> list[CheckResult]:
    """Probe every report address and the return path of each return-path domain (of every
    sending domain, or of ``domains``), concurrently."""
    results: list[CheckResult] = []
    keys = None
    if inv.return_path is not None:
        from mailops.inventory.secrets import resolve_hex_keys
        try:
            keys = resolve_hex_keys(inv.return_path.key, inv.path)
        except MailopsError as exc:
            results.append(failed(GROUP, "mailops_return_path", "rcpt.return-path",
                                  f"cannot mint a return-path address: {exc}",
                                  "fix mailops_return_path.key (`mailops inventory check` shows the problem)"))
    jobs = probes(inv, keys, domains)
    if not jobs:
        return results
    with ThreadPoolExecutor(max(1, min(workers, len(jobs)))) as pool:
        results += pool.map(lambda job: probe_address(job[0], subject=job[1], name=job[2], reject_fix=job[3],
                                                      ours=job[4], resolve=resolve, port=port,
                                                      timeout=timeout), jobs)
    return results

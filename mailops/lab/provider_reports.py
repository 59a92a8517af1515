"""The lab receiver's aggregate reports: DMARC (RFC 7489) and TLS-RPT (RFC 8460).

A mailbox provider tells each domain owner, once a day, what it saw: who sent mail in
the domain's name and how it authenticated (DMARC aggregate report, to the ``rua`` of
``_dmarc.<domain>``), and how its own outbound TLS sessions to the domain's mail
servers went (TLS-RPT, to the ``rua`` of ``_smtp._tls.<domain>``).  The lab receiver
(mx.inbox.test) does the same, on demand (`mailops lab reports`), from what it really
recorded - nothing here is a fixed file:

* DMARC (:mod:`mailops.lab.dmarc_reports`): OpenDMARC's HistoryFile on the receiver.
  ``policy_published`` and the ``rua`` addresses are what the lab DNS publishes when the
  report is made, as a provider's reporter reads them.  An ``rua`` outside the policy
  domain's organisational domain is used only if ``<domain>._report._dmarc.<rua domain>``
  authorises it (RFC 7489 7.1).
* TLS-RPT (:mod:`mailops.lab.tls_reports`): the receiver's Postfix log (its journal).  A
  domain named explicitly (``domains``) is reported even without sessions, with zero
  counts (a receiver that only delivered locally, as in a self-contained test, has none).

The reports are mailed the way Gmail mails them and are submitted to the receiver's own
Postfix, so they leave from the receiver's IP.  They are not DKIM-signed.

The builders (parse_history, dmarc_records, dmarc_xml, tls_sessions, tlsrpt_json, the
message builders) are pure functions in those two modules; this one reads the lab DNS,
the receiver's files and log, and send_reports() is the part that talks to the lab."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mailops.dns.kinds.dkim import parse_tags
from mailops.errors import MailopsError
from mailops.lab import core, receiver
from mailops.lab.config import RECEIVER_NAME, LabConfig
from mailops.lab.dmarc_reports import DMARC_FROM, HistoryEntry, dmarc_message, dmarc_records, dmarc_xml, parse_history
from mailops.lab.tls_reports import TLSRPT_FROM, TlsSession, tls_sessions, tlsrpt_json, tlsrpt_message
from mailops.ops.logs import journal_command

DEFAULT_PERIOD = 24 * 3600


# -- DNS: what the domains publish ----------------------------------------------------------------

def mailto_addresses(value: str) -> list[str]:
    """The addresses of a DMARC/TLS-RPT ``rua`` tag (size limits ``!10m`` dropped; other URIs skipped)."""
    found = []
    for uri in value.split(","):
        uri = uri.strip()
        if uri[:7].lower() != "mailto:":
            continue
        address = uri[7:].partition("!")[0].strip()
        local, at, domain = address.rpartition("@")
        if at and local and re.fullmatch(r"[A-Za-z0-9._+=-]+", local) and re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            found.append(f"{local}@{domain.lower().rstrip('.')}")
    return found


def _org_domain(domain: str) -> str:
    # the lab's zones are all registered right under a TLD (shop.test, inbox.test)
    return ".".join(domain.rstrip(".").split(".")[-2:])


class Resolver:
    """TXT lookups at the lab DNS (the receiver's resolver), tags parsed."""

    def __init__(self, server: str, port: int = 53) -> None:
        self.server, self.port = server, port

    def txt(self, name: str) -> list[str]:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rdatatype

        try:
            resp = dns.query.udp(dns.message.make_query(name, "TXT"), self.server, port=self.port, timeout=3)
        except (dns.exception.DNSException, OSError) as exc:
            raise MailopsError(f"TXT lookup of {name} at the lab DNS {self.server} failed: {exc}") from None
        return [b"".join(rd.strings).decode("utf-8", "replace")
                for rrset in resp.answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset]

    def record(self, name: str, version: str) -> dict | None:
        for text in self.txt(name):
            tags = parse_tags(text)
            if tags.get("v", "").upper() == version.upper():
                return tags
        return None


def dmarc_destinations(resolver: Resolver, domain: str) -> tuple[dict | None, list[str], list[str]]:
    """(published policy tags, rua addresses to use, addresses refused and why)."""
    policy = resolver.record(f"_dmarc.{domain}", "DMARC1")
    if policy is None:
        return None, [], []
    use, refused = [], []
    for address in mailto_addresses(policy.get("rua", "")):
        rua_domain = address.rpartition("@")[2]
        if _org_domain(rua_domain) == _org_domain(domain) or \
                resolver.record(f"{domain}._report._dmarc.{rua_domain}", "DMARC1") is not None:
            use.append(address)
        else:
            refused.append(f"{address}: {rua_domain} does not authorise reports for {domain} "
                           f"({domain}._report._dmarc.{rua_domain} has no v=DMARC1 record)")
    return policy, use, refused


# -- sending, from the receiver ---------------------------------------------------------------------

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _report_id(end: int) -> str:
    return f"{end}.{uuid.uuid4().hex[:12]}"


def submit(cfg: LabConfig, raw: bytes, sender: str, recipients: list[str]) -> None:
    """Hand a message to the receiver's Postfix (sendmail on mx), as the receiver's own mail."""
    command = "/usr/sbin/sendmail -i -f " + shlex.quote(sender) + " -- " + \
        " ".join(shlex.quote(r) for r in recipients)
    proc = core.ssh_run(cfg, RECEIVER_NAME, command, input=raw, timeout=60)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else proc.stderr
        raise MailopsError(f"the receiver's sendmail refused the report ({proc.returncode}): "
                           f"{' '.join(err.split())[:300]}")


def receiver_log(cfg: LabConfig, since: float) -> list[str]:
    """The receiver's Postfix log lines since an epoch time (its journal, short-iso)."""
    proc = core.ssh_run(cfg, RECEIVER_NAME, journal_command(datetime.fromtimestamp(since, timezone.utc)),
                        timeout=120)
    if proc.returncode != 0:
        raise MailopsError(f"cannot read the receiver's mail log: {' '.join(proc.stderr.split())[:300]}")
    return proc.stdout.splitlines()


def _read_machine_file(root: Path, path: str) -> str:
    try:
        return (root / path.lstrip("/")).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def send_reports(cfg: LabConfig | None = None, *, since: float | None = None, until: float | None = None,
                 domains: list[str] | None = None, kinds: tuple[str, ...] = ("dmarc", "tls"),
                 log: Log = _quiet) -> dict:
    """Make the receiver send its DMARC aggregate and TLS-RPT reports for [since, until] (whole seconds).

    since: epoch seconds (default: a day before until); until: default now.  domains:
    only these policy domains (and, for TLS-RPT, these even without sessions).
    Returns what was sent and what was skipped, with the reason."""
    cfg = cfg or LabConfig()
    end = int(until if until is not None else time.time())
    begin = int(since if since is not None else end - DEFAULT_PERIOD)
    if begin >= end:
        raise MailopsError("the report period is empty: --since must be before now")
    wanted = {d.lower().rstrip(".") for d in domains} if domains else None
    root = core.machine_root(cfg, RECEIVER_NAME)
    resolver = Resolver(cfg.gateway_ipv4, core.dns_config(cfg).port)
    result: dict = {"period": {"begin": begin, "end": end}, "dmarc": [], "tls": [], "skipped": []}

    if "dmarc" in kinds:
        entries = [e for e in parse_history(_read_machine_file(root, receiver.DMARC_HISTORY))
                   if begin <= e.received <= end]
        by_domain: dict[str, list[HistoryEntry]] = {}
        for e in entries:
            by_domain.setdefault(e.pdomain or e.from_domain, []).append(e)
        for domain in sorted(by_domain):
            if wanted is not None and domain not in wanted:
                continue
            policy, to, refused = dmarc_destinations(resolver, domain)
            result["skipped"] += [f"DMARC report for {domain}: {r}" for r in refused]
            if policy is None or not to:
                result["skipped"].append(f"DMARC report for {domain}: _dmarc.{domain} publishes no usable "
                                         "rua=mailto: address")
                continue
            records = dmarc_records(by_domain[domain])
            if not records:
                continue
            report_id = _report_id(end)
            xml = dmarc_xml(report_id=report_id, begin=begin, end=end, policy_domain=domain,
                            policy=policy, records=records)
            submit(cfg, dmarc_message(domain=domain, report_id=report_id, begin=begin, end=end, xml=xml,
                                      to=to), DMARC_FROM, to)
            log(f"DMARC report for {domain} ({sum(r['count'] for r in records)} messages) sent to {', '.join(to)}")
            result["dmarc"].append({"domain": domain, "report_id": report_id, "to": to, "records": records})

    if "tls" in kinds:
        sessions = [s for s in tls_sessions(receiver_log(cfg, begin)) if begin <= s.time < end + 1]
        by_domain_tls: dict[str, list[TlsSession]] = {d: [] for d in (wanted or ())}
        for s in sessions:
            if wanted is None or s.domain in wanted:
                by_domain_tls.setdefault(s.domain, []).append(s)
        for domain in sorted(by_domain_tls):
            tags = resolver.record(f"_smtp._tls.{domain}", "TLSRPTv1")
            to = mailto_addresses(tags.get("rua", "")) if tags else []
            if not to:
                result["skipped"].append(f"TLS report for {domain}: _smtp._tls.{domain} publishes no "
                                         "rua=mailto: address")
                continue
            report_id = _report_id(end)
            report = tlsrpt_json(report_id=report_id, begin=begin, end=end, policy_domain=domain,
                                 sessions=by_domain_tls[domain],
                                 sending_ips=(cfg.receiver.ipv4, cfg.receiver.ipv6))
            submit(cfg, tlsrpt_message(domain=domain, report_id=report_id, begin=begin, end=end,
                                       report=report, to=to), TLSRPT_FROM, to)
            log(f"TLS report for {domain} ({len(by_domain_tls[domain])} sessions) sent to {', '.join(to)}")
            result["tls"].append({"domain": domain, "report_id": report_id, "to": to,
                                  "report": json.loads(report)})
    return result

"""The lab receiver's aggregate reports: DMARC (RFC 7489) and TLS-RPT (RFC 8460).

A mailbox provider tells each domain owner, once a day, what it saw: who sent mail in
the domain's name and how it authenticated (DMARC aggregate report, to the ``rua`` of
``_dmarc.<domain>``), and how its own outbound TLS sessions to the domain's mail
servers went (TLS-RPT, to the ``rua`` of ``_smtp._tls.<domain>``).  The lab receiver
(mx.inbox.test) does the same, on demand (`mailops lab reports`), from what it really
recorded - nothing here is a fixed file:

* DMARC: OpenDMARC's HistoryFile on the receiver (one block of ``key value`` lines per
  message it evaluated: client IP, From and envelope domains, the SPF result from
  policyd-spf, each DKIM signature's result, alignment, the disposition it applied).
  Messages of one policy domain (the domain the DMARC record was found at) in the
  period become one report; messages with the same source IP, identifiers and results
  become one record with their count.  ``policy_published`` and the ``rua`` addresses
  are what the lab DNS publishes when the report is made, as a provider's reporter
  reads them.  An ``rua`` outside the policy domain's organisational domain is used only
  if ``<domain>._report._dmarc.<rua domain>`` authorises it (RFC 7489 7.1).
* TLS-RPT: the receiver's Postfix log (its journal): each new SMTP
  connection of its ``smtp`` client to another domain's MX (DSNs, complaints and these
  reports going out) is one session, successful when TLS was established, failed when
  the handshake failed or STARTTLS was not offered.  The receiver's Postfix applies no
  MTA-STS or DANE policy (opportunistic TLS), so every policy is reported as
  ``no-policy-found`` - what it really did.  A domain named explicitly (``domains``) is
  reported even without sessions, with zero counts (a receiver that only delivered
  locally, as in a self-contained test, has none).

The reports are mailed the way Gmail mails them (gzip attachments, its subject and file
name conventions; TLS-RPT as ``multipart/report; report-type="tlsrpt"`` with an
``application/tlsrpt+gzip`` part) and are submitted to the receiver's own Postfix, so they
leave from the receiver's IP.  They are not DKIM-signed.

The builders (parse_history, dmarc_records, dmarc_xml, tls_sessions, tlsrpt_json, the
message builders) are pure functions; send_reports() is the part that talks to the lab."""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import shlex
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Callable, Iterable

from mailops.dns.kinds.dkim import parse_tags
from mailops.errors import MailopsError
from mailops.lab import core, receiver
from mailops.lab.config import MAILBOX_DOMAIN, RECEIVER_NAME, LabConfig
from mailops.ops.logs import journal_command
from mailops.ops.postfixlines import parse_delivery

ORG_NAME = MAILBOX_DOMAIN
DMARC_FROM = f"noreply-dmarc-support@{MAILBOX_DOMAIN}"
TLSRPT_FROM = f"noreply-smtp-tls-reporting@{MAILBOX_DOMAIN}"
CONTACT = f"postmaster@{MAILBOX_DOMAIN}"
DEFAULT_PERIOD = 24 * 3600

# libopendmarc's ARES_RESULT_* codes as the HistoryFile writes them (opendmarc-reports' table)
ARES_RESULTS = {0: "pass", 2: "softfail", 3: "neutral", 4: "temperror", 5: "permerror", 6: "none", 7: "fail",
                8: "policy", 9: "nxdomain", 10: "signed", 12: "discard"}
# RFC 7489 appendix C: what auth_results may say
SPF_RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
DKIM_RESULTS = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
# DMARC_RESULT_*: the disposition the milter applied (OpenDMARC's own reporter's table)
DISPOSITIONS = {0: "reject", 1: "reject", 2: "none", 3: "none", 4: "quarantine"}
ALIGN_PASS = 4     # DMARC_POLICY_{DKIM,SPF}_ALIGNMENT_PASS
POLICY_LETTERS = {ord("n"): "none", ord("q"): "quarantine", ord("r"): "reject"}


# -- DMARC: the HistoryFile -------------------------------------------------------------------

@dataclass
class HistoryEntry:
    """One message OpenDMARC evaluated, as its HistoryFile records it."""
    job: str
    received: int = 0
    ipaddr: str = ""
    from_domain: str = ""
    mfrom: str = ""
    spf: int = -1
    dkim: list[tuple[str, str, int]] = field(default_factory=list)   # (domain, selector, ARES result)
    pdomain: str = ""
    align_dkim: int = 0
    align_spf: int = 0
    action: int = 2
    p: int = 0
    sp: int = 0


def _int(value: str, default: int) -> int:
    try:
        return int(value)
    except ValueError:
        return default


def parse_history(text: str) -> list[HistoryEntry]:
    """The entries of an OpenDMARC HistoryFile (the format opendmarc-import reads).

    Unknown keys and broken lines are skipped, as opendmarc-import skips them."""
    entries: list[HistoryEntry] = []
    current: HistoryEntry | None = None
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        value, _, data = rest.partition(" ")
        if key == "job":
            current = HistoryEntry(job=value)
            entries.append(current)
            continue
        if current is None or not key:
            continue
        if key == "received":
            current.received = _int(value, 0)
        elif key == "ipaddr":
            current.ipaddr = value
        elif key == "from":
            current.from_domain = value.lower()
        elif key == "mfrom":
            current.mfrom = value.lower()
        elif key == "spf":
            current.spf = _int(value, -1)
        elif key == "dkim":
            selector, _, result = data.partition(" ")
            current.dkim.append((value.lower(), selector, _int(result, -1)))
        elif key == "pdomain":
            current.pdomain = value.lower()
        elif key in ("align_dkim", "align_spf", "action", "p", "sp"):
            setattr(current, key, _int(value, getattr(current, key)))
    return entries


def _spf_result(code: int) -> str:
    result = ARES_RESULTS.get(code, "none")
    return result if result in SPF_RESULTS else ("fail" if result == "policy" else "none")


def _dkim_result(code: int) -> str:
    result = ARES_RESULTS.get(code, "none")
    return result if result in DKIM_RESULTS else "fail"


def dmarc_records(entries: Iterable[HistoryEntry]) -> list[dict]:
    """RFC 7489 records: one per source IP, identifiers and results, with the message count."""
    counts: Counter = Counter()
    for e in entries:
        try:
            ip = str(ipaddress.ip_address(e.ipaddr))
        except ValueError:
            continue                      # not a message from the network (a local submission)
        key = (ip, DISPOSITIONS.get(e.action, "none"),
               "pass" if e.align_dkim == ALIGN_PASS else "fail",
               "pass" if e.align_spf == ALIGN_PASS else "fail",
               e.from_domain, e.mfrom,
               tuple(sorted((d, s, _dkim_result(r)) for d, s, r in e.dkim)),
               _spf_result(e.spf))
        counts[key] += 1
    records = []
    for key, count in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0])):
        ip, disposition, dkim, spf, header_from, envelope_from, dkims, spf_result = key
        records.append({
            "source_ip": ip, "count": count, "disposition": disposition, "dkim": dkim, "spf": spf,
            "header_from": header_from, "envelope_from": envelope_from,
            "dkim_results": [{"domain": d, "selector": s, "result": r} for d, s, r in dkims],
            "spf_result": {"domain": envelope_from or header_from,
                           "scope": "mfrom" if envelope_from else "helo", "result": spf_result},
        })
    return records


def _sub(parent, tag: str, text=None):
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


def dmarc_xml(*, report_id: str, begin: int, end: int, policy_domain: str, policy: dict,
              records: list[dict], org_name: str = ORG_NAME, email: str = DMARC_FROM) -> bytes:
    """The aggregate report (RFC 7489 appendix C) as UTF-8 XML, laid out as Gmail's."""
    root = ET.Element("feedback")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", email)
    _sub(meta, "extra_contact_info", CONTACT)
    _sub(meta, "report_id", report_id)
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", int(begin))
    _sub(dates, "end", int(end))
    published = _sub(root, "policy_published")
    _sub(published, "domain", policy_domain)
    _sub(published, "adkim", policy.get("adkim", "r"))
    _sub(published, "aspf", policy.get("aspf", "r"))
    _sub(published, "p", policy.get("p", "none"))
    _sub(published, "sp", policy.get("sp", policy.get("p", "none")))
    _sub(published, "pct", policy.get("pct", "100"))
    if "np" in policy:
        _sub(published, "np", policy["np"])
    for rec in records:
        record = _sub(root, "record")
        row = _sub(record, "row")
        _sub(row, "source_ip", rec["source_ip"])
        _sub(row, "count", rec["count"])
        evaluated = _sub(row, "policy_evaluated")
        _sub(evaluated, "disposition", rec["disposition"])
        _sub(evaluated, "dkim", rec["dkim"])
        _sub(evaluated, "spf", rec["spf"])
        identifiers = _sub(record, "identifiers")
        if rec.get("envelope_from"):
            _sub(identifiers, "envelope_from", rec["envelope_from"])
        _sub(identifiers, "header_from", rec["header_from"])
        auth = _sub(record, "auth_results")
        for d in rec["dkim_results"]:
            dkim = _sub(auth, "dkim")
            _sub(dkim, "domain", d["domain"])
            if d.get("selector"):
                _sub(dkim, "selector", d["selector"])
            _sub(dkim, "result", d["result"])
        spf = _sub(auth, "spf")
        _sub(spf, "domain", rec["spf_result"]["domain"])
        _sub(spf, "scope", rec["spf_result"]["scope"])
        _sub(spf, "result", rec["spf_result"]["result"])
    ET.indent(root, "  ")
    return b'<?xml version="1.0" encoding="UTF-8" ?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


# -- TLS-RPT: the receiver's Postfix log --------------------------------------------------------

_RELAY_RE = re.compile(r"^(.*)\[([0-9A-Fa-f:.]+)\](?::\d+)?$")
_TLS_OK_RE = re.compile(r"^(Anonymous|Untrusted|Trusted|Verified) TLS connection established to (\S+?)(?::\d+)?: ")
_TLS_ERR_RE = re.compile(r"^(?:SSL_connect error to|TLS handshake failed for) (\S+?)(?::\d+)?: ")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}


@dataclass(frozen=True)
class TlsSession:
    """One SMTP connection of the receiver's smtp client to another domain's MX."""
    time: float
    domain: str               # the recipient's domain: the TLS-RPT policy domain
    mx_host: str
    ip: str
    result: str               # "success" or an RFC 8460 result type


def _split_log_line(line: str, year: int) -> tuple[float, str, str] | None:
    """(epoch, program[pid], message) of a syslog or ISO-stamped log line, or None."""
    parts = line.split(" ", 3)
    if line[:1].isdigit() and len(parts) == 4:
        try:
            stamp = datetime.fromisoformat(parts[0])
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        return stamp.timestamp(), parts[2], parts[3]
    if line[:3] in _MONTHS and len(line) > 16:
        rest = line[16:].split(" ", 2)
        try:
            day, clock = int(line[4:6]), line[7:15]
            hh, mm, ss = (int(x) for x in clock.split(":"))
            stamp = datetime(year, _MONTHS[line[:3]], day, hh, mm, ss, tzinfo=timezone.utc)
        except ValueError:
            return None
        if len(rest) == 3:
            return stamp.timestamp(), rest[1], rest[2]
    return None


def _host_ip(text: str) -> tuple[str, str] | None:
    m = _RELAY_RE.match(text)
    return (m.group(1).lower().rstrip("."), m.group(2)) if m else None


def tls_sessions(lines: Iterable[str], *, year: int | None = None) -> list[TlsSession]:
    """The smtp client's sessions in a Postfix log (lines of the receiver's mail.log).

    A session starts with a connection; its TLS outcome is the smtp process's last TLS
    line before the delivery line that names the relay; a delivery on a reused
    connection (``conn_use=`` 2 or more) is not a new session, and a delivery without
    a connection (``relay=none``) is none at all."""
    year = year or datetime.now(timezone.utc).year
    pending: dict[str, tuple[str, str, str]] = {}      # smtp[pid] -> (result, host, ip)
    sessions = []
    for line in lines:
        split = _split_log_line(line.rstrip("\r\n"), year)
        if split is None:
            continue
        when, program, msg = split
        if not program.startswith("postfix") or "/smtp[" not in program:
            continue
        ok = _TLS_OK_RE.match(msg)
        if ok:
            where = _host_ip(ok.group(2))
            if where:
                pending[program] = ("success", *where)
            continue
        err = _TLS_ERR_RE.match(msg)
        if err:
            where = _host_ip(err.group(1))
            if where:
                pending[program] = ("validation-failure", *where)
            continue
        if "status=" not in msg or ": to=<" not in msg:
            continue
        delivery = parse_delivery(msg)
        if delivery is None:
            continue
        _qid, recipient, relay, _dsn, _status, _reason = delivery
        where = _host_ip(relay)
        if where is None:                     # relay=none: no connection was made
            continue
        reused = re.search(r", conn_use=(\d+),", msg)
        if reused and int(reused.group(1)) > 1:
            continue
        tls = pending.pop(program, None)
        if tls is not None and tls[2] == where[1]:
            result = tls[0]
        else:
            result = "starttls-not-supported"
        domain = recipient.rpartition("@")[2].lower().rstrip(".")
        sessions.append(TlsSession(when, domain, where[0], where[1], result))
    return sessions


def _same_family(ip: str, candidates: tuple[str, ...]) -> str:
    version = ipaddress.ip_address(ip).version
    return next((c for c in candidates if ipaddress.ip_address(c).version == version), candidates[0])


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tlsrpt_json(*, report_id: str, begin: int, end: int, policy_domain: str, sessions: list[TlsSession],
                sending_ips: tuple[str, ...], org_name: str = ORG_NAME, contact: str = TLSRPT_FROM) -> bytes:
    """The RFC 8460 report for one policy domain (``no-policy-found``: see the module).

    sending_ips: the receiver's own addresses; a failure names the one of the session's family."""
    failures: Counter = Counter()
    for s in sessions:
        if s.result != "success":
            failures[(s.result, s.mx_host, s.ip)] += 1
    policy = {
        "policy": {"policy-type": "no-policy-found", "policy-domain": policy_domain},
        "summary": {"total-successful-session-count": sum(1 for s in sessions if s.result == "success"),
                    "total-failure-session-count": sum(failures.values())},
    }
    if failures:
        policy["failure-details"] = [
            {"result-type": result, "sending-mta-ip": _same_family(ip, sending_ips), "receiving-mx-hostname": host,
             "receiving-ip": ip, "failed-session-count": count}
            for (result, host, ip), count in sorted(failures.items())]
    doc = {"organization-name": org_name,
           "date-range": {"start-datetime": _rfc3339(begin), "end-datetime": _rfc3339(end)},
           "contact-info": contact, "report-id": report_id, "policies": [policy]}
    return json.dumps(doc, indent=2).encode("utf-8")


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


# -- the messages -----------------------------------------------------------------------------------

def dmarc_message(*, domain: str, report_id: str, begin: int, end: int, xml: bytes, to: list[str],
                  org_name: str = ORG_NAME, sender: str = DMARC_FROM) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Report domain: {domain} Submitter: {org_name} Report-ID: {report_id}"
    msg["Date"] = formatdate(end)
    msg["Message-ID"] = make_msgid(domain=receiver.RECEIVER_AUTHSERV)
    msg.set_content(f"This is an aggregate DMARC report for {domain} from {org_name}.\n")
    msg.add_attachment(gzip.compress(xml, mtime=end), maintype="application", subtype="gzip",
                       filename=f"{org_name}!{domain}!{int(begin)}!{int(end)}.xml.gz")
    return msg.as_bytes()


def tlsrpt_message(*, domain: str, report_id: str, begin: int, end: int, report: bytes, to: list[str],
                   org_name: str = ORG_NAME, sender: str = TLSRPT_FROM) -> bytes:
    """RFC 8460 section 5.3: multipart/report; report-type="tlsrpt", TLS-Report-* headers."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Report Domain: {domain} Submitter: {org_name} Report-ID: <{report_id}>"
    msg["Date"] = formatdate(end)
    msg["Message-ID"] = make_msgid(domain=receiver.RECEIVER_AUTHSERV)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = org_name
    msg.set_content(f"This is an aggregate TLS report from {org_name} for {domain}.\n")
    msg.add_attachment(gzip.compress(report, mtime=end), maintype="application", subtype="tlsrpt+gzip",
                       filename=f"{org_name}!{domain}!{int(begin)}!{int(end)}!{report_id}.json.gz")
    msg.set_boundary(f"=_tlsrpt_{uuid.uuid4().hex}")
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()


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

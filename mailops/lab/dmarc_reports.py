"""The lab receiver's DMARC aggregate reports (RFC 7489): what OpenDMARC recorded, as XML and mail.

The source is OpenDMARC's HistoryFile on the receiver (one block of ``key value`` lines per
message it evaluated: client IP, From and envelope domains, the SPF result from
policyd-spf, each DKIM signature's result, alignment, the disposition it applied).
Messages of one policy domain (the domain the DMARC record was found at) in the period
become one report; messages with the same source IP, identifiers and results become one
record with their count.  The report is laid out and mailed as Gmail's (a gzip attachment,
its subject and file name conventions); the reporter's organisation is the lab mailbox
domain.  Pure functions; :mod:`mailops.lab.provider_reports` finds the ``rua`` addresses
and sends."""

from __future__ import annotations

import gzip
import ipaddress
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Iterable

from mailops.lab import receiver
from mailops.lab.config import MAILBOX_DOMAIN

DMARC_FROM = f"noreply-dmarc-support@{MAILBOX_DOMAIN}"
CONTACT = f"postmaster@{MAILBOX_DOMAIN}"

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



# -- the HistoryFile -----------------------------------------------------------------------------

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
              records: list[dict], org_name: str = MAILBOX_DOMAIN, email: str = DMARC_FROM) -> bytes:
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


# -- the message -----------------------------------------------------------------------------------

def dmarc_message(*, domain: str, report_id: str, begin: int, end: int, xml: bytes, to: list[str],
                  org_name: str = MAILBOX_DOMAIN, sender: str = DMARC_FROM) -> bytes:
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

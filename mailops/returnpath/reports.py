"""Aggregate reports: DMARC (RFC 7489 appendix C, XML) and TLS-RPT (RFC 8460, JSON).

Attachments come plain, gzip or zip compressed, under whatever content type the sender
chose; the bytes decide (gzip and zip magic), not the label.  Everything here treats the
input as hostile:

* decompressed size is capped (MAX_REPORT_BYTES, read with a bound, not trusting the
  sizes a zip declares) and so is the number of zip members (a zip bomb gives an error);
* XML with a DOCTYPE or ENTITY declaration is refused before parsing (no entity
  expansion, no external entities: what defusedxml would refuse), and so is XML that is
  not in an ASCII-compatible encoding (the check could not see its declarations);
* every field is checked for its type; a report with a wrong type is an error naming
  the field, not a row with nonsense in it."""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import re
import zipfile
import zlib
import xml.etree.ElementTree as ET
import xml.parsers.expat

from mailops.returnpath.events import DmarcReport, DmarcRow, TlsFailure, TlsPolicy, TlsReport

MAX_REPORT_BYTES = 20 * 1024 * 1024   # decompressed, per report
MAX_ZIP_MEMBERS = 10
MAX_DMARC_RECORDS = 100_000
MAX_TLS_POLICIES = 10_000
MAX_TLS_FAILURES = 10_000
MAX_TEXT = 500                         # one field as stored

_DECLARATION_RE = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_ENCODING_RE = re.compile(rb"^\s*<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z0-9._:-]{1,40})[\"']")
# encodings in which the byte check above sees every declaration
_SAFE_ENCODINGS = frozenset(("utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1",
                             "iso-8859-15", "windows-1252", "cp1252"))


class ReportError(ValueError):
    """A report that cannot be read; the message says what and where."""


# -- decompression --------------------------------------------------------------------------

def _bounded_read(stream, what: str) -> bytes:
    data = stream.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"{what} decompresses to more than {MAX_REPORT_BYTES // (1024 * 1024)} MiB: refused")
    return data


def unpack(data: bytes, name: str = "") -> list[tuple[str, bytes]]:
    """(member name, bytes) of a plain, gzip or zip report."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                return [(name.removesuffix(".gz"), _bounded_read(stream, "the gzip report"))]
        except (OSError, EOFError, zlib.error) as exc:
            raise ReportError(f"the gzip report is broken ({exc.__class__.__name__}: {exc})"[:300]) from None
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):       # a local file header, or an empty archive
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if len(members) > MAX_ZIP_MEMBERS:
                    raise ReportError(f"the zip report has {len(members)} members, more than {MAX_ZIP_MEMBERS}")
                if not members:
                    raise ReportError("the zip report is empty")
                out, total = [], 0
                for member in members:
                    if member.file_size > MAX_REPORT_BYTES:
                        raise ReportError(f"zip member {member.filename[:100]!r} declares {member.file_size} bytes,"
                                          f" more than {MAX_REPORT_BYTES // (1024 * 1024)} MiB: refused")
                    with archive.open(member) as stream:
                        content = _bounded_read(stream, f"zip member {member.filename[:100]!r}")
                    total += len(content)
                    if total > MAX_REPORT_BYTES:
                        raise ReportError(f"the zip report decompresses to more than "
                                          f"{MAX_REPORT_BYTES // (1024 * 1024)} MiB: refused")
                    out.append((member.filename, content))
                return out
        except ReportError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, ValueError,
                NotImplementedError, RuntimeError) as exc:
            raise ReportError(f"the zip report is broken ({exc.__class__.__name__}: {exc})"[:300]) from None
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"the report is larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB: refused")
    return [(name, data)]


# -- DMARC ----------------------------------------------------------------------------------

def looks_like_dmarc_xml(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head[:8]:     # UTF-16/32: parse_dmarc refuses it
        return b"<\x00f\x00e\x00e\x00d" in data[:65536] or b"\x00<\x00f\x00e\x00e" in data[:65536]
    return head.startswith(b"<") and b"<feedback" in data[:65536]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2] if "}" in tag else tag      # namespaces (DMARCbis) ignored


def _child(node, name: str):
    if node is None:
        return None
    for child in node:
        if _local(child.tag) == name:
            return child
    return None


def _children(node, name: str):
    return [] if node is None else [c for c in node if _local(c.tag) == name]


def _text(node, name: str) -> str | None:
    child = _child(node, name)
    if child is None or child.text is None:
        return None
    return " ".join(child.text.split())[:MAX_TEXT] or None


def _int(node, name: str, where: str, required: bool = True) -> int | None:
    value = _text(node, name)
    if value is None:
        if required:
            raise ReportError(f"DMARC report: {where}/{name} is missing")
        return None
    if not re.fullmatch(r"\d{1,19}", value):
        raise ReportError(f"DMARC report: {where}/{name} is {value[:40]!r}, not a whole number")
    return int(value)


def parse_dmarc(data: bytes) -> DmarcReport:
    if _DECLARATION_RE.search(data):
        raise ReportError("DMARC report: XML with a DOCTYPE or ENTITY declaration refused")
    declared = _ENCODING_RE.match(data.removeprefix(b"\xef\xbb\xbf"))
    if b"\x00" in data[:4096] or data[:2] in (b"\xff\xfe", b"\xfe\xff") or \
            (declared and declared.group(1).decode("ascii").lower() not in _SAFE_ENCODINGS):
        raise ReportError("DMARC report: XML not in UTF-8 or another ASCII-compatible encoding refused")
    _refuse_declarations(data)
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError, LookupError, RecursionError) as exc:
        raise ReportError(f"DMARC report: XML does not parse ({exc})"[:300]) from None
    if _local(root.tag) != "feedback":
        raise ReportError(f"DMARC report: the root element is <{_local(root.tag)[:40]}>, not <feedback>")
    meta = _child(root, "report_metadata")
    if meta is None:
        raise ReportError("DMARC report: report_metadata is missing")
    dates = _child(meta, "date_range")
    if dates is None:
        raise ReportError("DMARC report: report_metadata/date_range is missing")
    org, report_id = _text(meta, "org_name"), _text(meta, "report_id")
    if org is None or report_id is None:
        raise ReportError(f"DMARC report: report_metadata/{'org_name' if org is None else 'report_id'} is missing")
    published = _child(root, "policy_published")
    policy = {}
    if published is not None:
        for name in ("domain", "adkim", "aspf", "p", "sp", "pct", "np", "fo"):
            value = _text(published, name)
            if value is not None:
                policy[name] = value
    records = _children(root, "record")
    if len(records) > MAX_DMARC_RECORDS:
        raise ReportError(f"DMARC report: {len(records)} records, more than {MAX_DMARC_RECORDS}")
    rows = [_dmarc_row(record, i) for i, record in enumerate(records)]
    return DmarcReport(org_name=org, report_id=report_id, begin=_int(dates, "begin", "date_range"),
                       end=_int(dates, "end", "date_range"), email=_text(meta, "email"),
                       domain=(policy.get("domain") or "").lower() or None, policy=policy, rows=rows)


def _refuse_declarations(data: bytes) -> None:
    """A second guard, in the parser itself: whatever the byte check missed, expat reports
    a DOCTYPE or an entity declaration before anything is expanded."""
    def refuse(*_args) -> None:
        raise ReportError("DMARC report: XML with a DOCTYPE or ENTITY declaration refused")
    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise ReportError(f"DMARC report: XML does not parse ({exc})"[:300]) from None
    except RecursionError:
        raise ReportError("DMARC report: XML nested too deeply") from None


def _ip(value: str | None, where: str) -> str:
    if value is None:
        raise ReportError(f"DMARC report: {where}/source_ip is missing")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ReportError(f"DMARC report: {where}/source_ip {value[:60]!r} is not an IP address") from None


def _dmarc_row(record, index: int) -> DmarcRow:
    where = f"record[{index}]/row"
    row = _child(record, "row")
    if row is None:
        raise ReportError(f"DMARC report: record[{index}] has no row")
    evaluated = _child(row, "policy_evaluated")
    identifiers = _child(record, "identifiers")
    auth = _child(record, "auth_results")
    reasons = [r for r in (_text(reason, "type") for reason in _children(evaluated, "reason")) if r]
    dkim_results = [{"domain": _text(d, "domain"), "selector": _text(d, "selector"), "result": _text(d, "result")}
                    for d in _children(auth, "dkim")]
    spf_results = [{"domain": _text(s, "domain"), "scope": _text(s, "scope"), "result": _text(s, "result")}
                   for s in _children(auth, "spf")]
    header_from = _text(identifiers, "header_from")
    return DmarcRow(source_ip=_ip(_text(row, "source_ip"), where), count=_int(row, "count", where),
                    disposition=_text(evaluated, "disposition"), dkim=_text(evaluated, "dkim"),
                    spf=_text(evaluated, "spf"), header_from=header_from.lower() if header_from else None,
                    envelope_from=_text(identifiers, "envelope_from"), reasons=reasons,
                    dkim_results=dkim_results, spf_results=spf_results)


# -- TLS-RPT --------------------------------------------------------------------------------

def looks_like_tlsrpt_json(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") and b"policies" in data[:1_000_000]


def _field(obj, name: str, kind, where: str, required: bool = True):
    if not isinstance(obj, dict):
        raise ReportError(f"TLS-RPT report: {where} must be an object, found {type(obj).__name__}")
    if name not in obj or obj[name] is None:
        if required:
            raise ReportError(f"TLS-RPT report: {where}.{name} is missing")
        return None
    value = obj[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ReportError(f"TLS-RPT report: {where}.{name} must be a whole number >= 0, found {value!r}"[:300])
    if kind is not int and not isinstance(value, kind):
        raise ReportError(f"TLS-RPT report: {where}.{name} must be {kind.__name__}, found {type(value).__name__}")
    if isinstance(value, str):
        return value[:MAX_TEXT]
    return value


def parse_tlsrpt(data: bytes) -> TlsReport:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ReportError(f"TLS-RPT report: not JSON ({exc})"[:300]) from None
    where = "report"
    dates = _field(doc, "date-range", dict, where)
    policies = _field(doc, "policies", list, where)
    if len(policies) > MAX_TLS_POLICIES:
        raise ReportError(f"TLS-RPT report: {len(policies)} policies, more than {MAX_TLS_POLICIES}")
    report = TlsReport(org_name=_field(doc, "organization-name", str, where),
                       report_id=_field(doc, "report-id", str, where),
                       start=_field(dates, "start-datetime", str, "date-range"),
                       end=_field(dates, "end-datetime", str, "date-range"),
                       contact_info=_field(doc, "contact-info", str, where, required=False))
    for i, entry in enumerate(policies):
        at = f"policies[{i}]"
        policy = _field(entry, "policy", dict, at)
        summary = _field(entry, "summary", dict, at)
        mx_hosts = _field(policy, "mx-host", list, f"{at}.policy", required=False) or []
        failures = _field(entry, "failure-details", list, at, required=False) or []
        if len(failures) > MAX_TLS_FAILURES:
            raise ReportError(f"TLS-RPT report: {at} has {len(failures)} failure details, more than {MAX_TLS_FAILURES}")
        item = TlsPolicy(policy_type=_field(policy, "policy-type", str, f"{at}.policy"),
                         policy_domain=_field(policy, "policy-domain", str, f"{at}.policy").lower(),
                         successful_sessions=_field(summary, "total-successful-session-count", int, f"{at}.summary"),
                         failed_sessions=_field(summary, "total-failure-session-count", int, f"{at}.summary"),
                         mx_hosts=[str(h)[:MAX_TEXT] for h in mx_hosts if isinstance(h, str)])
        for j, failure in enumerate(failures):
            fat = f"{at}.failure-details[{j}]"
            item.failures.append(TlsFailure(
                result_type=_field(failure, "result-type", str, fat),
                failed_sessions=_field(failure, "failed-session-count", int, fat),
                sending_mta_ip=_field(failure, "sending-mta-ip", str, fat, required=False),
                receiving_mx_hostname=_field(failure, "receiving-mx-hostname", str, fat, required=False),
                receiving_mx_helo=_field(failure, "receiving-mx-helo", str, fat, required=False),
                receiving_ip=_field(failure, "receiving-ip", str, fat, required=False),
                failure_reason_code=_field(failure, "failure-reason-code", str, fat, required=False),
                additional_information=_field(failure, "additional-information", str, fat, required=False)))
        report.policies.append(item)
    return report

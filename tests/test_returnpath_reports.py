"""DMARC aggregate reports (RFC 7489 appendix C) and TLS-RPT reports (RFC 8460) as they
arrive by mail: plain, gzip and zip, under the content types reporters use; and hostile
ones (zip bombs, DOCTYPEs, wrong types, truncated archives) kept as unparsed."""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from mailops.returnpath import classify, reports
from mailops.returnpath.events import DMARC, TLSRPT, UNPARSED

RUA = "dmarc@shop.test"


def dmarc_xml(*, report_id="r-1", records=None, namespace="", extra_meta="", policy=True) -> bytes:
    records = records if records is not None else [
        ("10.77.0.11", 7, "none", "pass", "pass", "shop.test"),
        ("203.0.113.9", 2, "reject", "fail", "fail", "shop.test"),
    ]
    rows = "".join(f"""
  <record>
    <row>
      <source_ip>{ip}</source_ip>
      <count>{count}</count>
      <policy_evaluated><disposition>{disp}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf>
        {"<reason><type>local_policy</type></reason>" if disp == "reject" else ""}</policy_evaluated>
    </row>
    <identifiers><header_from>{hfrom}</header_from><envelope_from>bounces.{hfrom}</envelope_from></identifiers>
    <auth_results>
      <dkim><domain>{hfrom}</domain><selector>mo2026</selector><result>{dkim}</result></dkim>
      <spf><domain>bounces.{hfrom}</domain><scope>mfrom</scope><result>{spf}</result></spf>
    </auth_results>
  </record>""" for ip, count, disp, dkim, spf, hfrom in records)
    published = """<policy_published><domain>shop.test</domain><adkim>r</adkim><aspf>r</aspf><p>none</p>
    <sp>none</sp><pct>100</pct></policy_published>""" if policy else ""
    ns = f' xmlns="{namespace}"' if namespace else ""
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback{ns}>
  <version>1.0</version>
  <report_metadata>
    <org_name>inbox.test</org_name>
    <email>dmarc-reports@inbox.test</email>
    <report_id>{report_id}</report_id>
    <date_range><begin>1764720000</begin><end>1764806399</end></date_range>{extra_meta}
  </report_metadata>
  {published}{rows}
</feedback>
""".encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def report_mail(data: bytes, content_type: str, filename: str | None, *, headers=None) -> bytes:
    main, sub = content_type.split("/")
    msg = MIMEMultipart()
    msg["From"] = "noreply-dmarc@inbox.test"
    msg["To"] = RUA
    msg["Subject"] = "Report Domain: shop.test Submitter: inbox.test Report-ID: r-1"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.attach(MIMEText("This is an aggregate report.\n"))
    part = MIMEApplication(data, sub)
    part.set_type(content_type)
    if filename:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    msg.attach(part)
    return msg.as_bytes()


def whole_body_mail(data: bytes, content_type: str) -> bytes:
    part = MIMEApplication(data, content_type.split("/")[1])
    part.set_type(content_type)
    part["From"] = "noreply-dmarc@inbox.test"
    part["Subject"] = "Report Domain: shop.test"
    return part.as_bytes()


NAME = "inbox.test!shop.test!1764720000!1764806399"


@pytest.mark.parametrize("content_type, filename, pack", [
    ("application/xml", f"{NAME}.xml", lambda d: d),
    ("text/xml", None, lambda d: d),
    ("application/gzip", f"{NAME}.xml.gz", gz),
    ("application/x-gzip", f"{NAME}.xml.gz", gz),
    ("application/zip", f"{NAME}.zip", lambda d: zipped((f"{NAME}.xml", d))),
    ("application/octet-stream", f"{NAME}.zip", lambda d: zipped((f"{NAME}.xml", d))),
    ("application/octet-stream", None, gz),                      # nothing but the bytes tell
])
def test_dmarc_report_in_every_packing(content_type, filename, pack):
    event = classify(report_mail(pack(dmarc_xml()), content_type, filename), RUA, "noreply-dmarc@inbox.test")
    assert event.kind == DMARC, event.reason
    (report,) = event.dmarc
    assert (report.org_name, report.report_id, report.begin, report.end) == ("inbox.test", "r-1", 1764720000, 1764806399)
    assert report.email == "dmarc-reports@inbox.test"
    assert report.domain == "shop.test"
    assert report.policy == {"domain": "shop.test", "adkim": "r", "aspf": "r", "p": "none", "sp": "none", "pct": "100"}
    good, bad = report.rows
    assert (good.source_ip, good.count, good.disposition, good.dkim, good.spf, good.header_from) == \
        ("10.77.0.11", 7, "none", "pass", "pass", "shop.test")
    assert good.envelope_from == "bounces.shop.test"
    assert good.dkim_results == [{"domain": "shop.test", "selector": "mo2026", "result": "pass"}]
    assert good.spf_results == [{"domain": "bounces.shop.test", "scope": "mfrom", "result": "pass"}]
    assert (bad.source_ip, bad.count, bad.disposition, bad.reasons) == ("203.0.113.9", 2, "reject", ["local_policy"])


@pytest.mark.parametrize("content_type, pack", [("application/gzip", gz), ("application/zip",
                                                lambda d: zipped(("r.xml", d))), ("text/xml", lambda d: d)])
def test_dmarc_report_as_the_whole_body(content_type, pack):
    event = classify(whole_body_mail(pack(dmarc_xml()), content_type), RUA, "")
    assert event.kind == DMARC and len(event.dmarc[0].rows) == 2


def test_zip_with_two_members_gives_two_reports():
    data = zipped(("a.xml", dmarc_xml(report_id="a")), ("b.xml", dmarc_xml(report_id="b", records=[])))
    event = classify(report_mail(data, "application/zip", "x.zip"), RUA, "")
    assert [(r.report_id, len(r.rows)) for r in event.dmarc] == [("a", 2), ("b", 0)]


def test_dmarcbis_namespace_ipv6_and_missing_optional_parts():
    xml = dmarc_xml(namespace="urn:ietf:params:xml:ns:dmarc-2.0", policy=False,
                    records=[("2001:DB8::1", 3, "none", "pass", "fail", "Shop.Test")])
    (report,) = classify(report_mail(gz(xml), "application/gzip", "r.xml.gz"), RUA, "").dmarc
    assert report.domain is None and report.policy == {}
    (row,) = report.rows
    assert (row.source_ip, row.spf, row.header_from) == ("2001:db8::1", "fail", "shop.test")


def test_dmarc_row_without_auth_results_or_identifiers():
    xml = b"""<feedback><report_metadata><org_name>o</org_name><report_id>1</report_id>
    <date_range><begin>1</begin><end>2</end></date_range></report_metadata>
    <record><row><source_ip>192.0.2.1</source_ip><count>1</count></row></record></feedback>"""
    (row,) = classify(report_mail(xml, "application/xml", "r.xml"), RUA, "").dmarc[0].rows
    assert (row.disposition, row.header_from, row.dkim_results) == (None, None, [])


@pytest.mark.parametrize("xml, words", [
    (b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
     b"<feedback>&b;</feedback>", "DOCTYPE"),                                   # billion laughs
    (b'<?xml version="1.0"?><!DOCTYPE feedback SYSTEM "file:///etc/passwd"><feedback/>', "DOCTYPE"),
    (b'<!doctype feedback><feedback/>', "DOCTYPE"),
    (dmarc_xml().replace(b"<report_id>r-1</report_id>", b""), "report_id is missing"),
    (dmarc_xml().replace(b"<count>7</count>", b"<count>seven</count>"), "record[0]/row/count"),
    (dmarc_xml().replace(b"10.77.0.11", b"10.77.0.999"), "not an IP address"),
    (dmarc_xml().replace(b"<begin>1764720000</begin>", b""), "date_range/begin is missing"),
    (dmarc_xml()[:200], "does not parse"),                                      # truncated XML
    (b"<feedback><report_metadata>", "does not parse"),
    ("<feedback/>".encode("utf-16"), "ASCII-compatible"),
    (b'<?xml version="1.0" encoding="hz"?>\n<feedback/>', "ASCII-compatible"),     # a 7-bit shift encoding
    (b'<?xml version="1.0" encoding="cp037"?><feedback>' + "<!DOCTYPE x>".encode("cp037"), "ASCII-compatible"),
])
def test_hostile_or_broken_dmarc_xml_is_unparsed_with_the_reason(xml, words):
    event = classify(report_mail(gz(xml), "application/gzip", "r.xml.gz"), RUA, "")
    assert event.kind == UNPARSED
    assert words in event.reason


def test_the_parser_guard_refuses_a_declaration_the_byte_check_cannot_see(monkeypatch):
    monkeypatch.setattr(reports, "_DECLARATION_RE", re.compile(rb"(?!)"))      # as if the byte check missed it
    with pytest.raises(reports.ReportError, match="DOCTYPE or ENTITY"):
        reports.parse_dmarc(b'<!DOCTYPE f [<!ENTITY a "aaaa">]><feedback>&a;</feedback>')


def test_zip_bomb_is_refused():
    bomb = zipped(("r.xml", b"<feedback>" + b" " * (reports.MAX_REPORT_BYTES + 10)))
    assert len(bomb) < 100_000
    event = classify(report_mail(bomb, "application/zip", "r.zip"), RUA, "")
    assert event.kind == UNPARSED and "MiB" in event.reason


def test_gzip_bomb_is_refused():
    event = classify(report_mail(gz(b" " * (reports.MAX_REPORT_BYTES + 1)), "application/gzip", "r.xml.gz"), RUA, "")
    assert event.kind == UNPARSED and "20 MiB" in event.reason


def test_zip_whose_header_lies_about_the_size_is_still_bounded(monkeypatch):
    monkeypatch.setattr(reports, "MAX_REPORT_BYTES", 1000)
    data = zipped(("r.xml", dmarc_xml() + b" " * 2000))
    with pytest.raises(reports.ReportError, match="MiB|more than"):
        reports.unpack(data)


def test_zip_with_too_many_members_is_refused():
    data = zipped(*((f"{i}.xml", dmarc_xml(report_id=str(i))) for i in range(reports.MAX_ZIP_MEMBERS + 1)))
    event = classify(report_mail(data, "application/zip", "r.zip"), RUA, "")
    assert event.kind == UNPARSED and "members" in event.reason


@pytest.mark.parametrize("data, words", [
    (gz(dmarc_xml())[:-30], "gzip report is broken"),
    (zipped(("r.xml", dmarc_xml()))[:-40], "zip report is broken"),
    (b"", "empty attachment"),
    (zipped(), "the zip report is empty"),
])
def test_truncated_or_empty_archives_are_unparsed(data, words):
    event = classify(report_mail(data, "application/gzip", "r.xml.gz"), RUA, "")
    assert event.kind == UNPARSED, event.reason
    assert words in event.reason


def test_a_readable_report_next_to_a_broken_one_is_kept_with_the_note():
    msg = MIMEMultipart()
    msg["Subject"] = "two reports"
    for data, name in ((gz(dmarc_xml()), "good.xml.gz"), (b"\x1f\x8bbroken", "bad.xml.gz")):
        part = MIMEApplication(data, "gzip")
        part.add_header("Content-Disposition", "attachment", filename=name)
        msg.attach(part)
    event = classify(msg.as_bytes(), RUA, "")
    assert event.kind == DMARC and "unreadable" in event.reason


def test_an_unrelated_attachment_is_not_a_report():
    event = classify(report_mail(b"%PDF-1.4 invoice", "application/octet-stream", None), "postmaster@shop.test", "")
    assert event.kind == "forward"


# -- TLS-RPT ----------------------------------------------------------------------------------------

def tls_json(**changes) -> dict:
    doc = {
        "organization-name": "inbox.test",
        "date-range": {"start-datetime": "2026-12-02T00:00:00Z", "end-datetime": "2026-12-02T23:59:59Z"},
        "contact-info": "tlsrpt@inbox.test",
        "report-id": "2026-12-02T00:00:00Z_shop.test",
        "policies": [
            {"policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce"],
                        "policy-domain": "Shop.Test", "mx-host": ["mta1.shop.test"]},
             "summary": {"total-successful-session-count": 40, "total-failure-session-count": 3},
             "failure-details": [
                 {"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.20",
                  "receiving-mx-hostname": "mta1.shop.test", "receiving-ip": "10.77.0.11",
                  "failed-session-count": 2},
                 {"result-type": "starttls-not-supported", "sending-mta-ip": "192.0.2.21",
                  "receiving-mx-hostname": "mta2.shop.test", "failed-session-count": 1,
                  "additional-information": "https://inbox.test/why"}]},
            {"policy": {"policy-type": "no-policy-found", "policy-domain": "news.test"},
             "summary": {"total-successful-session-count": 5, "total-failure-session-count": 0}},
        ],
    }
    doc.update(changes)
    return doc


@pytest.mark.parametrize("content_type, pack", [
    ("application/tlsrpt+gzip", gz), ("application/tlsrpt+json", lambda d: d)])
def test_tls_report(content_type, pack):
    raw = report_mail(pack(json.dumps(tls_json()).encode()), content_type, "inbox.test!shop.test!1!2.json.gz",
                      headers={"TLS-Report-Domain": "shop.test", "TLS-Report-Submitter": "inbox.test"})
    event = classify(raw, "tlsrpt@shop.test", "")
    assert event.kind == TLSRPT, event.reason
    (report,) = event.tls
    assert (report.org_name, report.report_id, report.start, report.contact_info) == \
        ("inbox.test", "2026-12-02T00:00:00Z_shop.test", "2026-12-02T00:00:00Z", "tlsrpt@inbox.test")
    sts, none = report.policies
    assert (sts.policy_type, sts.policy_domain, sts.successful_sessions, sts.failed_sessions, sts.mx_hosts) == \
        ("sts", "shop.test", 40, 3, ["mta1.shop.test"])
    assert [(f.result_type, f.failed_sessions, f.sending_mta_ip, f.receiving_mx_hostname) for f in sts.failures] == \
        [("certificate-expired", 2, "192.0.2.20", "mta1.shop.test"),
         ("starttls-not-supported", 1, "192.0.2.21", "mta2.shop.test")]
    assert (none.policy_type, none.failures) == ("no-policy-found", [])


@pytest.mark.parametrize("doc, field", [
    (tls_json(policies="none"), "report.policies must be list"),
    (tls_json(**{"report-id": 7}), "report.report-id must be str"),
    (tls_json(**{"date-range": {"start-datetime": "x"}}), "date-range.end-datetime is missing"),
    ({**tls_json(), "policies": [{"policy": {"policy-type": "sts", "policy-domain": "x.test"},
                                  "summary": {"total-successful-session-count": "40",
                                              "total-failure-session-count": 0}}]},
     "policies[0].summary.total-successful-session-count must be a whole number"),
    ({**tls_json(), "policies": [{"policy": {"policy-type": "sts", "policy-domain": "x.test"},
                                  "summary": {"total-successful-session-count": True,
                                              "total-failure-session-count": 0}}]},
     "whole number"),
    ({**tls_json(), "policies": [{"policy": {"policy-type": "sts", "policy-domain": "x.test"},
                                  "summary": {"total-successful-session-count": 1, "total-failure-session-count": 1},
                                  "failure-details": [{"result-type": "validation-failure",
                                                       "failed-session-count": -1}]}]},
     "policies[0].failure-details[0].failed-session-count"),
    ([1, 2, 3], "report must be an object"),
])
def test_tls_report_with_wrong_types_is_unparsed_naming_the_field(doc, field):
    raw = report_mail(gz(json.dumps(doc).encode()), "application/tlsrpt+gzip", "r.json.gz")
    event = classify(raw, "tlsrpt@shop.test", "")
    assert event.kind == UNPARSED
    assert field in event.reason


@pytest.mark.parametrize("data, words", [
    (gz(json.dumps(tls_json()).encode())[:-25], "gzip report is broken"),
    (b'{"policies": [', "not JSON"),
    (b"[" * 100_000, "not JSON"),                                        # deep nesting
    (b"\xff\xfe{}", "not JSON"),
])
def test_broken_tls_report_is_unparsed(data, words):
    event = classify(report_mail(data, "application/tlsrpt+json", None), "tlsrpt@shop.test", "")
    assert event.kind == UNPARSED and words in event.reason

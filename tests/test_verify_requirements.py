"""`mailops verify --only requirements`: the bulk-sender requirements of Gmail and Yahoo, judged on
a received message (mailops.verify.requirements).

Without the lab: messages are really signed by dkimpy with keys made here, "received" by a
receiver written here the way the lab's is (each signature verified by dkimpy against the
test's DNS, OpenDKIM's Authentication-Results format, policyd-spf's, Postfix's Received
header), and judged row by row.  The lab tests at the end send through a converged VPS."""

from __future__ import annotations

import base64
import subprocess
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

import dkim
import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailops.dns.kinds.dkim import value_for
from mailops.errors import MailopsError
from mailops.inventory import load
from mailops.verify import received, requirements as req
from mailops.verify.result import CheckResult
from tests.helpers import copy_inventory
from tests.test_returnpath_controller import world  # noqa: F401 - the return path's two-host fixture

DOMAIN = "shop.test"
AUTHSERV = "mx.inbox.test"
HOST_FQDN, HOST_V4, HOST_V6 = "mta1.shop.test", "198.51.100.11", "2001:db8:51::11"
ONE_CLICK_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"]


class Zone:
    """DNS for the judges (the same shape as DnsView.resolve) and for dkimpy."""

    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None, silent: set[str] = frozenset()):
        self.records = dict(records or {})
        self.silent = silent

    def resolve(self, name: str, rtype: str):
        name = name.rstrip(".").lower()
        if name in self.silent:
            return None
        return frozenset(self.records.get((name, rtype), []))

    def dnsfunc(self, name, timeout=5):
        found = self.resolve(name.decode() if isinstance(name, bytes) else name, "TXT") or ()
        return next(iter(found), "").encode()


def rsa_key(bits: int = 2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa_key(2048), "rsa1024": rsa_key(1024), "ed": ed25519.Ed25519PrivateKey.generate()}


def publish(zone: Zone, selector: str, key, domain: str = DOMAIN) -> None:
    zone.records[(f"{selector}._domainkey.{domain}", "TXT")] = [value_for(key.public_key())]


def base_zone(keys) -> Zone:
    zone = Zone({(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=reject; adkim=r; aspf=r"]})
    publish(zone, "s1", keys["rsa"])
    return zone


def message(*, unsubscribe: str | None = "<https://shop.test/u/abc>, <mailto:unsub@shop.test>",
            post: str | None = "List-Unsubscribe=One-Click", sender: str = f"news@{DOMAIN}") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "verify@inbox.test", "Our December newsletter"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=DOMAIN)
    if unsubscribe is not None:
        msg["List-Unsubscribe"] = unsubscribe
    if post is not None:
        msg["List-Unsubscribe-Post"] = post
    msg.set_content("Hello,\nthe newsletter.\n")
    return msg


def sign(raw: bytes, key, selector: str = "s1", domain: str = DOMAIN, headers=ONE_CLICK_HEADERS) -> bytes:
    include = [h.lower().encode() for h in headers]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        private = base64.b64encode(key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()))
        header = dkim.sign(raw, selector.encode(), domain.encode(), private, include_headers=include,
                           signature_algorithm=b"ed25519-sha256", canonicalize=(b"relaxed", b"simple"))
    else:
        pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        header = dkim.sign(raw, selector.encode(), domain.encode(), pem, include_headers=include,
                           canonicalize=(b"relaxed", b"simple"))
    return header + raw


def receive(raw: bytes, zone: Zone, *, tls: bool = True, mailfrom: str = f"b-token@bounces.{DOMAIN}",
            spf: str = "pass", authserv: str = AUTHSERV, client: str = f"{HOST_FQDN} [{HOST_V4}]") -> bytes:
    """What the lab receiver adds: OpenDKIM's verdict per signature (really verified here),
    policyd-spf's, and Postfix's Received header for the hop."""
    signatures = [v for n, v in received.header_fields(raw) if n.lower() == "dkim-signature"]
    added = []
    for idx, value in enumerate(signatures):
        tags = dict(t.strip().split("=", 1) for t in value.split(";") if "=" in t)
        try:
            ok = dkim.DKIM(raw).verify(idx=idx, dnsfunc=zone.dnsfunc)
        except dkim.DKIMException:
            ok = False
        b = "".join(tags["b"].split())[:8]
        added.append(f"Authentication-Results: {authserv};\r\n\tdkim={'pass' if ok else 'fail'} "
                     f"(2048-bit key; unprotected key)\r\n\theader.d={tags['d'].strip()} header.i=@{tags['d'].strip()} "
                     f"header.a={tags['a'].strip()} header.s={tags['s'].strip()} header.b={b}")
    added.append(f"Authentication-Results: {authserv}; spf={spf} (sender SPF authorized) smtp.mailfrom={mailfrom}")
    using = ("\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\t key-exchange X25519 "
             "server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n\t(No client certificate requested)"
             if tls else "")
    added.append(f"Received: from {HOST_FQDN} ({client}){using}\r\n\tby mx.inbox.test (Postfix) with "
                 f"{'ESMTPS' if tls else 'ESMTP'} id 4ZQk3c0Xyzz9sT\r\n\tfor <verify@inbox.test>; {formatdate()}")
    added.append("Received: from mx.inbox.test by mx.inbox.test with LMTP id 8Jc2Ab; " + formatdate())
    added.append(f"Return-Path: <{mailfrom}>")
    return "\r\n".join(reversed(added)).encode() + b"\r\n" + raw


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    return load(copy_inventory(tmp_path_factory.mktemp("inv") / "inv"))


def judge(raw: bytes, zone: Zone, inv, *, own: bool = False) -> dict[str, CheckResult]:
    record, tags = req.dmarc_record(zone.resolve, DOMAIN)
    rows = req.judge_message(raw, domain=DOMAIN, authserv_id=AUTHSERV, resolve=zone.resolve,
                             hosts=inv.hosts_for(DOMAIN), own_headers=own, dmarc_tags=tags)
    out = {r.name: r for r in rows + [record]}
    assert all(r.group == "requirements" and r.subject == DOMAIN for r in out.values())
    return out


def statuses(rows: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.status for name, r in rows.items()}


def wire(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=SMTP)


# --- the whole table ------------------------------------------------------------------------------

def test_a_signed_one_click_newsletter_passes_every_row(keys, inv):
    zone = base_zone(keys)
    rows = judge(receive(sign(wire(message()), keys["rsa"]), zone), zone, inv)
    assert set(rows) == set(req.SENDING_ROWS) | {"dmarc.record"}
    assert statuses(rows) == {n: "pass" for n in rows}, {n: r.detail for n, r in rows.items() if r.status != "pass"}
    assert "2048-bit RSA" in rows["dkim.key-bits"].detail
    assert "TLSv1.3" in rows["tls.to-receiver"].detail
    assert "https://shop.test/u/abc" in rows["list-unsubscribe.https"].detail
    assert "SPF (bounces.shop.test)" in rows["dmarc.aligned"].detail and "DKIM (d=shop.test)" in rows["dmarc.aligned"].detail


def test_without_the_headers_https_and_one_click_fail_and_signed_is_unknown(keys, inv):
    zone = base_zone(keys)
    rows = judge(receive(sign(wire(message(unsubscribe=None, post=None)), keys["rsa"]), zone), zone, inv)
    assert rows["list-unsubscribe.https"].status == "fail"
    assert "no List-Unsubscribe header" in rows["list-unsubscribe.https"].detail
    assert "List-Unsubscribe: <https://" in rows["list-unsubscribe.https"].fix
    assert rows["list-unsubscribe.one-click"].status == "fail"
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in rows["list-unsubscribe.one-click"].fix
    assert rows["list-unsubscribe.signed"].status == "inconclusive"
    assert {n for n, s in statuses(rows).items() if s != "pass"} == {
        "list-unsubscribe.https", "list-unsubscribe.one-click", "list-unsubscribe.signed"}


def test_a_mailto_only_unsubscribe_is_no_one_click(keys, inv):
    zone = base_zone(keys)
    rows = judge(receive(sign(wire(message(unsubscribe="<mailto:unsub@shop.test>")), keys["rsa"]), zone), zone, inv)
    assert rows["list-unsubscribe.https"].status == "fail" and "has no https URL" in rows["list-unsubscribe.https"].detail
    assert rows["list-unsubscribe.one-click"].status == "fail"
    assert "without an https URL" in rows["list-unsubscribe.one-click"].detail
    rows = judge(receive(sign(wire(message(post="List-Unsubscribe=Yes")), keys["rsa"]), zone), zone, inv)
    assert rows["list-unsubscribe.https"].status == "pass" and rows["list-unsubscribe.one-click"].status == "fail"


def test_list_unsubscribe_post_outside_h_fails_signed(keys, inv):
    zone = base_zone(keys)
    headers = [h for h in ONE_CLICK_HEADERS if h != "List-Unsubscribe-Post"]
    rows = judge(receive(sign(wire(message()), keys["rsa"], headers=headers), zone), zone, inv)
    row = rows["list-unsubscribe.signed"]
    assert row.status == "fail", row
    assert row.detail.startswith("List-Unsubscribe-Post not in h= of the signature d=shop.test s=s1")
    assert "opendkim_sign_headers" in row.fix
    assert rows["dkim.pass"].status == "pass"  # the signature itself is fine


def test_headers_signed_only_by_a_foreign_domain_do_not_count(keys, inv):
    zone = base_zone(keys)
    publish(zone, "esp", keys["rsa"], "esp.example")
    raw = sign(wire(message()), keys["rsa"], "esp", "esp.example")
    raw = sign(raw, keys["rsa"], headers=["From", "Subject", "Date"])
    rows = judge(receive(raw, zone), zone, inv)
    assert rows["list-unsubscribe.signed"].status == "fail", rows["list-unsubscribe.signed"]
    assert "List-Unsubscribe and List-Unsubscribe-Post not in h=" in rows["list-unsubscribe.signed"].detail


def test_own_headers_judge_the_server_and_leave_the_application_rows_unknown(keys, inv):
    zone = base_zone(keys)
    msg, own = req.message_for(DOMAIN, None)
    assert own and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(msg["List-Unsubscribe"]).startswith("<https://shop.test/unsubscribe/mailops-verify-")
    msg["From"], msg["Date"], msg["Message-ID"] = f"news@{DOMAIN}", formatdate(), make_msgid(domain=DOMAIN)
    rows = judge(receive(sign(wire(msg), keys["rsa"]), zone), zone, inv, own=True)
    for name in ("list-unsubscribe.https", "list-unsubscribe.one-click"):
        assert rows[name].status == "inconclusive" and rows[name].detail == req.NO_SAMPLE
    assert rows["list-unsubscribe.signed"].status == "pass"
    assert "verify's own List-Unsubscribe headers" in rows["list-unsubscribe.signed"].detail


# --- authentication -----------------------------------------------------------------------------

def test_verdicts_of_another_authserv_id_are_ignored(keys, inv):
    zone = base_zone(keys)
    forged = receive(wire(message()), zone, authserv="mx.inbox.test.evil", spf="pass")
    rows = judge(forged, zone, inv)
    assert rows["spf.pass"].status == "fail" and rows["dkim.pass"].status == "fail"
    assert rows["dkim.key-bits"].status == "inconclusive" and rows["dmarc.aligned"].status == "fail"


def test_a_signature_that_does_not_verify_is_not_passing(keys, inv):
    zone = base_zone(keys)
    raw = sign(wire(message()), keys["rsa"]).replace(b"the newsletter.", b"the newsletter!")
    rows = judge(receive(raw, zone), zone, inv)
    assert rows["dkim.pass"].status == "fail" and "dkim=fail" in rows["dkim.pass"].detail
    assert "sign with an active key" in rows["dkim.pass"].fix
    assert rows["list-unsubscribe.signed"].status == "fail"
    # SPF still aligns (relaxed: bounces.shop.test and shop.test share the organisational domain)
    assert rows["dmarc.aligned"].status == "pass" and "SPF (bounces.shop.test)" in rows["dmarc.aligned"].detail


def test_spf_fail_and_an_unaligned_dkim_domain_fail_alignment(keys, inv):
    zone = base_zone(keys)
    publish(zone, "esp", keys["rsa"], "esp.example")
    raw = sign(wire(message()), keys["rsa"], "esp", "esp.example")
    rows = judge(receive(raw, zone, spf="softfail"), zone, inv)
    assert rows["spf.pass"].status == "fail" and rows["dkim.pass"].status == "pass"
    assert rows["dmarc.aligned"].status == "fail"
    assert "aligned with none of no SPF pass, DKIM d=esp.example" in rows["dmarc.aligned"].detail


def test_strict_alignment_in_the_record_is_honoured(keys, inv):
    zone = base_zone(keys)
    zone.records[(f"_dmarc.{DOMAIN}", "TXT")] = ["v=DMARC1; p=reject; adkim=s; aspf=s"]
    publish(zone, "s1", keys["rsa"], f"mail.{DOMAIN}")
    raw = sign(wire(message()), keys["rsa"], "s1", f"mail.{DOMAIN}")
    rows = judge(receive(raw, zone), zone, inv)
    assert rows["dkim.pass"].status == "pass" and rows["dmarc.aligned"].status == "fail"
    zone.records[(f"_dmarc.{DOMAIN}", "TXT")] = ["v=DMARC1; p=reject"]
    assert judge(receive(raw, zone), zone, inv)["dmarc.aligned"].status == "pass"


def test_key_bits_1024_warns_and_ed25519_alone_fails(keys, inv):
    zone = base_zone(keys)
    publish(zone, "small", keys["rsa1024"])
    rows = judge(receive(sign(wire(message()), keys["rsa1024"], "small"), zone), zone, inv)
    assert rows["dkim.key-bits"].status == "warn" and "1024-bit RSA" in rows["dkim.key-bits"].detail
    assert "mailops dkim rotate" in rows["dkim.key-bits"].fix

    publish(zone, "ed", keys["ed"])
    rows = judge(receive(sign(wire(message()), keys["ed"], "ed"), zone), zone, inv)
    assert rows["dkim.pass"].status == "pass", rows["dkim.pass"]
    assert rows["dkim.key-bits"].status == "fail" and "only an Ed25519 signature" in rows["dkim.key-bits"].detail
    assert "algorithms: [rsa]" in rows["dkim.key-bits"].fix

    both = sign(sign(wire(message()), keys["ed"], "ed"), keys["rsa"], "s1")
    rows = judge(receive(both, zone), zone, inv)
    assert rows["dkim.key-bits"].status == "pass" and "s=s1" in rows["dkim.key-bits"].detail


def test_key_under_1024_bits_fails(tmp_path, keys):
    # cryptography will not make such a key; openssl does (an old key still published somewhere)
    pem = tmp_path / "k512.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(pem), "768"], check=True, capture_output=True)
    small = ser.load_pem_private_key(pem.read_bytes(), None)
    zone = Zone()
    publish(zone, "old", small)
    sig = received.Signature(DOMAIN, "old", "rsa-sha256", ("from",), "xyz")
    row = req.judge_key_bits(DOMAIN, [sig], zone.resolve)
    assert row.status == "fail" and "768-bit RSA (Gmail and Yahoo require >= 1024)" in row.detail
    assert req.judge_key_bits(DOMAIN, [sig], Zone(silent={f"old._domainkey.{DOMAIN}"}).resolve).status == "inconclusive"


# --- DMARC record -----------------------------------------------------------------------------------

def test_dmarc_record_present_missing_broken_unanswered_and_inherited():
    ok, tags = req.dmarc_record(Zone({(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=none"]}).resolve, DOMAIN)
    assert ok.status == "pass" and tags["p"] == "none"
    missing, _ = req.dmarc_record(Zone({(DOMAIN, "TXT"): ["v=spf1 -all"]}).resolve, DOMAIN)
    assert missing.status == "fail" and "no DMARC record at _dmarc.shop.test" in missing.detail
    assert "mailops dns sync --apply" in missing.fix
    two, _ = req.dmarc_record(Zone({(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}).resolve,
                              DOMAIN)
    assert two.status == "fail" and "2 DMARC records" in two.detail
    bad, _ = req.dmarc_record(Zone({(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=bounce"]}).resolve, DOMAIN)
    assert bad.status == "fail" and "invalid p=bounce" in bad.detail
    silent, _ = req.dmarc_record(Zone(silent={f"_dmarc.{DOMAIN}"}).resolve, DOMAIN)
    assert silent.status == "inconclusive"
    inherited, _ = req.dmarc_record(Zone({(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=quarantine"]}).resolve,
                                    f"news.{DOMAIN}")
    assert inherited.status == "pass" and "organisational domain shop.test" in inherited.detail


def test_organisational_domain_follows_the_public_suffix_list(tmp_path):
    psl = tmp_path / "psl.dat"
    psl.write_text("// comment\ncom\nuk\nco.uk\n*.ck\n!www.ck\n")
    assert received.organisational_domain("news.mail.example.co.uk", psl) == "example.co.uk"
    assert received.organisational_domain("a.b.foo.ck", psl) == "b.foo.ck"
    assert received.organisational_domain("mail.www.ck", psl) == "www.ck"
    assert received.organisational_domain("bounces.shop.test", psl) == "shop.test"     # the default rule
    assert received.organisational_domain("co.uk", psl) == "co.uk"
    assert received.organisational_domain("x.example.co.uk", tmp_path / "absent") == "co.uk"  # no list: default rule
    if received.PSL.exists():
        assert received.organisational_domain("a.b.example.co.uk") == "example.co.uk"


# --- the message itself -------------------------------------------------------------------------------

def test_rfc5322_names_each_problem(keys, inv):
    zone = base_zone(keys)
    raw = wire(message())
    raw = raw.replace(b"Subject:", b"Subject: twice\r\nSubject:", 1)
    raw = raw.replace(b"Message-ID: <", b"Message-ID: <no-at-sign", 1).replace(b"@shop.test>", b">", 1)
    raw = raw.replace(b"From: news@shop.test", b"From: news@shop.test, other@shop.test", 1)
    raw += b"x" * 1200 + b"\r\n"
    row = judge(receive(raw, zone), zone, inv)["message.rfc5322"]
    assert row.status == "fail"
    for problem in ("Subject appears 2 times", "Message-ID is not <left@right>", "no Sender",
                    "1 line(s) over 998 characters"):
        assert problem in row.detail, row.detail
    no_date = wire(message()).replace(b"Date:", b"X-Date:", 1)
    row = judge(receive(no_date, zone), zone, inv)["message.rfc5322"]
    assert row.status == "fail" and row.detail == "no Date"
    bad_date = wire(message()).replace(b"Date: ", b"Date: yesterday, ", 1)
    assert "Date is not an RFC 5322 date-time" in judge(receive(bad_date, zone), zone, inv)["message.rfc5322"].detail


def test_tls_on_the_hop_into_the_receiver(keys, inv):
    zone = base_zone(keys)
    raw = sign(wire(message()), keys["rsa"])
    assert judge(receive(raw, zone, tls=False), zone, inv)["tls.to-receiver"].status == "fail"
    over_v6 = judge(receive(raw, zone, client=f"unknown [IPv6:{HOST_V6.replace('::', ':0:0:0:0:')}]"), zone, inv)
    assert over_v6["tls.to-receiver"].status == "pass"
    other = judge(receive(raw, zone, client="relay.example [192.0.2.7]").replace(HOST_FQDN.encode(), b"relay.example"),
                  zone, inv)
    assert other["tls.to-receiver"].status == "inconclusive"


# --- rows without a message -------------------------------------------------------------------------

def fcrdns(status: str, host: str = "mta1.shop.test", detail: str = "d") -> CheckResult:
    return CheckResult("dns", host, "fcrdns.ipv4", status, detail, "set the PTR" if status in ("fail", "warn") else "")


def test_fcrdns_row_is_the_worst_address():
    assert req.fcrdns_row(DOMAIN, [fcrdns("pass", detail="a -> h -> a")] * 2).status == "pass"
    row = req.fcrdns_row(DOMAIN, [fcrdns("pass"), fcrdns("inconclusive"), fcrdns("fail", "mta2.shop.test", "no PTR")])
    assert row.status == "fail" and row.detail == "mta2.shop.test: no PTR" and row.fix == "set the PTR"
    assert req.fcrdns_row(DOMAIN, [fcrdns("pass"), fcrdns("inconclusive")]).status == "inconclusive"
    assert req.fcrdns_row(DOMAIN, []).status == "inconclusive"


def report(*rows: tuple[str, str, int, int]) -> dict:
    """complaints_report's shape: rows of domain, day, complaints, sent, rate."""
    return {"rows": [{"domain": d, "day": day, "complaints": c, "sent": s, "rate": c / s if s else None}
                     for d, day, c, s in rows], "lines": [0.001, 0.003], "unreachable": {}}


@pytest.mark.parametrize(("complaints", "status"), [(0, "pass"), (9, "pass"), (10, "warn"), (29, "warn"), (30, "fail")])
def test_complaint_rate_lines(complaints, status):
    row = req.complaints_row(DOMAIN, report((DOMAIN, "2026-12-04", complaints, 5000),
                                            (DOMAIN, "2026-12-05", 0, 5000), ("news.test", "2026-12-05", 900, 1000)))
    assert row.status == status, row
    assert f"{complaints} complaint(s) / 10000 sent" in row.detail


def test_complaint_rate_is_unknown_without_data():
    off = req.complaints_row(DOMAIN, None, "the return path is off (mailops_return_path)")
    nothing = req.complaints_row(DOMAIN, report(("news.test", "2026-12-05", 1, 100)))
    few = req.complaints_row(DOMAIN, report((DOMAIN, "2026-12-05", 0, 3)))
    assert off.status == nothing.status == few.status == "inconclusive"
    assert "3 message(s) of shop.test sent in 7 days (0 complaint(s)), too few" in few.detail
    assert off.detail.startswith("unknown: the return path is off") and nothing.detail.startswith("unknown: no mail")


@pytest.mark.parametrize(("sent", "status"), [(2000, "pass"), (400, "warn"), (300, "fail")])
def test_complaint_rate_from_the_return_paths_real_reports(world, tmp_path, sent, status):
    """One ARF complaint received by a host's return path, against ``sent`` deliveries in its log."""
    from datetime import datetime, timedelta, timezone

    from mailops.ops.returnpath import complaint_rates
    from tests.test_returnpath_controller import deliver as receive_on_host
    from tests.test_returnpath_messages import arf
    inv, runner, states = world
    receive_on_host(states[inv.hosts[0].name], arf(), "abuse@shop.test", "feedback@fbl.example.org")
    now = datetime.now(timezone.utc)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S+0000")
    lines = []
    for i in range(sent):
        lines.append(f"{ts} mta1 postfix/qmgr[900]: 4Q{i:08X}: from=<news@shop.test>, size=4211, nrcpt=1 (queue active)")
        lines.append(f"{ts} mta1 postfix/smtp[3120]: 4Q{i:08X}: to=<u{i}@inbox.test>, relay=mx.inbox.test"
                     "[198.51.100.2]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)")
    log = tmp_path / "mail.log"
    log.write_text("\n".join(lines) + "\n")
    data = complaint_rates(inv, inv.hosts, runner, since=now - timedelta(days=req.COMPLAINT_DAYS), local_log=log)
    row = req.complaints_row(DOMAIN, data)
    assert row.status == status, row
    assert f"1 complaint(s) / {sent} sent in 7 days" in row.detail


# --- what is sent ------------------------------------------------------------------------------------

def test_a_sample_keeps_its_from_and_body_and_loses_an_earlier_trip(keys):
    sample = message(sender="Shop News <news@shop.test>")
    sample["Cc"], sample["Bcc"] = "someone@example.com", "hidden@example.com"
    raw = b"Received: from a by b; " + formatdate().encode() + b"\r\n" + sign(wire(sample), keys["rsa"])
    raw = b"Authentication-Results: mx.inbox.test; dkim=pass header.d=shop.test\r\n" + raw
    msg, own = req.message_for(DOMAIN, req.load_sample(raw))
    assert not own
    assert str(msg["From"]) == "Shop News <news@shop.test>" and "the newsletter." in msg.get_content()
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    for gone in ("Cc", "Bcc", "Received", "DKIM-Signature", "Authentication-Results", "Message-ID", "Date", "To"):
        assert gone not in msg, gone
    foreign, _ = req.message_for(DOMAIN, req.load_sample(wire(message(sender="news@elsewhere.example"))))
    assert "From" not in foreign  # deliver sets the bulk user's address


def test_a_sample_that_is_no_message_is_one_line(tmp_path):
    for data, words in ((b"", "the file is empty"), (b"%PDF-1.7\n\x00\x01binary", "no RFC 5322 header")):
        with pytest.raises(MailopsError) as err:
            req.load_sample(data)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_bulk_user_is_the_stream_bulk_user_that_may_send_as_the_domain(tmp_path):
    def settings(data):
        data["mailops_submission_users"] = [
            {"login": "alice@shop.test", "password": {"file": "x"}},
            {"login": "news@news.test", "password": {"file": "x"}, "stream": "bulk",
             "send_as": ["letters@shop.test"]}]
    inv = load(copy_inventory(tmp_path / "inv", settings=settings))
    assert req.bulk_user(inv, "shop.test").login == "news@news.test"
    assert req.bulk_user(inv, "news.test").login == "news@news.test"

    def transactional_only(data):
        settings(data)
        data["mailops_submission_users"][1]["stream"] = "transactional"
    inv = load(copy_inventory(tmp_path / "inv2", settings=transactional_only))
    assert req.bulk_user(inv, "shop.test") is None


def test_no_bulk_user_makes_every_sending_row_name_the_setting(tmp_path):
    def settings(data):
        data["mailops_submission_users"] = [{"login": "alice@shop.test", "password": {"file": "x"}}]
        data.pop("mailops_return_path", None)  # (and the report addresses only it would accept)
        data["mailops_domains"]["shop.test"]["dmarc"].pop("rua", None)
        data["mailops_domains"]["shop.test"].pop("tls_rpt", None)
        data["mailops_dns_resolvers"] = ["127.0.0.1"]  # nothing answers: DNS rows unknown, quickly
    inv = load(copy_inventory(tmp_path / "inv", settings=settings))
    rows = req.check(inv, None, ["shop.test"])
    assert [r.name for r in rows] == list(req.ROWS)
    assert {r.status for r in rows} == {"inconclusive"}
    for r in rows:
        if r.name in req.SENDING_ROWS:
            assert "set stream: bulk on the submission user that sends the newsletters" in r.detail
    assert "return path is off" in next(r for r in rows if r.name == "complaints.rate").detail


# --- the lab: vps11 (mta11.shop.test) sends to the lab receiver --------------------------------------

LAB_NUMBER = 11
LAB_FQDN = f"mta{LAB_NUMBER}.shop.test"
BULK = "news@shop.test"
OPENDKIM_CONF = "/etc/opendkim.conf"


class LabSender:
    """vps11 converged by the mail roles (sasl, opendkim, postfix) with a stream: bulk user, shop.test's
    records in the lab BIND, the lab receiver's mailbox over IMAP as the seed mailbox."""

    def __init__(self, lab_cfg, work):
        from mailops.lab import core, mailbox as labmailbox
        from tests.mailhost import MailHost, new_password

        self.lab_cfg, self.core = lab_cfg, core
        password = new_password("news")
        secret = work / "inventory" / "secrets" / "news.password"
        self.maildir = core.machine_root(lab_cfg, "mx") / "var/mail/vhosts/inbox.test/Maildir"
        self.host = MailHost(lab_cfg, work, LAB_NUMBER, selectors={"mo-reqtest-a": "active"},
                             users=[{"login": BULK, "password": {"file": str(secret)}, "stream": "bulk"}],
                             passwords={BULK: password}, group_vars={
                                 "mailops_dns_resolvers": [lab_cfg.gateway_ipv4],
                                 "mailops_verify": {"ca_bundle": str(work / "tls" / "fullchain.pem"), "mailboxes": [
                                     {"name": "lab", "recipient": "verify@inbox.test", "authserv_id": AUTHSERV,
                                      "imap": {"host": "mx.inbox.test", "login": "verify@inbox.test",
                                               "password": {"file": str(labmailbox.password_path(lab_cfg, "verify"))},
                                               "ca_bundle": str(labmailbox.ca_path(lab_cfg))}}]}})
        self.host.converge()
        # the stand-in certificate is new on each run: the smtpd processes still running serve the old one
        self.host.ssh("postfix reload")
        self.inv = load(self.host.inv)

    def check(self, sample: bytes | None) -> dict[str, CheckResult]:
        rows = req.check(self.inv, None, [DOMAIN], sample=sample)
        assert all(r.subject == DOMAIN and r.group == "requirements" for r in rows)
        return {r.name: r for r in rows}

    def in_maildir(self, token: str) -> list[str]:
        found = []
        for sub in ("new", "cur"):
            for path in (self.maildir / sub).iterdir():
                try:
                    if token.encode() in path.read_bytes():
                        found.append(path.name)
                except OSError:
                    continue
        return found

    def dmarc_record(self) -> list[str]:
        from mailops.dns.sync import DnsReader
        return sorted(DnsReader([self.lab_cfg.gateway_ipv4]).values(self.lab_cfg.gateway_ipv4,
                                                                    f"_dmarc.{DOMAIN}", "TXT") or [])

    def set_dmarc(self, values: list[str]) -> None:
        """Replace the TXT RRset at _dmarc.shop.test in the lab BIND (none: delete it)."""
        from mailops.lab import dns as labdns
        name = f"_dmarc.{DOMAIN}."
        labdns.update(self.core.dns_config(self.lab_cfg), f"{DOMAIN}.", delete=[(name, "TXT")],
                      add=[(name, "TXT", v, 60) for v in values])


@pytest.fixture(scope="module")
def lab_sender(lab_cfg, tmp_path_factory):
    from tests.mailhost import ensure_lab_vps
    ensure_lab_vps(lab_cfg, LAB_NUMBER)
    return LabSender(lab_cfg, tmp_path_factory.mktemp("requirements"))


def newsletter(token: str, *, one_click: bool = True) -> bytes:
    msg = message(unsubscribe=f"<https://shop.test/unsubscribe/{token}>" if one_click else None,
                  post="List-Unsubscribe=One-Click" if one_click else None, sender=f"Shop News <{BULK}>")
    msg.replace_header("Subject", f"newsletter {token}")
    return wire(msg)


def not_passing(rows: dict[str, CheckResult]) -> dict[str, str]:
    return {n: f"{r.status}: {r.detail}" for n, r in rows.items() if r.status != "pass"}


@pytest.mark.lab
def test_lab_a_one_click_newsletter_meets_every_requirement(lab_sender):
    token = uuid.uuid4().hex
    rows = lab_sender.check(newsletter(token))
    assert [n for n in rows if n in req.ROWS] == list(req.ROWS)
    assert not_passing(rows) == {"complaints.rate": f"inconclusive: {rows['complaints.rate'].detail}"}, \
        not_passing(rows)
    assert "return path is off" in rows["complaints.rate"].detail
    assert "2048-bit RSA" in rows["dkim.key-bits"].detail and "s=mo-reqtest-a" in rows["dkim.key-bits"].detail
    assert "TLSv1" in rows["tls.to-receiver"].detail
    assert "198.51.100.21 -> mta11.shop.test" in rows["ptr.fcrdns"].detail
    assert "2001:db8:51::21 -> mta11.shop.test" in rows["ptr.fcrdns"].detail
    assert f"https://shop.test/unsubscribe/{token}" in rows["list-unsubscribe.https"].detail
    assert rows["live-send"].status == "pass" and "into INBOX" in rows["live-send"].detail
    assert "live-send.cleanup" not in rows
    assert lab_sender.in_maildir(token) == []  # the test message is gone


@pytest.mark.lab
def test_lab_without_a_sample_the_server_is_judged_with_verifys_own_headers(lab_sender):
    rows = lab_sender.check(None)
    assert rows["list-unsubscribe.https"].status == rows["list-unsubscribe.one-click"].status == "inconclusive"
    assert rows["list-unsubscribe.signed"].status == "pass"
    assert "verify's own" in rows["list-unsubscribe.signed"].detail
    assert set(not_passing(rows)) == {"list-unsubscribe.https", "list-unsubscribe.one-click", "complaints.rate"}


@pytest.mark.lab
def test_lab_a_newsletter_without_the_headers_names_both_rows(lab_sender):
    token = uuid.uuid4().hex
    rows = lab_sender.check(newsletter(token, one_click=False))
    assert {n: r.status for n, r in rows.items() if r.status == "fail"} == {
        "list-unsubscribe.https": "fail", "list-unsubscribe.one-click": "fail"}, not_passing(rows)
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in rows["list-unsubscribe.one-click"].fix
    assert lab_sender.in_maildir(token) == []


@pytest.mark.lab
def test_lab_list_unsubscribe_post_not_signed_by_opendkim(lab_sender):
    host = lab_sender.host
    host.ssh(f"cp -p {OPENDKIM_CONF} /root/opendkim.conf.before-requirements && "
             f"sed -i -E '/^SignHeaders/s/,List-Unsubscribe-Post//' {OPENDKIM_CONF} && "
             f"grep -q '^SignHeaders.*List-Unsubscribe,' {OPENDKIM_CONF} && "
             f"! grep -q '^SignHeaders.*List-Unsubscribe-Post' {OPENDKIM_CONF} && systemctl restart opendkim")
    try:
        rows = lab_sender.check(newsletter(uuid.uuid4().hex))
    finally:
        host.ssh(f"cp -p /root/opendkim.conf.before-requirements {OPENDKIM_CONF} && systemctl restart opendkim")
    row = rows["list-unsubscribe.signed"]
    assert row.status == "fail", not_passing(rows)
    assert row.detail.startswith("List-Unsubscribe-Post not in h= of the signature d=shop.test s=mo-reqtest-a")
    assert set(n for n, r in rows.items() if r.status == "fail") == {"list-unsubscribe.signed"}, not_passing(rows)
    assert lab_sender.check(newsletter(uuid.uuid4().hex))["list-unsubscribe.signed"].status == "pass"


@pytest.mark.lab
def test_lab_dmarc_record_removed_from_dns(lab_sender):
    before = lab_sender.dmarc_record()
    assert before, "the converge published a DMARC record for shop.test"
    lab_sender.set_dmarc([])
    try:
        rows = lab_sender.check(newsletter(uuid.uuid4().hex))
    finally:
        lab_sender.set_dmarc(before)
    assert lab_sender.dmarc_record() == before
    row = rows["dmarc.record"]
    assert row.status == "fail" and "no DMARC record at _dmarc.shop.test" in row.detail, not_passing(rows)
    assert "mailops dns sync --apply" in row.fix
    assert set(n for n, r in rows.items() if r.status == "fail") == {"dmarc.record"}, not_passing(rows)
    assert lab_sender.check(newsletter(uuid.uuid4().hex))["dmarc.record"].status == "pass"


@pytest.mark.lab
def test_lab_the_cli_prints_the_table_from_a_sample_file(lab_sender, tmp_path):
    import json

    from tests.helpers import mailops
    sample = tmp_path / "newsletter.eml"
    sample.write_bytes(newsletter(uuid.uuid4().hex))
    proc = mailops("verify", "-i", str(lab_sender.host.inv), "--only", "requirements", "--domain", DOMAIN,
                   "--sample", str(sample), "--json")
    report = json.loads(proc.stdout)
    assert report["ok"] and report["counts"]["fail"] == 0, report
    rows = {r["name"]: r["status"] for r in report["results"]}
    assert [n for n in rows if n in req.ROWS] == list(req.ROWS)
    assert rows["list-unsubscribe.one-click"] == "pass" and rows["complaints.rate"] == "inconclusive"

"""`mailops verify --only requirements`: one table per sending domain against the bulk-sender
requirements of Gmail (Email sender guidelines) and Yahoo (Sender Best Practices), both in
force since February 2024.  docs/bulk-sender-requirements.md cites the rule behind each row.

Per domain a message is sent through ``deliver`` as a *bulk* submission user (``stream:
bulk``) to the first usable seed mailbox: the operator's ``sample`` (an .eml of what their
application sends) or, without one, verify's own message carrying one-click unsubscribe
headers.  The received copy is judged by pure functions (:func:`judge_message` and the
helpers it calls; :mod:`mailops.verify.received` reads the copy), DNS through
:class:`DnsView`.  Rows that need no message (DMARC record, FCrDNS, complaint rate) are
judged from DNS and the return path's reports.

Every row is pass / warn / fail / inconclusive; inconclusive is "unknown", never a pass.
"""

from __future__ import annotations

import copy
import email
import email.policy
import ipaddress
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Callable

from mailops.dns.kinds import dkim as dkim_kind, dmarc as dmarc_kind, ptr
from mailops.errors import MailopsError
from mailops.verify.received import (AuthResult, Signature, aligned, auth_results, from_domain, header_fields,
                                     organisational_domain, passing_signatures, values)
from mailops.verify.result import CheckResult

GROUP = "requirements"
# The table's rows, in the order they are reported.
ROWS = ("spf.pass", "dkim.pass", "dkim.key-bits", "dmarc.record", "dmarc.aligned", "ptr.fcrdns",
        "tls.to-receiver", "message.rfc5322", "list-unsubscribe.https", "list-unsubscribe.one-click",
        "list-unsubscribe.signed", "complaints.rate")
# The rows judged on the received test message (the others come from DNS and the reports).
SENDING_ROWS = tuple(r for r in ROWS if r not in ("dmarc.record", "ptr.fcrdns", "complaints.rate"))

PROVIDER_MIN_BITS, MAILOPS_MIN_BITS = 1024, dkim_kind.MIN_RSA_BITS
COMPLAINT_DAYS = 7                        # the window complaints.rate judges...
COMPLAINT_MIN_SENT = 100                  # ...when this much was sent in it (a few test messages prove nothing)
SYNC = "mailops dns sync --apply"
# RFC 5322 3.6: fields that may appear at most once (Date and From exactly once).
SINGLETONS = ("date", "from", "sender", "reply-to", "to", "cc", "bcc", "message-id", "in-reply-to",
              "references", "subject")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
MSG_ID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[^\[\]\\\s]*\])>")      # RFC 5322 3.6.4
ONE_CLICK = "List-Unsubscribe=One-Click"                                      # RFC 8058 3.1
TLS_WITH = re.compile(r"\bwith\s+(?:ESMTPS|ESMTPSA|UTF8SMTPS|UTF8SMTPSA|LMTPS)\b", re.I)  # RFC 3848, RFC 6531
TLS_WORDS = re.compile(r"\(using (TLSv?[\d.]+)|version=(TLS[\d_.]+)", re.I)  # Postfix; Gmail, Microsoft
# Trace and authentication headers of a saved .eml: they describe an earlier trip, not this one.
SAMPLE_DROPPED = ("received", "return-path", "delivered-to", "x-original-to", "authentication-results",
                  "arc-seal", "arc-message-signature", "arc-authentication-results", "received-spf",
                  "dkim-signature", "message-id", "date", "to", "cc", "bcc", "resent-date", "resent-from",
                  "resent-sender", "resent-to", "resent-cc", "resent-bcc", "resent-message-id")

Resolve = Callable[[str, str], "frozenset[str] | None"]


def row(name: str, subject: str, status: str, detail: str, fix: str = "") -> CheckResult:
    return CheckResult(GROUP, subject, name, status, detail, fix)  # type: ignore[arg-type]


# --- the rows judged on the received message ------------------------------------------------------

def judge_spf(domain: str, results: list[AuthResult]) -> CheckResult:
    spf = [r for r in results if r.method == "spf"]
    if spf and spf[0].result == "pass":
        return row("spf.pass", domain, "pass", spf[0].text)
    return row("spf.pass", domain, "fail", spf[0].text if spf else "the receiver wrote no spf result",
               "the envelope sender's domain (with the return path: bounces.<domain>) must authorise the "
               f"host's IPv4 and IPv6 in SPF: {SYNC}")


def judge_dkim(domain: str, results: list[AuthResult]) -> CheckResult:
    dkim = [r for r in results if r.method == "dkim"]
    good = [r for r in dkim if r.result == "pass"]
    if good:
        return row("dkim.pass", domain, "pass", "; ".join(r.text for r in good))
    return row("dkim.pass", domain, "fail", "; ".join(r.text for r in dkim) or "the receiver wrote no dkim result",
               f"sign with an active key published in DNS: {SYNC}; mailops provision apply --tags opendkim")


def judge_key_bits(domain: str, passing: list[Signature], resolve: Resolve) -> CheckResult:
    """The RSA key of the passing signature (of the From domain first), read from DNS."""
    name = "dkim.key-bits"
    if not passing:
        return row(name, domain, "inconclusive", "no passing DKIM signature whose key could be measured "
                   "(see dkim.pass)")
    rsa = sorted((s for s in passing if s.algorithm == "rsa"), key=lambda s: not aligned(s.d, domain))
    if not rsa:
        which = ", ".join(f"d={s.d} s={s.s}" for s in passing)
        return row(name, domain, "fail", f"only an Ed25519 signature passes ({which}); Gmail and Yahoo "
                   "require a valid RSA signature (Ed25519 is not verified by every provider)",
                   f"sign with RSA as well: mailops_domains.{domain}.dkim.algorithms: [rsa]")
    sig = rsa[0]
    record = dkim_kind.record_name(sig.d, sig.s)
    answer = resolve(record, "TXT")
    if answer is None:
        return row(name, domain, "inconclusive", f"{record}: no answer from the resolvers")
    keys = [v for v in answer if "p" in dkim_kind.parse_tags(v)]
    bits = dkim_kind.rsa_bits(dkim_kind.parse_tags(keys[0])["p"]) if len(keys) == 1 else None
    where = f"d={sig.d} s={sig.s}: {record}"
    rotate = "rotate to a 2048-bit key: mailops dkim rotate, then " + SYNC
    if bits is None:
        return row(name, domain, "fail", f"{where} publishes {len(keys)} key(s), not one RSA key", rotate)
    if bits < PROVIDER_MIN_BITS:
        return row(name, domain, "fail", f"{where}: {bits}-bit RSA (Gmail and Yahoo require >= 1024)", rotate)
    if bits < MAILOPS_MIN_BITS:
        return row(name, domain, "warn", f"{where}: {bits}-bit RSA (providers accept >= 1024, mailops insists "
                   "on 2048)", rotate)
    return row(name, domain, "pass", f"{where}: {bits}-bit RSA")


def judge_alignment(domain: str, from_dom: str | None, results: list[AuthResult],
                    passing: list[Signature], dmarc_tags: dict | None) -> CheckResult:
    """The From domain aligned with SPF's or a passing DKIM signature's domain (relaxed unless the
    published record says adkim=s / aspf=s)."""
    name = "dmarc.aligned"
    if from_dom is None:
        return row(name, domain, "fail", "the received message has no From address",
                   "send with a From header of the domain (see message.rfc5322)")
    tags = dmarc_tags or {}
    spf = next((r for r in results if r.method == "spf"), None)
    spf_dom = None
    if spf is not None and spf.result == "pass":
        spf_dom = (spf.props.get("smtp.mailfrom") or spf.props.get("smtp.helo") or "").rpartition("@")[2]
    how = []
    if spf_dom and aligned(spf_dom, from_dom, strict=tags.get("aspf", "r").lower() == "s"):
        how.append(f"SPF ({spf_dom})")
    how += [f"DKIM (d={s.d})" for s in passing if aligned(s.d, from_dom, strict=tags.get("adkim", "r").lower() == "s")]
    dmarc = next((r.text for r in results if r.method == "dmarc"), "no dmarc result")
    if how:
        return row(name, domain, "pass", f"From {from_dom} aligned with {' and '.join(how)}; receiver: {dmarc}")
    seen = [f"SPF {spf_dom}" if spf_dom else "no SPF pass"] + [f"DKIM d={s.d}" for s in passing]
    return row(name, domain, "fail", f"From {from_dom} aligned with none of {', '.join(seen) or 'nothing'}; "
               f"receiver: {dmarc}",
               f"send From an address of {domain} through the mail hosts: their DKIM signs d={domain}")


def _hop_from(received: str) -> str:
    return re.split(r"\sby\s", received, maxsplit=1)[0]


def _names_host(text: str, names: set[str], addresses: set[str]) -> bool:
    words = {w.lower().rstrip(".") for w in re.findall(r"[A-Za-z0-9.-]+", text)}
    if words & names:
        return True
    for literal in re.findall(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]", text):
        try:
            if str(ipaddress.ip_address(literal)) in addresses:
                return True
        except ValueError:
            continue
    return False


def judge_tls(domain: str, fields, hosts) -> CheckResult:
    """The receiver's Received header for the hop from one of the domain's hosts shows TLS."""
    name = "tls.to-receiver"
    names = {h.fqdn.lower() for h in hosts}
    addresses = {str(ipaddress.ip_address(str(a))) for h in hosts for a in (h.ipv4, h.ipv6) if a}
    hop = next((v for v in values(fields, "Received") if _names_host(_hop_from(v), names, addresses)), None)
    if hop is None:
        return row(name, domain, "inconclusive", "no Received header names the hop from "
                   + ", ".join(sorted(names)) + " (the receiver did not record it)")
    words = TLS_WORDS.search(hop)
    version = next((g for g in words.groups() if g), "") if words else ""
    if TLS_WITH.search(hop) or words:
        return row(name, domain, "pass", f"the receiver recorded TLS{' (' + version + ')' if version else ''}: "
                   + hop[:160])
    return row(name, domain, "fail", "the hop into the receiver was not encrypted: " + hop[:160],
               "let Postfix use STARTTLS when the receiver offers it (smtp_tls_security_level = may or "
               "stronger): mailops provision apply --tags postfix")


def judge_rfc5322(domain: str, raw: bytes, fields) -> CheckResult:
    """RFC 5322: exactly one From (with a Sender when it has several mailboxes) and Date, a well-formed
    Message-ID, no duplicated singleton field (3.6), no line over 998 characters (2.1.1)."""
    problems = []
    count = {n: len(values(fields, n)) for n in SINGLETONS}
    for field in ("from", "date", "message-id"):
        if count[field] == 0:
            problems.append(f"no {field.title()}")
    problems += [f"{n.title()} appears {c} times" for n, c in count.items() if c > 1]
    froms = values(fields, "From")
    if froms:
        mailboxes = [a for _, a in getaddresses(froms[:1])]
        if not mailboxes or any("@" not in a for a in mailboxes):
            problems.append(f"From is not a mailbox list: {froms[0][:60]!r}")
        elif len(mailboxes) > 1 and count["sender"] == 0:
            problems.append("From has several mailboxes but there is no Sender (3.6.2)")
    for date in values(fields, "Date")[:1]:
        try:
            parsed = parsedate_to_datetime(date)  # naive for -0000, which 3.3 allows
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is None:
            problems.append(f"Date is not an RFC 5322 date-time: {date[:60]!r}")
    for msg_id in values(fields, "Message-ID")[:1]:
        if not MSG_ID.fullmatch(msg_id.strip()):
            problems.append(f"Message-ID is not <left@right>: {msg_id[:60]!r}")
    long_lines = sum(1 for line in re.split(rb"\r?\n", raw) if len(line) > 998)
    if long_lines:
        problems.append(f"{long_lines} line(s) over 998 characters (2.1.1)")
    if problems:
        return row("message.rfc5322", domain, "fail", "; ".join(problems),
                   "fix the message your application builds (RFC 5322 3.6: one From and Date, a Message-ID, each "
                   "singleton field once)")
    return row("message.rfc5322", domain, "pass", "one From and Date, a well-formed Message-ID, no duplicated "
               "singleton field, lines within 998 characters")


def unsubscribe_uris(fields) -> list[str]:
    """The URIs of List-Unsubscribe (RFC 2369: angle-bracketed, comma separated)."""
    return [u.strip() for v in values(fields, "List-Unsubscribe") for u in re.findall(r"<([^<>]*)>", v)]


NO_SAMPLE = ("no sample of your bulk mail: verify sent its own one-click headers; give --sample FILE "
             "(an .eml your application sends) to judge your application's")


def judge_unsubscribe(domain: str, fields, passing: list[Signature], *, own_headers: bool) -> list[CheckResult]:
    """list-unsubscribe.https, .one-click (RFC 8058) and .signed (both in h= of a passing signature
    aligned with the From domain).  With verify's own headers the first two say nothing about the
    operator's mail (inconclusive); .signed still judges the server."""
    https = [u for u in unsubscribe_uris(fields) if u.lower().startswith("https://")]
    posts = values(fields, "List-Unsubscribe-Post")
    listed = values(fields, "List-Unsubscribe")
    app = "make your application add "
    out = []
    if own_headers:
        out += [row("list-unsubscribe.https", domain, "inconclusive", NO_SAMPLE),
                row("list-unsubscribe.one-click", domain, "inconclusive", NO_SAMPLE)]
    else:
        if https:
            out.append(row("list-unsubscribe.https", domain, "pass", f"List-Unsubscribe: <{https[0]}>"))
        else:
            out.append(row("list-unsubscribe.https", domain, "fail",
                           f"List-Unsubscribe: {listed[0][:100]} has no https URL" if listed
                           else "no List-Unsubscribe header",
                           app + "List-Unsubscribe: <https://DOMAIN/unsubscribe/TOKEN> (a mailto: may follow)"))
        if len(posts) == 1 and posts[0].strip() == ONE_CLICK and https:
            out.append(row("list-unsubscribe.one-click", domain, "pass", f"List-Unsubscribe-Post: {ONE_CLICK}"))
        else:
            seen = ("no List-Unsubscribe-Post header" if not posts else
                    f"List-Unsubscribe-Post: {' | '.join(posts)[:80]}" + ("" if https else " without an https URL"))
            out.append(row("list-unsubscribe.one-click", domain, "fail", seen,
                           app + f"List-Unsubscribe-Post: {ONE_CLICK} with the https URL in List-Unsubscribe; "
                           "a POST to it must unsubscribe without further steps (RFC 8058)"))
    from_dom = from_domain(fields)
    mine = [s for s in passing if from_dom and aligned(s.d, from_dom)]
    own = " (verify's own List-Unsubscribe headers: this judges the server's signing)" if own_headers else ""
    name = "list-unsubscribe.signed"
    if not listed and not posts:
        out.append(row(name, domain, "inconclusive", "the message has no List-Unsubscribe or List-Unsubscribe-Post "
                       "header to sign (see list-unsubscribe.https)"))
    elif not mine:
        out.append(row(name, domain, "fail", f"no passing DKIM signature of {from_dom or 'the From domain'}{own}",
                       "see dkim.pass and dmarc.aligned"))
    elif any({"list-unsubscribe", "list-unsubscribe-post"} <= set(s.h) for s in mine):
        sig = next(s for s in mine if {"list-unsubscribe", "list-unsubscribe-post"} <= set(s.h))
        out.append(row(name, domain, "pass", f"both headers in h= of the signature d={sig.d} s={sig.s}{own}"))
    else:
        sig = mine[0]
        missing = [n for n in ("List-Unsubscribe", "List-Unsubscribe-Post") if n.lower() not in sig.h]
        out.append(row(name, domain, "fail", f"{' and '.join(missing)} not in h= of the signature d={sig.d} "
                       f"s={sig.s}{own}",
                       "sign both headers: keep List-Unsubscribe and List-Unsubscribe-Post in opendkim_sign_headers "
                       "and re-converge: mailops provision apply --tags opendkim"))
    return out


def dmarc_record(resolve: Resolve, domain: str) -> tuple[CheckResult, dict | None]:
    """dmarc.record from DNS (RFC 7489 6.6.3: the domain's record, else its organisational domain's),
    and the record's tags for the alignment row."""
    name = "dmarc.record"
    org = organisational_domain(domain)
    for where in dict.fromkeys([domain, org]):
        record = dmarc_kind.record_name(where)
        answer = resolve(record, "TXT")
        if answer is None:
            return row(name, domain, "inconclusive", f"{record}: no answer from the resolvers"), None
        found = dmarc_kind.dmarc_records(answer)
        if len(found) > 1:
            return row(name, domain, "fail", f"{record}: {len(found)} DMARC records (receivers ignore them all)",
                       f"publish exactly one DMARC record: {SYNC}"), None
        if found:
            tags, problems = dmarc_kind.parse_dmarc(found[0])
            policy = tags.get("p", "").lower()
            if problems or policy not in dmarc_kind.STRENGTH:
                why = "; ".join(problems) or "no p= tag"
                return row(name, domain, "fail", f"{record}: {why}: {found[0]}",
                           f"publish a valid record with p=none, quarantine or reject: {SYNC} --force"), None
            via = "" if where == domain else f" (the organisational domain {org}'s)"
            return row(name, domain, "pass", f"{record}{via}: {found[0]}"), tags
    return row(name, domain, "fail", f"no DMARC record at {dmarc_kind.record_name(domain)}"
               + (f" or {dmarc_kind.record_name(org)}" if org != domain else ""),
               f"publish one (at least p=none; mailops_domains.{domain}.dmarc): {SYNC}"), None


def judge_message(raw: bytes, *, domain: str, authserv_id: str, resolve: Resolve, hosts,
                  own_headers: bool, dmarc_tags: dict | None) -> list[CheckResult]:
    """Every sending row, judged on the received copy ``raw``: the receiver's verdicts
    (``authserv_id`` only), the message itself, and the DKIM key from DNS (``resolve``)."""
    fields = header_fields(raw)
    results = auth_results(fields, authserv_id)
    passing = passing_signatures(fields, results)
    return [judge_spf(domain, results), judge_dkim(domain, results), judge_key_bits(domain, passing, resolve),
            judge_alignment(domain, from_domain(fields), results, passing, dmarc_tags),
            judge_tls(domain, fields, hosts), judge_rfc5322(domain, raw, fields),
            *judge_unsubscribe(domain, fields, passing, own_headers=own_headers)]


# --- rows without a message ----------------------------------------------------------------------

def fcrdns_row(domain: str, per_address: list[CheckResult]) -> CheckResult:
    """ptr.fcrdns: the dns group's FCrDNS rows of every sending address, as one row (the worst wins)."""
    name = "ptr.fcrdns"
    if not per_address:
        return row(name, domain, "inconclusive", "the domain has no mail host")
    for status in ("fail", "inconclusive", "warn"):
        bad = [r for r in per_address if r.status == status]
        if bad:
            return row(name, domain, status, "; ".join(f"{r.subject}: {r.detail}" for r in bad), bad[0].fix)
    return row(name, domain, "pass", "; ".join(r.detail for r in per_address))


def complaints_row(domain: str, report: dict | None, why: str | None = None) -> CheckResult:
    """complaints.rate over the report's days (mailops.ops.returnpath.complaints_report rows):
    < 0.1 % pass, 0.1-0.3 % warn, >= 0.3 % fail; no report or too little sent: unknown."""
    name = "complaints.rate"
    if report is None:
        return row(name, domain, "inconclusive", f"unknown: {why}")
    rows = [r for r in report.get("rows", []) if r["domain"] == domain.lower()]
    sent, complaints = sum(r["sent"] for r in rows), sum(r["complaints"] for r in rows)
    gone = report.get("unreachable") or {}
    if not sent:
        return row(name, domain, "inconclusive", f"unknown: no mail of {domain} in the delivery log of the last "
                   f"{COMPLAINT_DAYS} days" + (f" ({len(gone)} host(s) unreachable)" if gone else ""))
    if sent < COMPLAINT_MIN_SENT:
        return row(name, domain, "inconclusive", f"unknown: {sent} message(s) of {domain} sent in {COMPLAINT_DAYS} "
                   f"days ({complaints} complaint(s)), too few to judge a rate (at least {COMPLAINT_MIN_SENT})")
    rate = complaints / sent
    worst = max((r for r in rows if r["rate"] is not None), key=lambda r: r["rate"])
    detail = (f"{complaints} complaint(s) / {sent} sent in {COMPLAINT_DAYS} days = {rate:.3%} "
              f"(worst day {worst['day']}: {worst['rate']:.3%})"
              + (f"; unreachable: {', '.join(sorted(gone))}" if gone else ""))
    low, high = report.get("lines") or (0.001, 0.003)
    fix = ("send only to recipients who asked for it, honour unsubscribes at once, and stop mailing "
           "inactive recipients; watch mailops reports complaints")
    if rate >= high:
        return row(name, domain, "fail", detail + " (Gmail and Yahoo: stay below 0.3 %)", fix)
    if rate >= low:
        return row(name, domain, "warn", detail + " (Gmail: keep it below 0.1 %)", fix)
    return row(name, domain, "pass", detail)


# --- what is sent --------------------------------------------------------------------------------

def bulk_user(inv, domain: str):
    """The first submission user marked ``stream: bulk`` that may send as ``domain`` (its own
    address or a send_as address of the domain)."""
    from mailops.verify.send import sender_for
    return sender_for(inv, domain, [u for u in inv.submission_users if u.stream == "bulk"])[0]


def load_sample(data: bytes, what: str = "--sample") -> EmailMessage:
    """The operator's .eml as a message; MailopsError (one line) when it is not one."""
    if not data.strip():
        raise MailopsError(f"{what}: the file is empty; give an .eml of a message your application sends")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not msg.keys():
        raise MailopsError(f"{what}: no RFC 5322 header found; give an .eml (headers, a blank line, the body)")
    return msg  # type: ignore[return-value]


def message_for(domain: str, sample: EmailMessage | None) -> tuple[EmailMessage, bool]:
    """(message to send, whether the List-Unsubscribe headers are verify's own).  A sample keeps its
    From when it is an address of ``domain`` (else deliver sets the user's) and its body; trace,
    authentication and recipient headers of an earlier trip are dropped (Cc/Bcc would send it on)."""
    if sample is None:
        msg = EmailMessage()
        token = uuid.uuid4().hex
        msg["Subject"] = f"mailops verify requirements {domain}"
        msg["List-Unsubscribe"] = f"<https://{domain}/unsubscribe/mailops-verify-{token}>"
        msg["List-Unsubscribe-Post"] = ONE_CLICK
        msg.set_content("A test message from `mailops verify --only requirements`.\n"
                        "Its List-Unsubscribe headers are verify's own; give --sample to test your mail.\n")
        return msg, True
    msg = copy.deepcopy(sample)
    for name in SAMPLE_DROPPED:
        del msg[name]
    addrs = [a for _, a in getaddresses([str(v) for v in sample.get_all("From", [])])]
    if len(addrs) != 1 or addrs[0].rpartition("@")[2].lower() != domain:
        del msg["From"]
    return msg, False


def _inconclusive_sending(domain: str, why: str) -> list[CheckResult]:
    return [row(n, domain, "inconclusive", why) for n in SENDING_ROWS]


def _ordered(rows: list[CheckResult]) -> list[CheckResult]:
    order = {n: i for i, n in enumerate(ROWS)}
    return sorted(rows, key=lambda r: order.get(r.name, len(ROWS)))


def _complaints(inv, domains: list[str]) -> tuple[dict | None, str | None]:
    if inv.return_path is None:
        return None, ("the return path is off (mailops_return_path): no complaint reaches mailops; see "
                      "Gmail Postmaster Tools and Yahoo's Complaint Feedback Loop")
    from mailops.ops.returnpath import complaint_rates, runner_for
    hosts = list({h.name: h for d in domains for h in inv.hosts_for(d)}.values())
    since = datetime.now(timezone.utc) - timedelta(days=COMPLAINT_DAYS)
    try:
        return complaint_rates(inv, hosts, runner_for(inv), since=since), None
    except MailopsError as exc:
        return None, f"the complaint reports could not be read ({exc})"


def check_domain(inv, view, domain: str, seed, sample: EmailMessage | None, complaints: CheckResult) -> list[CheckResult]:
    from mailops.verify.dnschecks import fcrdns
    from mailops.verify.send import deliver

    record, dmarc_tags = dmarc_record(view.resolve, domain)
    per_address = [r for h in inv.hosts_for(domain) for a in ptr.sending_addresses(h)
                   for r in fcrdns(view, h, a, ipaddress.ip_address(a).version)]
    rows = [record, fcrdns_row(domain, per_address), complaints]
    user = bulk_user(inv, domain)
    if user is None:
        return _ordered(rows + _inconclusive_sending(
            domain, f"no bulk submission user may send as {domain}: set stream: bulk on the submission user "
            "that sends the newsletters (mailops_submission_users)"))
    if seed is None or seed.mailbox is None:
        why = seed.problem if seed is not None else "no seed mailbox configured (mailops_verify.mailboxes)"
        return _ordered(rows + _inconclusive_sending(domain, f"nothing was sent: {why}"))
    message, own = message_for(domain, sample)
    delivery, sent_rows = deliver(inv, domain, seed.mailbox, group=GROUP, message=message, user=user)
    if delivery is None:
        why = "; ".join(r.detail for r in sent_rows) or "not delivered"
        return _ordered(rows + _inconclusive_sending(domain, f"the test message was not delivered: {why}")) + sent_rows
    try:
        rows += judge_message(delivery.raw, domain=domain, authserv_id=seed.authserv_id, resolve=view.resolve,
                              hosts=inv.hosts_for(domain), own_headers=own, dmarc_tags=dmarc_tags)
    finally:
        sent_rows += delivery.cleanup(GROUP, domain)
    return _ordered(rows) + sent_rows


def check(inv, keystore, domains: list[str], *, sample: bytes | None = None) -> list[CheckResult]:
    """The requirements group: one table per sending domain (``ROWS``; the live-send row of
    ``deliver`` after it)."""
    from mailops.dns.sync import DnsReader
    from mailops.verify.dnsview import QUERY_TIMEOUT, DnsView
    from mailops.verify.mailbox import open_mailboxes

    parsed = load_sample(sample) if sample is not None else None
    view = DnsView(DnsReader(inv.dns_resolvers, timeout=QUERY_TIMEOUT))
    seeds = open_mailboxes(inv)
    seed = next((s for s in seeds if s.mailbox is not None and s.problem is None), seeds[0] if seeds else None)
    report, why = _complaints(inv, domains)
    with ThreadPoolExecutor(max(1, min(len(domains), 8))) as pool:
        tables = pool.map(lambda d: check_domain(inv, view, d, seed, parsed, complaints_row(d, report, why)),
                          domains)
        return [r for table in tables for r in table]

"""The lab receiver's TLS-RPT reports (RFC 8460): its own outbound TLS sessions, as JSON and mail.

The source is the receiver's Postfix log (its journal): each new SMTP connection of its
``smtp`` client to another domain's MX (DSNs, complaints and these reports going out) is
one session, successful when TLS was established, failed when the handshake failed or
STARTTLS was not offered.  The receiver's Postfix applies no MTA-STS or DANE policy
(opportunistic TLS), so every policy is reported as ``no-policy-found`` - what it really
did.  The report is mailed as Gmail's (``multipart/report; report-type="tlsrpt"`` with an
``application/tlsrpt+gzip`` part); the reporter's organisation is the lab mailbox domain.
Pure functions; :mod:`mailops.lab.provider_reports` finds the ``rua`` addresses and sends."""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Iterable

from mailops.lab import receiver
from mailops.lab.config import MAILBOX_DOMAIN
from mailops.ops.postfixlines import parse_delivery

TLSRPT_FROM = f"noreply-smtp-tls-reporting@{MAILBOX_DOMAIN}"

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
                sending_ips: tuple[str, ...], org_name: str = MAILBOX_DOMAIN, contact: str = TLSRPT_FROM) -> bytes:
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


# -- the message -----------------------------------------------------------------------------------

def tlsrpt_message(*, domain: str, report_id: str, begin: int, end: int, report: bytes, to: list[str],
                   org_name: str = MAILBOX_DOMAIN, sender: str = TLSRPT_FROM) -> bytes:
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

"""What a message that came back to the return path is: the classified event and its parts.

Every event is plain data (dataclasses of str/int/None and lists of them) so that the store,
the CLI and JSON output read the same fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# the kinds of Classified, in the order classify tries them
BOUNCE = "bounce"
COMPLAINT = "complaint"
DMARC = "dmarc"
TLSRPT = "tlsrpt"
FORWARD = "forward"        # a person should read it (postmaster/abuse mail, auto-replies, unknown)
UNPARSED = "unparsed"      # looked like a report or was broken: kept raw and counted
KINDS = (BOUNCE, COMPLAINT, DMARC, TLSRPT, FORWARD, UNPARSED)

HARD = "hard"              # 5.x.x, action failed: suppress now
SOFT = "soft"              # 4.x.x, or action delayed: count towards the soft-bounce threshold
UNRECOGNISED = "unrecognised"   # a bounce without a status code we could find


@dataclass(slots=True)
class Bounce:
    severity: str                       # hard, soft or unrecognised
    recipient: str | None               # the best we know: original, final, then the return-path token
    action: str | None = None           # failed or delayed (RFC 3464 2.3.3); None for non-RFC bounces
    status: str | None = None           # RFC 3463 x.y.z
    category: str | None = None         # mailops.ops.postfixlines.classify_dsn for 5.x.x (bad-mailbox, ...)
    diagnostic: str | None = None       # Diagnostic-Code without its type ("smtp; ")
    final_recipient: str | None = None
    original_recipient: str | None = None
    recipient_source: str | None = None  # original-recipient, final-recipient, token, text, received
    remote_mta: str | None = None
    reporting_mta: str | None = None
    sending_domain: str | None = None
    message_id: str | None = None       # the returned message's Message-ID
    queue_id: str | None = None         # the sending host's queue ID (from the returned Received headers)
    reporter_queue_id: str | None = None  # X-Postfix-Queue-ID: the reporting Postfix's own queue file
    standard: bool = True               # False: a plain-text bounce without a delivery-status part


@dataclass(slots=True)
class Complaint:
    feedback_type: str                  # abuse, fraud, virus, other, not-spam, auth-failure...
    recipient: str | None               # original-rcpt-to, the returned To, then the token
    recipient_source: str | None = None
    user_agent: str | None = None
    version: str | None = None
    original_rcpt_to: str | None = None
    original_mail_from: str | None = None
    source_ip: str | None = None
    arrival_date: str | None = None     # ISO 8601 UTC when the date could be read, else as written
    reported_domain: str | None = None
    sending_domain: str | None = None
    message_id: str | None = None
    queue_id: str | None = None


@dataclass(slots=True)
class DmarcRow:
    source_ip: str
    count: int
    disposition: str | None
    dkim: str | None                    # policy_evaluated: pass/fail (aligned DKIM)
    spf: str | None                     # policy_evaluated: pass/fail (aligned SPF)
    header_from: str | None
    envelope_from: str | None = None
    reasons: list[str] = field(default_factory=list)   # policy override types
    dkim_results: list[dict] = field(default_factory=list)  # auth_results/dkim: domain, selector, result
    spf_results: list[dict] = field(default_factory=list)   # auth_results/spf: domain, scope, result


@dataclass(slots=True)
class DmarcReport:
    org_name: str
    report_id: str
    begin: int                          # epoch seconds, UTC
    end: int
    email: str | None = None
    domain: str | None = None           # policy_published/domain
    policy: dict = field(default_factory=dict)   # adkim, aspf, p, sp, pct, fo as published
    rows: list[DmarcRow] = field(default_factory=list)


@dataclass(slots=True)
class TlsFailure:
    result_type: str
    failed_sessions: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    failure_reason_code: str | None = None
    additional_information: str | None = None


@dataclass(slots=True)
class TlsPolicy:
    policy_type: str                    # sts, tlsa or no-policy-found
    policy_domain: str
    successful_sessions: int
    failed_sessions: int
    mx_hosts: list[str] = field(default_factory=list)
    failures: list[TlsFailure] = field(default_factory=list)


@dataclass(slots=True)
class TlsReport:
    org_name: str
    report_id: str
    start: str                          # RFC 3339 as written
    end: str
    contact_info: str | None = None
    policies: list[TlsPolicy] = field(default_factory=list)


@dataclass(slots=True)
class Classified:
    """One received message, classified.  ``digest`` (sha256 of the bytes) keys it in the store."""
    kind: str
    digest: str
    reason: str = ""                    # why forward/unparsed; what was recognised otherwise
    envelope_recipient: str = ""
    envelope_sender: str = ""
    subject: str | None = None
    return_path_token: str | None = None    # token id of a valid return-path recipient
    bounces: list[Bounce] = field(default_factory=list)
    complaints: list[Complaint] = field(default_factory=list)
    dmarc: list[DmarcReport] = field(default_factory=list)
    tls: list[TlsReport] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

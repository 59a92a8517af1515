"""Settings sections of the inventory model: per domain, DNS providers, users and limits, TLS, verify.

Same rules as :mod:`mailops.inventory.scalars`: unknown keys are forbidden and
every validator's message says what is wrong and how to fix it.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal, Union

from pydantic import Field, PlainValidator, field_validator, model_validator

from mailops.inventory.scalars import (
    DomainName,
    Duration,
    EmailAddress,
    Fqdn,
    HttpUrl,
    IpAddress,
    IPv4Net,
    IPv6Net,
    MailtoUri,
    PasswordHash,
    ProviderName,
    SecretRef,
    Selector,
    SelectorPrefix,
    SpfInclude,
    Text,
    TlsRptUri,
    TsigKeyName,
    ZoneName,
    _Model,
)
from mailops.ratelimits import parse_window


def _mailbox_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value):
        raise ValueError(f"mailbox name {value!r}: use 1-32 lower-case letters, digits, - or _ (e.g. gmail)")
    return value


# --- per-domain settings ---------------------------------------------------

class DkimSettings(_Model):
    selector_prefix: SelectorPrefix = "mo"
    algorithms: list[Literal["rsa", "ed25519"]] = Field(default_factory=lambda: ["rsa"], min_length=1)
    rsa_bits: int = 2048
    retired_grace_days: int = Field(7, ge=0)
    extra_selectors: list[Selector] = Field(default_factory=list)

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists an algorithm twice; keep each of rsa, ed25519 at most once")
        if "ed25519" in value:
            # OpenDKIM 2.11.0~beta2 (Debian 12 and 13) signs every key with its one
            # SignatureAlgorithm, so an active Ed25519 key tempfails every message
            # ("expecting an rsa key"); per-key algorithms are only in upstream's develop.
            raise ValueError("ed25519: the opendkim role's OpenDKIM 2.11 (Debian 12 and 13) cannot sign with an "
                             "Ed25519 key beside RSA and would defer every message; set algorithms: [rsa]")
        return value

    @field_validator("rsa_bits")
    @classmethod
    def _bits(cls, value: int) -> int:
        if value < 2048:
            raise ValueError(
                f"{value}-bit RSA keys are too weak and receivers reject them; set rsa_bits: 2048 (up to 4096)")
        if value > 4096:
            raise ValueError(
                f"{value}-bit RSA keys do not fit in DNS TXT records reliably; use 2048 to 4096")
        return value


class SpfSettings(_Model):
    include: list[SpfInclude] = Field(default_factory=list)
    ip4: list[IPv4Net] = Field(default_factory=list)
    ip6: list[IPv6Net] = Field(default_factory=list)
    all: Literal["~all", "-all"] = "~all"


class DmarcSettings(_Model):
    policy: Literal["none", "quarantine", "reject"] = "none"
    subdomain_policy: Literal["none", "quarantine", "reject"] | None = None
    rua: list[MailtoUri] = Field(default_factory=list)
    ruf: list[MailtoUri] = Field(default_factory=list)
    pct: int = Field(100, ge=0, le=100)
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"


class MtaStsSettings(_Model):
    mode: Literal["none", "testing", "enforce"] = "none"
    max_age: int = Field(604800, ge=86400, le=31557600)


class TlsRptSettings(_Model):
    rua: list[TlsRptUri] = Field(min_length=1)


class Domain(_Model):
    """A domain the mail hosts send for. ``hosts`` is filled in by the loader."""
    dns_provider: ProviderName
    hosts: list[str] | None = None
    # The return-path (bounce) domain instead of <mailops_return_path.subdomain>.<domain>; may be shared.
    return_path: DomainName | None = None
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    spf: SpfSettings = Field(default_factory=SpfSettings)
    dmarc: DmarcSettings = Field(default_factory=DmarcSettings)
    mta_sts: MtaStsSettings = Field(default_factory=MtaStsSettings)
    tls_rpt: TlsRptSettings | None = None


class ParkedDomain(_Model):
    """A domain that never sends: published with null SPF/DMARC reject to stop spoofing."""
    dns_provider: ProviderName


# --- the return path (global) -----------------------------------------------

_DAYS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _long_duration(value) -> int:
    """Seconds of ``30d``, ``12h``, ``90m``, ``3600s`` (or a whole number of seconds)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", value)):
        seconds = int(match.group(1)) * _DAYS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; write a number with s, m, h or d, e.g. 7d, 12h")
    if not 60 <= seconds <= 3650 * 86400:
        raise ValueError(f"{seconds} s is out of range; use 1m to 3650d")
    return seconds


LongDuration = Annotated[int, PlainValidator(_long_duration)]


def _subdomain(value) -> str:
    from mailops.inventory.scalars import dns_name
    return dns_name(value, what="a subdomain label", example="bounces", min_labels=1)


class SoftBounceSettings(_Model):
    """Soft bounces suppress after ``threshold`` within ``window``; such an entry expires after ``expiry``.
    Durations are held in seconds (the defaults are mailops.returnpath.suppression's)."""
    threshold: int = Field(3, ge=1, le=1000)
    window: LongDuration = 7 * 86400
    expiry: LongDuration = 30 * 86400


class ReturnPathSettings(_Model):
    """mailops_return_path: the mail hosts receive bounces, complaints and reports (absent = off)."""
    # hex keys, one per line, newest first, >= 16 bytes each; the same on every mail host
    key: SecretRef
    subdomain: Annotated[str, PlainValidator(_subdomain)] = "bounces"
    # where postmaster@, abuse@ and unrecognised mail are forwarded
    operator_email: EmailAddress
    soft_bounce: SoftBounceSettings = Field(default_factory=SoftBounceSettings)


# --- providers -------------------------------------------------------------

class CloudflareProvider(_Model):
    type: Literal["cloudflare"]
    api_token: SecretRef
    api_base_url: HttpUrl | None = None
    account_id: Text | None = None


class Rfc2136Provider(_Model):
    type: Literal["rfc2136"]
    server: IpAddress
    port: int = Field(53, ge=1, le=65535)
    tsig_key_name: TsigKeyName
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1"] = "hmac-sha256"
    tsig_secret: SecretRef
    zones: list[ZoneName] | None = None


class HcloudProvider(_Model):
    type: Literal["hcloud"]
    api_token: SecretRef
    api_base_url: HttpUrl | None = None


class HetznerProvider(_Model):
    """Hetzner DNS zones in the Cloud API (the project token that also sets PTRs)."""
    type: Literal["hetzner"]
    api_token: SecretRef
    api_base_url: HttpUrl | None = None


def _aws_region(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", value):
        raise ValueError(f"{value!r} is not an AWS region; write one like us-east-1 or eu-central-1")
    return value


class Route53Provider(_Model):
    """AWS Route 53: both keys, or neither for boto3's standard chain (environment, ~/.aws, instance role)."""
    type: Literal["route53"]
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    region: Annotated[str, PlainValidator(_aws_region)] = "us-east-1"
    endpoint_url: HttpUrl | None = None
    zones: list[ZoneName] | None = None  # use only these of the account's public hosted zones

    @model_validator(mode="after")
    def _both_keys(self) -> "Route53Provider":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither to use the standard AWS "
                             "credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance role)")
        return self


DnsProvider = Annotated[Union[CloudflareProvider, Rfc2136Provider, HetznerProvider, Route53Provider],
                        Field(discriminator="type")]
ReverseDnsProvider = Annotated[Union[Rfc2136Provider, HcloudProvider], Field(discriminator="type")]


# --- users and limits ------------------------------------------------------

class DestinationLimit(_Model):
    """Postfix delivery limits for one receiving domain (role postfix: transport rl_<domain>)."""
    concurrency: int = Field(ge=1, le=100)
    delay: Duration
    messages_per_minute: int | None = Field(None, ge=1)


class WarmupStep(_Model):
    day: int = Field(ge=1)
    volume: int = Field(ge=1)


class Warmup(_Model):
    start: date
    schedule: list[WarmupStep] = Field(min_length=1)

    @field_validator("schedule")
    @classmethod
    def _increasing(cls, steps: list[WarmupStep]) -> list[WarmupStep]:
        for i in range(1, len(steps)):
            if steps[i].day <= steps[i - 1].day:
                raise ValueError(
                    f"days must strictly increase, but entry {i} (day {steps[i].day}) is not after "
                    f"entry {i - 1} (day {steps[i - 1].day}); sort the schedule by day")
        return steps


Window = Annotated[int, PlainValidator(parse_window)]


class PerUserLimit(_Model):
    """Messages one SASL user may submit in a sliding window (policy service, role policyd).

    ``messages_per_hour: N`` is shorthand for ``messages: N, window: 1h``;
    ``window`` defaults to 1h. ``window`` is held in seconds.
    """
    messages_per_hour: int | None = Field(None, ge=1)
    messages: int | None = Field(None, ge=1)
    window: Window | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "PerUserLimit":
        if self.messages_per_hour is not None and (self.messages is not None or self.window is not None):
            raise ValueError("set either messages_per_hour: N or messages: N with window: DURATION, not both; "
                             "messages_per_hour: N is short for messages: N, window: 1h")
        if self.messages_per_hour is None and self.messages is None:
            raise ValueError("set messages: N with window: DURATION (e.g. messages: 100, window: 10m), "
                             "or messages_per_hour: N")
        return self

    @property
    def limit(self) -> int:
        """Messages allowed per window."""
        return self.messages_per_hour if self.messages_per_hour is not None else self.messages  # type: ignore[return-value]

    @property
    def window_seconds(self) -> int:
        """The sliding window in seconds (3600 for messages_per_hour)."""
        return 3600 if self.messages_per_hour is not None or self.window is None else self.window


class RateLimits(_Model):
    """mailops_rate_limits: per-destination delivery limits, warm-up, per-user sending limit."""
    destinations: dict[DomainName, DestinationLimit] = Field(default_factory=dict)
    warmup: Warmup | None = None
    per_user: PerUserLimit | None = None


class SubmissionUser(_Model):
    login: EmailAddress
    password: SecretRef | None = None
    password_hash: PasswordHash | None = None
    send_as: list[EmailAddress] = Field(default_factory=list)
    # This user's own sending limit instead of mailops_rate_limits.per_user.
    rate_limit: PerUserLimit | None = None
    # bulk: newsletters and marketing (the mailbox providers' bulk-sender rules apply:
    # one-click unsubscribe); transactional: receipts, password resets
    stream: Literal["transactional", "bulk"] = "transactional"

    @model_validator(mode="after")
    def _one_credential(self) -> "SubmissionUser":
        if (self.password is None) == (self.password_hash is None):
            raise ValueError(
                "set exactly one of password ({env: NAME} or {file: PATH}) or password_hash")
        return self


class DnsblSettings(_Model):
    """DNS blocklists verify asks about each sending address (ip_zones) and domain (domain_zones)."""
    ip_zones: list[ZoneName] = Field(default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net"])
    domain_zones: list[ZoneName] = Field(default_factory=lambda: ["dbl.spamhaus.org"])


class ImapSettings(_Model):
    """An IMAP mailbox verify logs in to (a seed account at Gmail, Outlook, your own server)."""
    host: Fqdn
    # default: 993 for implicit TLS, 143 for STARTTLS
    port: int | None = Field(None, ge=1, le=65535)
    tls: Literal["implicit", "starttls"] = "implicit"
    login: Text
    password: SecretRef
    # default: INBOX and every folder the server flags \\Junk (RFC 6154), else Junk/Spam by name
    folders: list[Text] | None = Field(None, min_length=1)
    # PEM roots for the IMAP server's certificate; default: the system's CAs
    ca_bundle: Text | None = None

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)


class SeedMailbox(_Model):
    """One mailbox the live send goes to: a row per sending domain in verify's send group."""
    # short label for the rows, e.g. gmail, outlook, own
    name: Annotated[str, PlainValidator(_mailbox_name)]
    recipient: EmailAddress
    # the receiving provider's authserv-id (first word of its Authentication-Results): only its
    # verdicts are trusted; headers of any other authserv-id may be forged (RFC 8601)
    authserv_id: Fqdn
    imap: ImapSettings | None = None
    # a Maildir readable on the machine that runs verify (the lab's receiver writes one)
    maildir: Text | None = None

    @model_validator(mode="after")
    def _one_access(self) -> "SeedMailbox":
        if (self.imap is None) == (self.maildir is None):
            raise ValueError(f"mailbox {self.name!r}: set exactly one of imap: {{host, login, password, ...}} "
                             "or maildir: PATH")
        return self


class VerifySettings(_Model):
    """How `mailops verify` proves the chain from outside."""
    # PEM roots trusted for the servers' certificates (587/465, MTA-STS); default: the system's CAs
    ca_bundle: Text | None = None
    # Live send: one test message per sending domain to each of these mailboxes
    mailboxes: list[SeedMailbox] = Field(default_factory=list)
    # Seconds to wait for the live-send message to arrive.
    send_timeout: int = Field(60, ge=5, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        if isinstance(data, dict):
            old = [k for k in ("recipient", "mailbox", "authserv_id") if k in data]
            if old:
                raise ValueError(
                    f"{', '.join(old)} moved into mailboxes: write mailboxes: [{{name: NAME, recipient: ADDRESS, "
                    "authserv_id: ID, maildir: PATH}}] (or imap: {host, login, password} instead of maildir)")
        return data

    @field_validator("mailboxes")
    @classmethod
    def _unique_names(cls, value: list[SeedMailbox]) -> list[SeedMailbox]:
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"mailbox name {twice[0]!r} is used twice; give each mailbox its own name")
        return value


class TlsSettings(_Model):
    """How mail hosts get their certificate. Self-signed only when asked for."""
    mode: Literal["acme", "selfsigned"] = "acme"
    acme_directory: HttpUrl = "https://acme-v02.api.letsencrypt.org/directory"  # type: ignore[assignment]
    acme_email: Text | None = None
    # CA bundle certbot must trust for the ACME server's own HTTPS (a private CA).
    acme_ca_bundle: Text | None = None

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


DnsProvider = Annotated[Union[CloudflareProvider, Rfc2136Provider], Field(discriminator="type")]
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


class MaildirMailboxSettings(_Model):
    """A Maildir on the machine that runs `mailops verify` (the lab's receiver writes one)."""
    maildir: Text


class VerifySettings(_Model):
    """How `mailops verify` proves the chain from outside."""
    # PEM roots trusted for the servers' certificates (587/465, MTA-STS); default: the system's CAs
    ca_bundle: Text | None = None
    # Live send: the address the test message goes to, and where verify reads it back.
    recipient: EmailAddress | None = None
    mailbox: MaildirMailboxSettings | None = None
    # The receiving mailbox's authserv-id (first word of its Authentication-Results): only its
    # verdicts are trusted; headers of any other authserv-id may be forged (RFC 8601).
    authserv_id: Fqdn | None = None
    # Seconds to wait for the live-send message to arrive.
    send_timeout: int = Field(60, ge=5, le=3600)


class TlsSettings(_Model):
    """How mail hosts get their certificate. Self-signed only when asked for."""
    mode: Literal["acme", "selfsigned"] = "acme"
    acme_directory: HttpUrl = "https://acme-v02.api.letsencrypt.org/directory"  # type: ignore[assignment]
    acme_email: Text | None = None
    # CA bundle certbot must trust for the ACME server's own HTTPS (a private CA).
    acme_ca_bundle: Text | None = None

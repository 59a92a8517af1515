"""Typed model of a mailops inventory (pydantic v2, unknown keys forbidden).

Every custom scalar is validated by a plain function that raises ``ValueError``
with a complete sentence (what is wrong and how to fix it): the loader turns
those into one-line problems, so the wording here is what operators read.
Validators never echo values of secret fields.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from mailops.ratelimits import parse_window

INLINE_SECRET = (
    "secret written inline; put it in an environment variable or a file "
    "and write {env: NAME} or {file: PATH}"
)


class _Model(BaseModel):
    # extra="forbid": a misspelt key must be reported, not silently ignored.
    model_config = ConfigDict(extra="forbid")


def show(value: Any, limit: int = 60) -> str:
    """A short, single-line rendering of a (non-secret) value for messages."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value: Any) -> str:
    """What the operator wrote, in YAML terms (for 'expected X, found Y')."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return "a date"
    return "a value of an unsupported type"


def _need_text(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what} as text, found {kind(value)}; write e.g. {example}")
    text = value.strip()
    if not text:
        raise ValueError(f"empty; write {what}, e.g. {example}")
    return text


# --- DNS names -------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Names only looked up for TXT records (SPF includes) may use underscores: _spf.google.com.
_TXT_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def dns_name(value: Any, *, what: str = "a domain name", example: str = "mail.example.com",
             min_labels: int = 2, underscore: bool = False) -> str:
    """Normalise a DNS name: lower case, no trailing dot, LDH labels of 1-63 chars."""
    text = _need_text(value, what, example)
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError(f"{show(value)} is not {what}; write e.g. {example}")
    if len(name) > 253:
        raise ValueError(f"{show(value)} is longer than 253 characters; use a shorter name")
    labels = name.split(".")
    if len(labels) < min_labels:
        raise ValueError(
            f"{show(value)} is not fully qualified (it needs at least one dot); "
            f"write the full name, e.g. {example}")
    for label in labels:
        if not label:
            raise ValueError(
                f"{show(value)} has an empty label (two dots in a row or a leading dot); "
                f"write e.g. {example}")
        if len(label) > 63:
            raise ValueError(f"{show(value)} has a label longer than 63 characters; shorten it")
        if not (_TXT_LABEL if underscore else _LABEL).match(label):
            raise ValueError(
                f"{show(value)} is not {what}: label {label!r} may only hold letters, digits "
                f"and inner hyphens; write e.g. {example}")
    if min_labels >= 2 and labels[-1].isdigit():
        raise ValueError(f"{show(value)} looks like an IP address, not {what}; write e.g. {example}")
    return name


def _fqdn(value: Any) -> str:
    return dns_name(value, what="a fully qualified domain name")


def _spf_include(value: Any) -> str:
    return dns_name(value, what="a domain name", example="_spf.example.com", underscore=True)


def _zone(value: Any) -> str:
    return dns_name(value, what="a DNS zone name", example="example.com", min_labels=1)


def _tsig_key_name(value: Any) -> str:
    # Keep an explicit trailing dot: BIND configs are often written that way.
    name = dns_name(value, what="a TSIG key name", example="mailops-key.", min_labels=1)
    return name + "." if value.strip().endswith(".") else name


def _selector(value: Any) -> str:
    return dns_name(value, what="a DKIM selector", example="s1", min_labels=1)


def _selector_prefix(value: Any) -> str:
    text = _need_text(value, "a selector prefix", "mo")
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?", text):
        raise ValueError(
            f"{show(value)} is not a valid selector prefix; use 1-40 lowercase letters, digits "
            "and inner hyphens, e.g. mo")
    return text


def _host_or_ip(value: Any) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            pass
    return dns_name(value, what="an IP address or host name", example="203.0.113.10", min_labels=1)


Fqdn = Annotated[str, PlainValidator(_fqdn)]
DomainName = Fqdn
SpfInclude = Annotated[str, PlainValidator(_spf_include)]
ZoneName = Annotated[str, PlainValidator(_zone)]
TsigKeyName = Annotated[str, PlainValidator(_tsig_key_name)]
Selector = Annotated[str, PlainValidator(_selector)]
SelectorPrefix = Annotated[str, PlainValidator(_selector_prefix)]
HostOrIp = Annotated[str, PlainValidator(_host_or_ip)]


# --- IP addresses ----------------------------------------------------------

_NOT_PUBLIC_V4 = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    """A public-style IPv4 address; documentation ranges are allowed (the lab uses them)."""
    if isinstance(value, ipaddress.IPv4Address):
        value = str(value)
    text = _need_text(value, "an IPv4 address", "203.0.113.10")
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{show(value)} is not an IPv4 address; write four numbers 0-255, e.g. 203.0.113.10") from None
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_link_local \
            or addr.is_reserved or any(addr in net for net in _NOT_PUBLIC_V4):
        raise ValueError(
            f"{addr} is not a public address, so receivers never see mail come from it; "
            "set the public IPv4 address this host sends from")
    return addr


def _ipv6(value: Any) -> ipaddress.IPv6Address:
    if isinstance(value, ipaddress.IPv6Address):
        value = str(value)
    text = _need_text(value, "an IPv6 address", "2001:db8::10")
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError(f"{show(value)} is not an IPv6 address; write e.g. 2001:db8::10") from None
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_link_local \
            or addr.is_site_local or addr in ipaddress.ip_network("fc00::/7") or addr.ipv4_mapped:
        raise ValueError(
            f"{addr} is not a public address; set the public IPv6 address this host sends from "
            "or remove mailops_ipv6")
    return addr


def _ip_any(value: Any) -> str:
    text = _need_text(value, "an IP address", "198.51.100.1")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{show(value)} is not an IP address; write e.g. 198.51.100.1") from None


def _net(version: int):
    example = "203.0.113.0/24" if version == 4 else "2001:db8::/48"

    def check(value: Any) -> str:
        text = _need_text(value, f"an IPv{version} address or network", example)
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            net = None
        if net is None or net.version != version:
            raise ValueError(f"{show(value)} is not an IPv{version} address or network; write e.g. {example}")
        return text
    return check


PublicIPv4 = Annotated[ipaddress.IPv4Address, PlainValidator(_ipv4)]
PublicIPv6 = Annotated[ipaddress.IPv6Address, PlainValidator(_ipv6)]
IpAddress = Annotated[str, PlainValidator(_ip_any)]


def _dns_owner(value: Any) -> str:
    text = _need_text(value, "an owner id", "marketing")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", text):
        raise ValueError(f"{show(value)} is not an owner id: use 1-32 lower-case letters, digits and inner "
                         "hyphens, e.g. marketing")
    return text


DnsOwner = Annotated[str, PlainValidator(_dns_owner)]
IPv4Net = Annotated[str, PlainValidator(_net(4))]
IPv6Net = Annotated[str, PlainValidator(_net(6))]


# --- addresses and URLs ----------------------------------------------------

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def _email(value: Any) -> str:
    text = _need_text(value, "an email address", "alice@example.com")
    local, at, domain = text.rpartition("@")
    if not at or not local or not _LOCAL.match(local) or len(local) > 64:
        raise ValueError(f"{show(value)} is not an email address; write e.g. alice@example.com")
    try:
        domain = dns_name(domain)
    except ValueError:
        raise ValueError(f"{show(value)} has an invalid domain part; write e.g. alice@example.com") from None
    return f"{local}@{domain}"


def _mailto(value: Any) -> str:
    text = _need_text(value, "a mailto: URI", "mailto:dmarc@example.com")
    if not text.lower().startswith("mailto:"):
        raise ValueError(f"{show(value)} is not a mailto: URI; write e.g. mailto:dmarc@example.com")
    address, _, size = text[7:].partition("!")
    if size and not re.fullmatch(r"\d+[kmgt]?", size):
        raise ValueError(f"{show(value)} has a bad size limit after '!'; write e.g. mailto:dmarc@example.com!10m")
    try:
        address = _email(address)
    except ValueError:
        raise ValueError(f"{show(value)} does not hold a valid address; write e.g. mailto:dmarc@example.com") from None
    return "mailto:" + address + ("!" + size if size else "")


def _http_url(value: Any, schemes: tuple[str, ...] = ("http", "https"),
              example: str = "http://192.0.2.1:3142") -> str:
    text = _need_text(value, "a URL", example)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in schemes or not parts.hostname or " " in text:
        raise ValueError(f"{show(value)} is not a {' or '.join(schemes)} URL; write e.g. {example}")
    return text


def _tls_rpt_uri(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower().startswith("https:"):
        return _http_url(value, ("https",), "https://tlsrpt.example.com/report")
    try:
        return _mailto(value)
    except ValueError:
        raise ValueError(
            f"{show(value)} is not a mailto: or https: URI; write e.g. mailto:tlsrpt@example.com") from None


def _duration(value: Any) -> str:
    """Postfix-style delay: 0 or a number with ms/s/m/h."""
    if value == 0 and not isinstance(value, bool):
        return "0"
    if isinstance(value, str) and re.fullmatch(r"0|\d+(?:ms|s|m|h)", value.strip()):
        return value.strip()
    raise ValueError(f"{show(value)} is not a duration; write 0 or a number with a unit, e.g. 1s, 500ms, 2m")


def _password_hash(value: Any) -> str:
    # Never echo: a plain password pasted here would otherwise be printed.
    prefixes = ("$6$", "$y$", "$2b$", "{SHA512-CRYPT}", "{BLF-CRYPT}", "{ARGON2ID}")
    if not isinstance(value, str) or not value.startswith(prefixes) or len(value) < 10:
        raise ValueError(
            "not a crypt hash; write a hash starting with $6$, $y$, $2b$, {SHA512-CRYPT}, "
            "{BLF-CRYPT} or {ARGON2ID} (e.g. from 'mkpasswd -m sha-512'), or use password: {env: NAME}")
    return value


def _provider_name(value: Any) -> str:
    text = _need_text(value, "a provider name", "cloudflare-main")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise ValueError(f"{show(value)} is not a valid name; use letters, digits, '-', '_' and '.'")
    return text


def _nonempty_text(value: Any) -> str:
    return _need_text(value, "a value", "/var/lib/mailops/dkim")


EmailAddress = Annotated[str, PlainValidator(_email)]
MailtoUri = Annotated[str, PlainValidator(_mailto)]
HttpUrl = Annotated[str, PlainValidator(_http_url)]
TlsRptUri = Annotated[str, PlainValidator(_tls_rpt_uri)]
Duration = Annotated[str, PlainValidator(_duration)]
PasswordHash = Annotated[str, PlainValidator(_password_hash)]
ProviderName = Annotated[str, PlainValidator(_provider_name)]
Text = Annotated[str, PlainValidator(_nonempty_text)]


# --- secret references -----------------------------------------------------

class EnvSecret(_Model):
    """The secret is the value of an environment variable when mailops runs."""
    env: str


class FileSecret(_Model):
    """The secret is the content of a file (relative paths: to the inventory directory)."""
    file: str


def _secret_ref(value: Any) -> EnvSecret | FileSecret:
    # Messages here must never contain the value: it may be the secret itself.
    if isinstance(value, (EnvSecret, FileSecret)):
        return value
    if isinstance(value, dict):
        if len(value) == 1:
            (key, ref), = value.items()
            if key == "env":
                if not isinstance(ref, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
                    raise ValueError("env: needs an environment variable name like MAILOPS_TOKEN")
                return EnvSecret(env=ref)
            if key == "file":
                if not isinstance(ref, str) or not ref.strip():
                    raise ValueError("file: needs a path to a file holding the secret")
                return FileSecret(file=ref.strip())
        names = ", ".join(show(k) for k in list(value)[:5]) or "none"
        raise ValueError(
            f"a secret reference is a mapping with exactly one key, env or file (found keys: {names}); "
            "write {env: NAME} or {file: PATH}")
    if value is None:
        raise ValueError("empty; write {env: NAME} or {file: PATH}")
    if isinstance(value, (str, int, float, bool, bytes, date)):
        raise ValueError(INLINE_SECRET)
    raise ValueError(f"expected {{env: NAME}} or {{file: PATH}}, found {kind(value)}")


SecretRef = Annotated[Union[EnvSecret, FileSecret], PlainValidator(_secret_ref)]


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
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    spf: SpfSettings = Field(default_factory=SpfSettings)
    dmarc: DmarcSettings = Field(default_factory=DmarcSettings)
    mta_sts: MtaStsSettings = Field(default_factory=MtaStsSettings)
    tls_rpt: TlsRptSettings | None = None


class ParkedDomain(_Model):
    """A domain that never sends: published with null SPF/DMARC reject to stop spoofing."""
    dns_provider: ProviderName


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


class VerifySettings(_Model):
    """How `mailops verify` proves the chain from outside."""
    # PEM roots trusted for the servers' certificates (587/465, MTA-STS); default: the system's CAs
    ca_bundle: Text | None = None
    # Live send: the mailbox the test message goes to. "lab" reads it on the lab's receiving host.
    recipient: EmailAddress | None = None
    mailbox: Literal["lab"] = "lab"
    # Seconds to wait for the live-send message to arrive.
    send_timeout: int = Field(60, ge=5, le=3600)


class TlsSettings(_Model):
    """How mail hosts get their certificate. Self-signed only when asked for."""
    mode: Literal["acme", "selfsigned"] = "acme"
    acme_directory: HttpUrl = "https://acme-v02.api.letsencrypt.org/directory"  # type: ignore[assignment]
    acme_email: Text | None = None
    # CA bundle certbot must trust for the ACME server's own HTTPS (a private CA).
    acme_ca_bundle: Text | None = None


# --- the whole inventory ---------------------------------------------------

class MailHost(_Model):
    """One host of group ``mailhosts``, with its Ansible SSH access."""
    name: str
    fqdn: Fqdn
    ipv4: PublicIPv4
    ipv6: PublicIPv6 | None = None
    ssh_host: HostOrIp
    ssh_user: Text = "root"
    ssh_port: int = Field(22, ge=1, le=65535)
    ssh_private_key_file: Text | None = None
    reverse_dns_provider: ProviderName | None = None
    # False when the IPv6 address has no PTR: the server then sends over IPv4 only.
    ipv6_ptr: bool = True


class Inventory(_Model):
    """A checked inventory. Only built when the directory has no problems."""
    path: Path
    hosts: list[MailHost]
    domains: dict[DomainName, Domain]
    parked_domains: dict[DomainName, ParkedDomain] = Field(default_factory=dict)
    dns_providers: dict[str, DnsProvider] = Field(default_factory=dict)
    reverse_dns_providers: dict[str, ReverseDnsProvider] = Field(default_factory=dict)
    submission_users: list[SubmissionUser] = Field(default_factory=list)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    dkim_keystore: Path
    apt_proxy: HttpUrl | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    # host[:port] that pre-flight checks connect to on port 25 (outbound SMTP test)
    smtp_probe: HostOrIp = "gmail-smtp-in.l.google.com"
    # Resolvers that DNS read-backs and checks ask (empty: the system's /etc/resolv.conf)
    dns_resolvers: list[IpAddress] = Field(default_factory=list)
    # Owner id for `dns sync` when several inventories share a zone (default: the one shared owner)
    dns_owner: DnsOwner | None = None
    dnsbl: DnsblSettings = Field(default_factory=DnsblSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)

    def host(self, name: str) -> MailHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def hosts_for(self, domain: str) -> list[MailHost]:
        """The mail hosts that send for ``domain``."""
        names = self.domains[domain].hosts or [h.name for h in self.hosts]
        return [h for h in self.hosts if h.name in names]

    def secret(self, ref: EnvSecret | FileSecret) -> str:
        """Resolve a secret reference relative to this inventory."""
        from mailops.inventory.secrets import resolve
        return resolve(ref, self.path)


# Variables mailops reads. Every other ``mailops_*`` variable is reported as
# unknown, so roles that add variables must add them here.
# name -> (MailHost field, type)
HOST_VARS: dict[str, tuple[str, Any]] = {
    "ansible_host": ("ssh_host", HostOrIp),
    "ansible_user": ("ssh_user", Text),
    "ansible_port": ("ssh_port", Annotated[int, Field(ge=1, le=65535)]),
    "ansible_ssh_private_key_file": ("ssh_private_key_file", Text),
    "mailops_fqdn": ("fqdn", Fqdn),
    "mailops_ipv4": ("ipv4", PublicIPv4),
    "mailops_ipv6": ("ipv6", PublicIPv6),
    "mailops_reverse_dns_provider": ("reverse_dns_provider", ProviderName),
    "mailops_ipv6_ptr": ("ipv6_ptr", bool),
}
REQUIRED_HOST_VARS = ("ansible_host", "mailops_ipv4")

# name -> (Inventory field, type); read from group_vars/all and all.vars only.
GLOBAL_VARS: dict[str, tuple[str, Any]] = {
    "mailops_dkim_keystore": ("dkim_keystore", Text),
    "mailops_apt_proxy": ("apt_proxy", HttpUrl),
    "mailops_domains": ("domains", Annotated[dict[DomainName, Domain], Field(min_length=1)]),
    "mailops_parked_domains": ("parked_domains", dict[DomainName, ParkedDomain]),
    "mailops_dns_providers": ("dns_providers", dict[ProviderName, DnsProvider]),
    "mailops_reverse_dns_providers": ("reverse_dns_providers", dict[ProviderName, ReverseDnsProvider]),
    "mailops_submission_users": ("submission_users", list[SubmissionUser]),
    "mailops_rate_limits": ("rate_limits", RateLimits),
    "mailops_tls": ("tls", TlsSettings),
    "mailops_smtp_probe": ("smtp_probe", HostOrIp),
    "mailops_dns_resolvers": ("dns_resolvers", list[IpAddress]),
    "mailops_dns_owner": ("dns_owner", DnsOwner),
    "mailops_dnsbl": ("dnsbl", DnsblSettings),
    "mailops_verify": ("verify", VerifySettings),
}
REQUIRED_GLOBAL_VARS = ("mailops_dkim_keystore", "mailops_domains")

# Extra advice for a missing key, by key name.
MISSING_HINTS: dict[str, str] = {
    "ansible_host": "set ansible_host: to the IP address or name Ansible connects to over SSH",
    "mailops_ipv4": "set mailops_ipv4: to the public IPv4 address this host sends mail from",
    "mailops_dkim_keystore": "set mailops_dkim_keystore: to a directory outside git, e.g. /var/lib/mailops/dkim",
    "mailops_domains": "add mailops_domains: with at least one domain in group_vars/all",
    "dns_provider": "every domain needs dns_provider: naming an entry of mailops_dns_providers",
    "api_token": "write api_token: {env: NAME} or {file: PATH}",
    "tsig_secret": "write tsig_secret: {env: NAME} or {file: PATH}",
    "tsig_key_name": "set tsig_key_name: to the TSIG key's name, e.g. mailops-key.",
    "server": "set server: to the IP address of the DNS server that accepts updates",
    "login": "set login: to the user's email address",
    "rua": "list at least one report address, e.g. [mailto:tlsrpt@example.com]",
}

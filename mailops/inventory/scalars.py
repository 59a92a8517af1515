"""Validated scalar types of the inventory model: DNS names, addresses, URLs, secret references.

Every custom scalar is validated by a plain function that raises ``ValueError``
with a complete sentence (what is wrong and how to fix it): the loader turns
those into one-line problems, so the wording here is what operators read.
Validators never echo values of secret fields.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from datetime import date
from typing import Annotated, Any, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, PlainValidator

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


def _not_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_link_local:
        return True
    if addr.version == 4:
        return addr.is_reserved or any(addr in net for net in _NOT_PUBLIC_V4)
    return addr.is_site_local or addr in ipaddress.ip_network("fc00::/7") or addr.ipv4_mapped is not None


def _public_ip(version: int):
    """A public-style address of ``version``; documentation ranges are allowed (the lab uses them)."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    example = "203.0.113.10" if version == 4 else "2001:db8::10"
    how = "write four numbers 0-255, e.g. 203.0.113.10" if version == 4 else "write e.g. 2001:db8::10"
    fix = (", so receivers never see mail come from it; set the public IPv4 address this host sends from"
           if version == 4 else "; set the public IPv6 address this host sends from or remove mailops_ipv6")

    def check(value: Any):
        if isinstance(value, cls):
            value = str(value)
        text = _need_text(value, f"an IPv{version} address", example)
        try:
            addr = cls(text)
        except ValueError:
            raise ValueError(f"{show(value)} is not an IPv{version} address; {how}") from None
        if _not_public(addr):
            raise ValueError(f"{addr} is not a public address{fix}")
        return addr
    return check


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


PublicIPv4 = Annotated[ipaddress.IPv4Address, PlainValidator(_public_ip(4))]
PublicIPv6 = Annotated[ipaddress.IPv6Address, PlainValidator(_public_ip(6))]
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
    if not _url_host_ok(parts.hostname):
        raise ValueError(f"{show(value)} has no valid host ({show(parts.hostname)} is neither an IP address "
                         f"nor a host name); write e.g. {example}")
    return text


def _url_host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):  # digits and dots that are no IP address: a truncated one (http://127.)
        return False
    try:
        dns_name(host, min_labels=1)
    except ValueError:
        return False
    return True


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


def _ssh_args(value: Any) -> str:
    """``ansible_ssh_common_args``: ssh options as one line of text, split like a shell would."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"expected ssh options as text, found {kind(value)}; "
                         "write e.g. \"-o UserKnownHostsFile=~/.config/mailops/known_hosts\"")
    try:
        shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot be split into ssh options ({exc}); fix the quoting") from None
    return value.strip()


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
SshArgs = Annotated[str, PlainValidator(_ssh_args)]


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

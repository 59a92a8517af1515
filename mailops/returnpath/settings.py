"""The return-path service's settings: /etc/mailops/returnpath.json, written by the role
(role returnpath; Python 3 standard library only).  Read by the lookup service
(:mod:`mailops.returnpath.socketmap`) and the receiver (:mod:`mailops.returnpath.receive`);
anything wrong is a MailopsError naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta

from mailops.errors import MailopsError
from mailops.returnpath import address
from mailops.returnpath.suppression import SuppressionList

DEFAULT_PORT = 10033
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


def parse_duration(value, what: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or a number of seconds."""
    if isinstance(value, bool):
        raise MailopsError(f"{what}: {value!r} is not a duration (7d, 12h, 30m or seconds)")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise MailopsError(f"{what}: {str(value)[:40]!r} is not a duration (7d, 12h, 30m or seconds)")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise MailopsError(f"{what}: a duration must be positive")
    return timedelta(seconds=seconds)


def _domain(value, what: str) -> str:
    text = str(value).strip().rstrip(".").lower() if isinstance(value, str) else ""
    if not _NAME.match(text) or "." not in text:
        raise MailopsError(f"{what}: {str(value)[:80]!r} is not a domain name")
    return text


def _address(value, what: str) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    local, at, domain = text.rpartition("@")
    if not at or not local or any(c.isspace() or c in "<>,\"" for c in local):
        raise MailopsError(f"{what}: {str(value)[:80]!r} is not an address (local@domain)")
    return f"{local}@{_domain(domain, what)}"


@dataclass
class Settings:
    """/etc/mailops/returnpath.json, written by the role (no secrets in it)."""
    fqdn: str
    sending_domains: dict[str, str]             # this host's sending domains -> return-path domain
    return_domains: dict[str, list[str]]        # every return-path domain of the fleet -> its sending domains
    accept: set[str] = field(default_factory=set)   # report addresses, postmaster@/abuse@ of the sending domains
    operator_email: str = ""
    peers: list[str] = field(default_factory=list)  # the replication address of every other mail host
    sync_local: str = "mailops-sync"
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_age_days: int = address.DEFAULT_MAX_AGE_DAYS
    subdomain: str = address.DEFAULT_SUBDOMAIN
    soft_threshold: int = 3
    soft_window: timedelta = timedelta(days=7)
    soft_expiry: timedelta = timedelta(days=30)
    sendmail: str = "/usr/sbin/sendmail"

    @property
    def sync_address(self) -> str:
        return f"{self.sync_local}@{self.fqdn}"

    def suppression_list(self, path: str) -> SuppressionList:
        return SuppressionList(path, origin=self.fqdn, soft_threshold=self.soft_threshold,
                               soft_window=self.soft_window, soft_expiry=self.soft_expiry)


def settings_from(data) -> Settings:
    """Settings from the parsed JSON; MailopsError naming the field for anything wrong."""
    if not isinstance(data, dict):
        raise MailopsError("the settings must be a JSON object")
    known = {"fqdn", "sending_domains", "return_domains", "accept", "operator_email", "peers", "sync_local",
             "listen", "port", "max_age_days", "subdomain", "soft_bounce", "sendmail"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MailopsError(f"{unknown[0]}: unknown setting; the settings are {', '.join(sorted(known))}")
    fqdn = _domain(data.get("fqdn"), "fqdn")
    sending = data.get("sending_domains") or {}
    returns = data.get("return_domains") or {}
    if not isinstance(sending, dict) or not isinstance(returns, dict):
        raise MailopsError("sending_domains and return_domains must be objects")
    sending = {_domain(k, "sending_domains"): _domain(v, f"sending_domains.{k}") for k, v in sending.items()}
    returns = {_domain(k, "return_domains"): sorted({_domain(d, f"return_domains.{k}") for d in (v or [])})
               for k, v in returns.items()}
    for domain, rp in sending.items():
        if domain not in returns.get(rp, []):
            raise MailopsError(f"sending_domains.{domain}: its return-path domain {rp} must list it in return_domains")
    accept = data.get("accept") or []
    peers = data.get("peers") or []
    if not isinstance(accept, list) or not isinstance(peers, list):
        raise MailopsError("accept and peers must be lists of addresses")
    operator = data.get("operator_email")
    port = data.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise MailopsError(f"port: {port!r} is not a TCP port (1-65535)")
    max_age = data.get("max_age_days", address.DEFAULT_MAX_AGE_DAYS)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or not 1 <= max_age <= 365:
        raise MailopsError(f"max_age_days: {max_age!r} is not a number of days (1-365)")
    soft = data.get("soft_bounce") or {}
    if not isinstance(soft, dict):
        raise MailopsError("soft_bounce must be an object {threshold, window, expiry}")
    threshold = soft.get("threshold", 3)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise MailopsError(f"soft_bounce.threshold: {threshold!r} must be a whole number >= 1")
    sync_local = str(data.get("sync_local") or "mailops-sync").strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", sync_local):
        raise MailopsError(f"sync_local: {sync_local[:80]!r} is not a plain local part")
    subdomain = str(data.get("subdomain") or address.DEFAULT_SUBDOMAIN).strip().lower()
    return Settings(
        fqdn=fqdn, sending_domains=sending, return_domains=returns,
        accept={_address(a, "accept") for a in accept},
        operator_email=_address(operator, "operator_email") if operator else "",
        peers=[_address(p, "peers") for p in peers], sync_local=sync_local,
        listen=str(data.get("listen") or "127.0.0.1"), port=port, max_age_days=max_age, subdomain=subdomain,
        soft_threshold=threshold,
        soft_window=parse_duration(soft.get("window", "7d"), "soft_bounce.window"),
        soft_expiry=parse_duration(soft.get("expiry", "30d"), "soft_bounce.expiry"),
        sendmail=str(data.get("sendmail") or "/usr/sbin/sendmail"))


def load_settings(path: str) -> Settings:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise MailopsError(f"{path}: cannot read the return-path settings ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MailopsError(f"{path}: not valid JSON ({exc})") from None
    try:
        return settings_from(data)
    except MailopsError as exc:
        raise MailopsError(f"{path}: {exc}") from None

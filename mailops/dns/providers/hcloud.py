"""Reverse DNS (PTR) of Hetzner Cloud servers through the official ``hcloud`` library.

The PTR of a server address lives in Hetzner's reverse zone and is changed with
the ``change_dns_ptr`` action of the server (or of an unassigned Primary IP),
then read back from ``server.public_net`` (``ipv4.dns_ptr``, or the entry for the
address in the ``ipv6.dns_ptr`` list of the server's /64).

Which object owns an address is found by listing the project's servers once
per provider object (Primary IPs are listed only if no server owns it).

Retries: the library retries by itself 409 ``conflict``, 429
``rate_limit_exceeded``, 502 and 504 (5 times, jittered exponential backoff
from 1 s up to 60 s), but drops the response headers on the way, so
``RateLimit-Reset``/``Retry-After`` cannot be honoured from here.  It does not
retry 500 or 503 (``server_error``, ``unavailable``, ``maintenance``,
``service_error``): those are retried here, ``retry_delays`` apart.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import hcloud
import requests
from hcloud.actions import ActionFailedException, ActionTimeoutException
from hcloud.servers import BoundServer

from mailops.errors import MailopsError
from mailops.inventory.secrets import token_problem

__all__ = ["HcloudReverseProvider"]

DEFAULT_API = "https://api.hetzner.cloud/v1"
_TRANSIENT = {"server_error", "service_error", "unavailable", "maintenance", 500, 503}
_HTTP_STATUS = {"invalid_input": 400, "json_error": 400, "unauthorized": 401, "forbidden": 403,
                "token_readonly": 403, "not_found": 404, "conflict": 409, "locked": 423, "protected": 423,
                "rate_limit_exceeded": 429, "server_error": 500, "bad_gateway": 502, "service_error": 503,
                "unavailable": 503, "maintenance": 503, "timeout": 504}

log = logging.getLogger(__name__)
T = TypeVar("T")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class HcloudClient:
    """What every use of the Hetzner Cloud API shares (reverse DNS, DNS zones, servers): the
    official client, retries on 500/503, and one-line errors naming the setting, token scrubbed."""
    label = "hcloud provider"                      # how messages name the provider
    section = "mailops_reverse_dns_providers"       # where its api_token is set
    changes = "reverse DNS"                         # what the token must be allowed to change
    retry_delays: tuple[float, ...] = (1.0, 3.0, 9.0)  # between attempts on 500/503
    invalid_input_fix = ""                          # what to do when the API rejects a value

    def _connect(self, name: str, token: str, api_base_url: str | None) -> None:
        self.name = name
        problem = token_problem(token)
        if problem:  # httpx would fail encoding the header with a traceback, or the API refuse it
            raise MailopsError(f"{self.label} {name!r}: the API token {problem}; put the token exactly as "
                               f"Hetzner shows it in api_token of {self.section}.{name}")
        self._api = (api_base_url or DEFAULT_API).rstrip("/")
        self._token = token  # kept only to scrub it from messages
        self._client = hcloud.Client(
            token, api_endpoint=self._api, application_name="mailops", timeout=30,
            poll_interval=hcloud.exponential_backoff_function(base=0.5, multiplier=2, cap=5.0))

    def _call(self, call: Callable[[], T], doing: str, retry: bool = True) -> T:
        delays = self.retry_delays if retry else ()
        attempts = len(delays) + 1
        for attempt, delay in enumerate((*delays, None), start=1):
            try:
                return call()
            except hcloud.APIException as exc:
                if exc.code not in _TRANSIENT or delay is None:
                    raise self._api_error(exc, doing, attempt) from None
                log.info("%s %r: %s %s while %s; retrying in %.1f s (attempt %d of %d)", self.label,
                         self.name, _status(exc), exc.code, doing, delay, attempt + 1, attempts)
                time.sleep(delay)
            except ActionFailedException as exc:
                error = exc.action.error or {}
                raise self._fail(f"the {exc.action.command or 'API'} action failed while {doing}: "
                                 f"{error.get('code', '?')}: {error.get('message', '')}") from None
            except ActionTimeoutException as exc:
                raise self._fail(f"the {exc.action.command or 'API'} action did not finish while {doing}; "
                                 "look in the Hetzner Cloud console") from None
            except requests.RequestException as exc:
                raise self._fail(f"cannot reach the API at {self._api} while {doing} ({type(exc).__name__}); "
                                 "check api_base_url and the network") from None
            except (AttributeError, TypeError, ValueError, KeyError):
                raise self._fail(f"the API's answer while {doing} is not the Hetzner Cloud API's JSON; check "
                                 f"that api_base_url ({self._api}) is the Cloud API") from None
        raise AssertionError("the loop returns or raises")

    def _api_error(self, exc: hcloud.APIException, doing: str, attempts: int) -> MailopsError:
        what = f"{_status(exc)} {exc.code}"
        setting = f"api_token of {self.section}.{self.name}"
        if exc.code in ("unauthorized", 401):
            return self._fail(f"the API token was refused ({what}) while {doing}; put a valid Read & Write "
                              f"token of the Hetzner Cloud project in {setting}")
        if exc.code in ("forbidden", "token_readonly", 403):
            return self._fail(f"the API token may not change {self.changes} ({what}) while {doing}; "
                              f"give {setting} Read & Write permission")
        if exc.code == "invalid_input":
            return self._fail(f"the API rejected {doing} ({what}: {exc.message})"
                              + (f"; {self.invalid_input_fix}" if self.invalid_input_fix else ""))
        if exc.code == "rate_limit_exceeded":
            return self._fail(f"still rate limited ({what}) after the library's retries while {doing}; "
                              "the project allows 3600 requests per hour: wait a few minutes and run again")
        if exc.code in _TRANSIENT:
            return self._fail(f"the API kept failing ({what}: {exc.message}) after {attempts} attempts "
                              f"while {doing}; try again later")
        return self._fail(f"the API refused {doing} ({what}: {exc.message})")

    def _fail(self, text: str) -> MailopsError:
        message = " ".join(f"{self.label} '{self.name}': {text}".split())
        if self._token:
            message = message.replace(self._token, "***")
        return MailopsError(message)


class HcloudReverseProvider(HcloudClient):
    kind = "hcloud"
    invalid_input_fix = "use a valid host name (letters, digits and hyphens, at least two labels)"

    def __init__(self, name: str, token: str, api_base_url: str | None = None):
        self._connect(name, token, api_base_url)
        self._servers: list[tuple[Any, Any, Any]] | None = None  # (network, section, bound object)
        self._primary_ips: list[tuple[Any, Any, Any]] | None = None

    def get_ptr(self, address: str) -> str | None:
        ip = self._parse(address)
        _, owner = self._owner(ip)
        return _ptr_of(owner, ip)

    def set_ptr(self, address: str, hostname: str) -> None:
        ip = self._parse(address)
        wanted = hostname.strip().rstrip(".").lower()
        section, owner = self._owner(ip)
        if _ptr_of(owner, ip) == wanted:
            return  # already right: no action, no API write
        doing = f"setting the PTR of {ip} to {wanted}"
        action = self._call(lambda: section.change_dns_ptr(owner, ip=ip.compressed, dns_ptr=wanted), doing)
        self._call(action.wait_until_finished, doing)
        self._call(owner.reload, f"reading back the PTR of {ip}")  # refreshes the cached listing too
        if (now := _ptr_of(owner, ip)) != wanted:
            raise self._fail(f"the API accepted {wanted} for {ip} but reads back {now or 'no PTR'}; "
                             "check the server's reverse DNS in the Hetzner Cloud console")

    # --- owners ------------------------------------------------------------

    def _parse(self, address: str) -> Address:
        try:
            return ipaddress.ip_address(address.strip())
        except ValueError:
            raise self._fail(f"{address!r} is not an IP address; check mailops_ipv4/mailops_ipv6 of the host") \
                from None

    def _owner(self, ip: Address) -> tuple[Any, Any]:
        """(client section, bound server or Primary IP) owning ``ip``, from listings cached on first use."""
        if self._servers is None:
            servers = self._call(self._client.servers.get_all, "listing the project's servers")
            self._servers = [(ipaddress.ip_network(net.ip), self._client.servers, server)
                             for server in servers
                             for net in (server.public_net.ipv4, server.public_net.ipv6) if net]
        if (found := _find(ip, self._servers)) is None:
            if self._primary_ips is None:
                # An address can also be an unassigned Primary IP (kept when its server was deleted).
                pips = self._call(self._client.primary_ips.get_all, "listing the project's Primary IPs")
                self._primary_ips = [(ipaddress.ip_network(pip.ip), self._client.primary_ips, pip)
                                     for pip in pips]
            found = _find(ip, self._primary_ips)
        if found is None:
            raise self._fail(f"no server or Primary IP owns {ip}; check mailops_ipv4/mailops_ipv6 of the host "
                             "or that the API token belongs to the servers' Hetzner Cloud project")
        return found


def _status(exc: hcloud.APIException) -> int | str:
    return exc.code if isinstance(exc.code, int) else _HTTP_STATUS.get(exc.code, "HTTP error")


def _ptr_of(owner: Any, ip: Address) -> str | None:
    """The PTR of ``ip`` as ``owner`` (a BoundServer or BoundPrimaryIP) holds it, normalised."""
    if isinstance(owner, BoundServer):
        net = owner.public_net
        if ip.version == 4:
            return _normal(net.ipv4.dns_ptr if net.ipv4 else None)
        entries = net.ipv6.dns_ptr if net.ipv6 else []
    else:
        entries = owner.dns_ptr
    return next((_normal(e["dns_ptr"]) for e in entries or [] if ipaddress.ip_address(e["ip"]) == ip), None)


def _find(ip: Address, index: list[tuple[Any, Any, Any]]) -> tuple[Any, Any] | None:
    return next(((section, owner) for network, section, owner in index if ip in network), None)


def _normal(ptr: str | None) -> str | None:
    """FQDN without trailing dot, lower case; None for no PTR."""
    return (ptr or "").strip().rstrip(".").lower() or None

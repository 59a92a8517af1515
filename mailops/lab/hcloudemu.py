"""A stateful emulator of the Hetzner Cloud API v1 endpoints used for reverse DNS.

Faithful enough that the official ``hcloud`` library works against it
unchanged (``hcloud.Client(token, api_endpoint=base_url)``):

    GET  /v1/servers                      name, label_selector, status, page, per_page
    GET  /v1/servers/{id}
    POST /v1/servers/{id}/actions/change_dns_ptr        {"ip": ..., "dns_ptr": ... | null}
    GET  /v1/servers/{id}/actions/{action_id}
    GET  /v1/primary_ips                  name, label_selector, ip, page, per_page
    GET  /v1/primary_ips/{id}
    POST /v1/primary_ips/{id}/actions/change_dns_ptr
    GET  /v1/primary_ips/{id}/actions/{action_id}
    GET  /v1/actions/{action_id}          what ``BoundAction.wait_until_finished`` polls

Server creation and deletion, SSH keys and the server type, location and
image catalogues are in hcloudemu_servers.py (a mixin of the emulator).

DNS zones (the Cloud API's ``/zones``, which replaced the legacy DNS API), primary mode:

    GET    /v1/zones                      name, mode, label_selector, page, per_page
    GET    /v1/zones/{id_or_name}
    GET    /v1/zones/{id_or_name}/rrsets  name, type (repeatable), label_selector, page, per_page
    POST   /v1/zones/{id_or_name}/rrsets  {"name", "type", "ttl", "labels", "records": [{"value", "comment"}]}
    GET    /v1/zones/{id_or_name}/rrsets/{name}/{type}
    DELETE /v1/zones/{id_or_name}/rrsets/{name}/{type}
    POST   /v1/zones/{id_or_name}/rrsets/{name}/{type}/actions/{set_records|add_records|remove_records|change_ttl}

A zone starts with Hetzner's SOA and three NS RRsets at ``@``.  RRset names are
relative (``@`` for the apex), lower case; TXT values must be quoted strings of
at most 255 bytes each, MX/CNAME/NS targets absolute (trailing dot); a CNAME
shares its name with nothing; creating an existing RRset is 409
``uniqueness_error``; an RRset with ``protection.change`` is 423 ``protected``.
Each write is one request and applies at once (there is no multi-RRset
transaction in the API); its action finishes like ``change_dns_ptr``'s.

As on Hetzner, a server's addresses are Primary IPs: one IPv4 address and one
IPv6 /64.  The IPv4 PTR starts as ``static.<reversed octets>.clients.your-server.de``
and ``dns_ptr: null`` resets it to that; IPv6 PTRs are per address inside the
/64 and ``null`` removes one.  ``change_dns_ptr`` answers 201 with an action in
status ``running``; the change is applied, and the action reports ``success``,
on its ``action_polls``-th poll (1 by default; 0 finishes it at once), so a
client that does not wait does not see its change.

Errors use Hetzner's envelope ``{"error": {"code", "message", "details"}}``;
every response carries ``RateLimit-Limit/-Remaining/-Reset`` (3600 requests
per hour, refilled one per second, enforced).  Test hooks: ``inject_fault``,
``request_count``, ``request_log``.  Stdlib only; serve on loopback only.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["HcloudEmulator", "serve", "shutdown"]

RATE_LIMIT_PER_HOUR = 3600
DEFAULT_PER_PAGE, MAX_PER_PAGE = 25, 50

# Error code Hetzner sends with each HTTP status (for injected faults).
FAULT_CODES = {
    400: ("invalid_input", "invalid input"),
    401: ("unauthorized", "unable to authenticate"),
    403: ("forbidden", "insufficient permissions for this request"),
    404: ("not_found", "not found"),
    409: ("conflict", "the resource has changed during the request, please retry"),
    423: ("locked", "the item is locked, another action is running"),
    429: ("rate_limit_exceeded", f"limit of {RATE_LIMIT_PER_HOUR} requests per hour reached"),
    500: ("server_error", "internal server error"),
    502: ("bad_gateway", "the request could not be answered by the backend, please retry"),
    503: ("unavailable", "service temporarily unavailable"),
    504: ("timeout", "the request could not be answered in time, please retry"),
}

_LOCATION = {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE",
             "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071, "network_zone": "eu-central"}
_SERVER_TYPE = {"id": 104, "name": "cx22", "description": "CX22", "cores": 2, "memory": 4.0, "disk": 40,
                "prices": [], "storage_type": "local", "cpu_type": "shared", "architecture": "x86",
                "deprecation": None}
_IMAGE = {"id": 161547269, "type": "system", "status": "available", "name": "debian-12",
          "description": "Debian 12", "image_size": None, "disk_size": 5, "created": "2024-01-01T00:00:00+00:00",
          "created_from": None, "bound_to": None, "os_flavor": "debian", "os_version": "12",
          "rapid_deploy": True, "protection": {"delete": False}, "deprecated": None, "deleted": None,
          "labels": {}, "architecture": "x86"}

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_RRSET_NAME = re.compile(r"@|(\*\.)?(?!-)[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*|\*")
_RRSET_TYPES = {"A", "AAAA", "CAA", "CNAME", "DS", "HINFO", "HTTPS", "MX", "NS", "PTR", "RP", "SOA", "SRV",
                "SVCB", "TLSA", "TXT"}
_TXT_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _record_problem(rtype: str, value: str) -> str | None:
    """Why Hetzner would refuse ``value`` for ``rtype`` (the checks mailops' record types meet), or None."""
    try:
        if rtype == "A":
            ipaddress.IPv4Address(value)
        elif rtype == "AAAA":
            ipaddress.IPv6Address(value)
    except ValueError:
        return f"not an IPv{4 if rtype == 'A' else 6} address"
    if rtype == "TXT":
        rest = _TXT_STRINGS.sub("", value).strip()
        strings = _TXT_STRINGS.findall(value)
        if rest or not strings:
            return "TXT values are quoted strings (\"...\" \"...\")"
        if any(len(s.encode()) > 255 for s in strings):
            return "a TXT string is longer than 255 bytes; split it into several quoted strings"
    if rtype in ("CNAME", "NS", "PTR") and not value.endswith("."):
        return "the target must be absolute (end with a dot)"
    if rtype == "MX":
        pref, _, target = value.partition(" ")
        if not pref.isdigit() or not target.endswith("."):
            return "an MX value is '<preference> <absolute target with a dot>'"
    return None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def _invalid(field: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_input", f"invalid input in field '{field}': {problem}",
                    {"fields": [{"name": field, "messages": [problem]}]})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_ipv4_ptr(address: str) -> str:
    return "static." + ".".join(reversed(address.split("."))) + ".clients.your-server.de"


def is_valid_hostname(name: Any) -> bool:
    """RFC 1123 host name of at least two labels, no trailing dot (what Hetzner accepts)."""
    if not isinstance(name, str) or len(name) > 253:
        return False
    labels = name.split(".")
    return len(labels) >= 2 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _label_matches(labels: dict[str, str], selector: str) -> bool:
    """Hetzner's label selector: k==v, k=v, k!=v, k, !k, k in (a,b), k notin (a,b), comma = and."""
    for term in (t.strip() for t in re.split(r",(?![^()]*\))", selector)):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^()]*)\)", term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            ok = (labels.get(key) in values) == (op == "in") if key in labels else op == "notin"
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term):
            ok = (labels.get(m[1]) == m[3]) == (m[2] != "!=")
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            ok = (m[2] in labels) != bool(m[1])
        else:
            raise _invalid("label_selector", f"invalid label selector {selector!r}")
        if not ok:
            return False
    return True


from mailops.lab.hcloudemu_servers import MachineBackend, ServerCreation  # noqa: E402  (uses the names above)


class HcloudEmulator(ServerCreation):
    """One Hetzner Cloud project: tokens, servers, Primary IPs, actions, zones; servers made through
    the API (hcloudemu_servers) are what ``backend`` makes of them."""

    def __init__(self, action_polls: int = 1, backend: MachineBackend | None = None):
        self.action_polls = action_polls
        self._lock = threading.Lock()
        self._ids = itertools.count(42)
        self._tokens: set[str] = set()
        self._servers: dict[int, dict[str, Any]] = {}
        self._primary_ips: dict[int, dict[str, Any]] = {}
        self._actions: dict[int, dict[str, Any]] = {}
        self._faults: list[list[Any]] = []  # [status, count left, retry_after, method, path part, skip]
        self._zones: dict[int, dict[str, Any]] = {}
        self._log: list[tuple[str, str, int]] = []
        self._bucket, self._bucket_at = float(RATE_LIMIT_PER_HOUR), time.monotonic()
        self._init_servers(backend)

    # --- admin -------------------------------------------------------------

    def add_token(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def add_server(self, name: str, ipv4: str | None, ipv6_network: str | None,
                   labels: dict[str, str] | None = None) -> int:
        """A running server with a Primary IPv4 address and a Primary IPv6 /64; returns its id."""
        with self._lock:
            server_id = next(self._ids)
            self._servers[server_id] = {
                "id": server_id, "name": name, "labels": dict(labels or {}), "created": _now(),
                "ipv4_id": self._new_primary_ip(ipv4, f"primary_ip-{server_id}-v4", server_id) if ipv4 else None,
                "ipv6_id": self._new_primary_ip(ipv6_network, f"primary_ip-{server_id}-v6", server_id)
                if ipv6_network else None}
            return server_id

    def add_primary_ip(self, ip: str, name: str | None = None) -> int:
        """An unassigned Primary IP (an IPv4 address or an IPv6 /64); returns its id."""
        with self._lock:
            return self._new_primary_ip(ip, name, None)

    def inject_fault(self, status: int, count: int = 1, retry_after: float | None = None, *,
                     method: str | None = None, path_contains: str | None = None, skip: int = 0) -> None:
        """Answer the next ``count`` requests with ``status`` in Hetzner's error envelope; with
        ``method``/``path_contains`` only matching requests, after letting ``skip`` of them through."""
        with self._lock:
            self._faults.append([status, count, retry_after, method, path_contains, skip])

    def add_zone(self, name: str, ttl: int = 3600, labels: dict[str, str] | None = None) -> int:
        """A primary zone with Hetzner's default SOA and NS RRsets; returns its id."""
        with self._lock:
            zone_id = next(self._ids)
            ns = ["hydrogen.ns.hetzner.com.", "oxygen.ns.hetzner.com.", "helium.ns.hetzner.de."]
            self._zones[zone_id] = {
                "id": zone_id, "name": name.lower().rstrip("."), "ttl": ttl, "labels": dict(labels or {}),
                "created": _now(), "ns": ns, "rrsets": {
                    ("@", "SOA"): {"ttl": None, "labels": {}, "protection": {"change": False}, "records": [
                        {"value": f"{ns[0]} dns.hetzner.com. 2026010100 86400 10800 3600000 3600",
                         "comment": None}]},
                    ("@", "NS"): {"ttl": None, "labels": {}, "protection": {"change": False},
                                  "records": [{"value": n, "comment": None} for n in ns]}}}
            return zone_id

    def rrsets(self, zone: str) -> dict[tuple[str, str], dict[str, Any]]:
        """A deep copy of a zone's RRsets by (name, type), for tests (no HTTP)."""
        with self._lock:
            found = next(z for z in self._zones.values() if z["name"] == zone)
            return {
                k: {"ttl": v["ttl"], "labels": dict(v["labels"]), "protection": dict(v["protection"]),
                    "records": [dict(r) for r in v["records"]]} for k, v in found["rrsets"].items()}

    def put_rrset(self, zone: str, name: str, rtype: str, values: list[str], ttl: int | None = None,
                  comment: str | None = None, protected: bool = False) -> None:
        """Someone else's RRset, written as the console would (for tests; no HTTP)."""
        with self._lock:
            found = next(z for z in self._zones.values() if z["name"] == zone)
            found["rrsets"][(name, rtype)] = {"ttl": ttl, "labels": {}, "protection": {"change": protected},
                                              "records": [{"value": v, "comment": comment} for v in values]}

    def request_count(self) -> int:
        with self._lock:
            return len(self._log)

    def request_log(self) -> list[tuple[str, str, int]]:
        """Every request so far as (method, path, HTTP status)."""
        with self._lock:
            return list(self._log)

    def ptr(self, address: str) -> str | None:
        """The PTR the emulator holds for an address (for tests; no HTTP)."""
        ip = ipaddress.ip_address(address)
        with self._lock:
            for pip in self._primary_ips.values():
                if ip in pip["network"]:
                    return pip["ptrs"].get(ip.compressed)
        return None

    def _new_primary_ip(self, ip: str, name: str | None, assignee: int | None) -> int:
        network = ipaddress.ip_network(ip, strict=True)
        if network.version == 6 and network.prefixlen != 64:
            raise ValueError(f"an IPv6 Primary IP is a /64, not {ip}")
        if network.version == 4 and network.prefixlen != 32:
            raise ValueError(f"an IPv4 Primary IP is one address, not {ip}")
        pip_id = next(self._ids)
        address = network.network_address.compressed
        self._primary_ips[pip_id] = {
            "id": pip_id, "name": name or f"primary_ip-{pip_id}", "network": network,
            "assignee_id": assignee, "created": _now(), "labels": {},
            "ptrs": {address: default_ipv4_ptr(address)} if network.version == 4 else {}}
        return pip_id

    # --- JSON views --------------------------------------------------------

    def _primary_ip_json(self, pip: dict[str, Any]) -> dict[str, Any]:
        net = pip["network"]
        return {"id": pip["id"], "name": pip["name"], "type": f"ipv{net.version}",
                "ip": net.network_address.compressed if net.version == 4 else net.with_prefixlen,
                "dns_ptr": [{"ip": ip, "dns_ptr": ptr} for ip, ptr in pip["ptrs"].items()],
                "blocked": False, "assignee_id": pip["assignee_id"],
                "assignee_type": "server", "auto_delete": True, "labels": pip["labels"],
                "protection": {"delete": False}, "created": pip["created"], "location": _LOCATION,
                "datacenter": None}

    def _server_json(self, server: dict[str, Any]) -> dict[str, Any]:
        v4 = self._primary_ips.get(server["ipv4_id"])
        v6 = self._primary_ips.get(server["ipv6_id"])
        public_net = {
            "ipv4": None if v4 is None else {
                "id": v4["id"], "ip": v4["network"].network_address.compressed, "blocked": False,
                "dns_ptr": next(iter(v4["ptrs"].values()), None)},
            "ipv6": None if v6 is None else {
                "id": v6["id"], "ip": v6["network"].with_prefixlen, "blocked": False,
                "dns_ptr": [{"ip": ip, "dns_ptr": ptr} for ip, ptr in v6["ptrs"].items()]},
            "floating_ips": [], "firewalls": []}
        return self._server_view(server, {
                "id": server["id"], "name": server["name"], "status": "running", "created": server["created"],
                "public_net": public_net, "private_net": [], "server_type": _SERVER_TYPE,
                "location": _LOCATION, "image": _IMAGE, "iso": None, "rescue_enabled": False,
                "locked": False, "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0,
                "included_traffic": 21990232555520, "protection": {"delete": False, "rebuild": False},
                "labels": server["labels"], "volumes": [], "load_balancers": [],
                "primary_disk_size": 40, "placement_group": None})

    @staticmethod
    def _action_json(action: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in action.items() if not k.startswith("_")}

    # --- request handling --------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        """One HTTP request -> (status, extra headers, JSON body)."""
        url = urlsplit(target)
        with self._lock:
            within_limit, rate_headers = self._spend_rate_limit()
            try:
                self._gate(headers, within_limit, method, url.path)
                status, payload = self._route(method, url.path, parse_qs(url.query), body)
                extra: dict[str, str] = {}
            except ApiError as exc:
                status, extra = exc.status, exc.headers
                payload = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
            self._log.append((method, url.path, status))
        return status, {**rate_headers, **extra, "X-Correlation-Id": secrets.token_hex(8)}, payload

    def _spend_rate_limit(self) -> tuple[bool, dict[str, str]]:
        # Hetzner refills one request per second up to the hourly limit.
        now = time.monotonic()
        self._bucket = min(RATE_LIMIT_PER_HOUR, self._bucket + (now - self._bucket_at))
        self._bucket_at = now
        within_limit = self._bucket >= 1
        if within_limit:
            self._bucket -= 1
        return within_limit, {
            "RateLimit-Limit": str(RATE_LIMIT_PER_HOUR), "RateLimit-Remaining": str(int(self._bucket)),
            "RateLimit-Reset": str(math.ceil(time.time() + RATE_LIMIT_PER_HOUR - self._bucket))}

    def _gate(self, headers: dict[str, str], within_limit: bool, method: str = "", path: str = "") -> None:
        """Injected faults, then the rate limit (Hetzner limits unauthenticated calls too), then the token."""
        fault = next((f for f in self._faults if (f[3] is None or f[3] == method)
                      and (f[4] is None or f[4] in path)), None)
        if fault is not None and fault[5] > 0:
            fault[5] -= 1  # let this one through
        elif fault is not None:
            status, retry_after = fault[0], fault[2]
            fault[1] -= 1
            if fault[1] <= 0:
                self._faults.remove(fault)
            code, message = FAULT_CODES.get(status, ("server_error", HTTPStatus(status).phrase.lower()))
            extra = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
            if status == 429:
                extra |= {"RateLimit-Remaining": "0",
                          "RateLimit-Reset": str(math.ceil(time.time() + (retry_after or 1)))}
            raise ApiError(status, code, message, None, extra)
        if not within_limit:
            raise ApiError(429, *FAULT_CODES[429])
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self._tokens:
            raise ApiError(401, *FAULT_CODES[401])

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               body: bytes) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"] or len(parts) < 2:
            raise ApiError(404, *FAULT_CODES[404])
        kind, rest = parts[1], parts[2:]
        owners = {"servers": self._servers, "primary_ips": self._primary_ips}
        if method == "GET" and kind == "actions" and len(rest) == 1:
            return 200, {"action": self._poll_action(self._number(rest[0]), None)}
        if kind == "zones":
            return self._zones_route(method, rest, query, body)
        if (answer := self._servers_route(method, kind, rest, query, body)) is not None:
            return answer
        if kind not in owners:
            raise ApiError(404, *FAULT_CODES[404])
        if method == "GET" and not rest:
            return 200, self._list(kind, query)
        resource = owners[kind].get(self._number(rest[0]))
        if resource is None:
            raise ApiError(404, "not_found", f"{kind[:-1]} with ID '{rest[0]}' not found")
        singular = kind[:-1]
        if method == "GET" and len(rest) == 1:
            view = self._server_json if kind == "servers" else self._primary_ip_json
            return 200, {singular: view(resource)}
        if method == "GET" and len(rest) == 3 and rest[1] == "actions":
            return 200, {"action": self._poll_action(self._number(rest[2]), (resource["id"], singular))}
        if method == "POST" and rest[1:] == ["actions", "change_dns_ptr"]:
            return 201, {"action": self._change_dns_ptr(kind, resource, body)}
        raise ApiError(404, *FAULT_CODES[404])

    # --- zones ---------------------------------------------------------------

    def _zone_json(self, zone: dict[str, Any]) -> dict[str, Any]:
        return {"id": zone["id"], "name": zone["name"], "created": zone["created"], "mode": "primary",
                "ttl": zone["ttl"], "labels": zone["labels"], "protection": {"delete": False}, "status": "ok",
                "record_count": sum(len(r["records"]) for r in zone["rrsets"].values()), "registrar": "other",
                "primary_nameservers": [],
                "authoritative_nameservers": {"assigned": zone["ns"], "delegated": [],
                                              "delegation_last_check": None, "delegation_status": "unknown"}}

    @staticmethod
    def _rrset_json(zone: dict[str, Any], key: tuple[str, str]) -> dict[str, Any]:
        rrset = zone["rrsets"][key]
        return {"id": f"{key[0]}/{key[1]}", "name": key[0], "type": key[1], "ttl": rrset["ttl"],
                "labels": rrset["labels"], "protection": rrset["protection"],
                "records": [dict(r) for r in rrset["records"]], "zone": zone["id"]}

    @staticmethod
    def _page(kind: str, items: list[Any], query: dict[str, list[str]]) -> dict[str, Any]:
        def positive(name: str, default: int) -> int:
            text = query.get(name, [None])[-1]
            if text is None:
                return default
            if not text.isdigit() or int(text) < 1:
                raise _invalid(name, "must be a positive integer")
            return int(text)
        page, per_page = positive("page", 1), min(positive("per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
        last_page = max(1, math.ceil(len(items) / per_page))
        return {kind: items[(page - 1) * per_page: page * per_page], "meta": {"pagination": {
            "page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if page < last_page else None, "last_page": last_page,
            "total_entries": len(items)}}}

    def _zone_action(self, zone: dict[str, Any], command: str) -> dict[str, Any]:
        """The action of an RRset write (already applied: it only reports), finishing like change_dns_ptr's."""
        action_id = next(self._ids)
        action = {"id": action_id, "command": command, "status": "running", "progress": 0, "started": _now(),
                  "finished": None, "error": None, "resources": [{"id": zone["id"], "type": "zone"}],
                  "_polls_left": self.action_polls, "_apply": lambda: None}
        self._actions[action_id] = action
        if self.action_polls <= 0:
            self._finish(action)
        return self._action_json(action)

    def _zones_route(self, method: str, rest: list[str], query: dict[str, list[str]],
                     body: bytes) -> tuple[int, dict[str, Any]]:
        if not rest:
            if method != "GET":
                raise ApiError(404, *FAULT_CODES[404])
            zones = list(self._zones.values())
            if (name := query.get("name", [None])[-1]) is not None:
                zones = [z for z in zones if z["name"] == name.lower().rstrip(".")]
            if (mode := query.get("mode", [None])[-1]) is not None and mode != "primary":
                zones = []
            if (selector := query.get("label_selector", [None])[-1]) is not None:
                zones = [z for z in zones if _label_matches(z["labels"], selector)]
            return 200, self._page("zones", [self._zone_json(z) for z in zones], query)
        zone = next((z for z in self._zones.values() if str(z["id"]) == rest[0] or z["name"] == rest[0]), None)
        if zone is None:
            raise ApiError(404, "not_found", f"zone with ID or name '{rest[0]}' not found")
        if method == "GET" and len(rest) == 1:
            return 200, {"zone": self._zone_json(zone)}
        if method == "GET" and len(rest) == 3 and rest[1] == "actions":
            return 200, {"action": self._poll_action(self._number(rest[2]), (zone["id"], "zone"))}
        if rest[1:2] != ["rrsets"]:
            raise ApiError(404, *FAULT_CODES[404])
        if len(rest) == 2 and method == "GET":
            keys = sorted(zone["rrsets"])
            if (name := query.get("name", [None])[-1]) is not None:
                keys = [k for k in keys if k[0] == name]
            if types := query.get("type"):
                keys = [k for k in keys if k[1] in types]
            if (selector := query.get("label_selector", [None])[-1]) is not None:
                keys = [k for k in keys if _label_matches(zone["rrsets"][k]["labels"], selector)]
            return 200, self._page("rrsets", [self._rrset_json(zone, k) for k in keys], query)
        data = self._json_object(body) if method == "POST" else {}
        if len(rest) == 2 and method == "POST":
            name, rtype = data.get("name"), data.get("type")
            if not isinstance(name, str) or not _RRSET_NAME.fullmatch(name):
                raise _invalid("name", f"{name!r} is not a lower case name relative to the zone ('@' for the apex)")
            if rtype not in _RRSET_TYPES or rtype == "SOA":
                raise _invalid("type", f"{rtype!r} is not a type an RRset can be created with")
            if (name, rtype) in zone["rrsets"]:
                raise ApiError(409, "uniqueness_error", f"RRSet {name}/{rtype} already exists")
            others = {t for n, t in zone["rrsets"] if n == name}
            if others and (rtype == "CNAME" or "CNAME" in others):
                raise _invalid("type", f"a CNAME cannot share the name {name!r} with other records")
            records = self._records(data.get("records"), rtype)
            if not records:
                raise _invalid("records", "must hold at least one record")
            zone["rrsets"][(name, rtype)] = {"ttl": self._ttl(data.get("ttl")), "labels": data.get("labels") or {},
                                             "protection": {"change": False}, "records": records}
            return 201, {"rrset": self._rrset_json(zone, (name, rtype)),
                         "action": self._zone_action(zone, "create_rrset")}
        key = (rest[2], rest[3]) if len(rest) >= 4 else None
        if key is None or key not in zone["rrsets"]:
            raise ApiError(404, "not_found", f"RRSet {'/'.join(rest[2:4])} not found")
        rrset = zone["rrsets"][key]
        if len(rest) == 4 and method == "GET":
            return 200, {"rrset": self._rrset_json(zone, key)}
        if rrset["protection"]["change"]:
            raise ApiError(423, "protected", f"RRSet {key[0]}/{key[1]} is protected against changes")
        if len(rest) == 4 and method == "DELETE":
            if key == ("@", "NS"):
                raise _invalid("type", "the apex NS RRset cannot be deleted")
            del zone["rrsets"][key]
            return 201, {"action": self._zone_action(zone, "delete_rrset")}
        if len(rest) != 6 or rest[4] != "actions" or method != "POST":
            raise ApiError(404, *FAULT_CODES[404])
        verb = rest[5]
        if verb == "change_ttl":
            if "ttl" not in data:
                raise _invalid("ttl", "is required")
            rrset["ttl"] = self._ttl(data["ttl"])
        elif verb in ("set_records", "add_records", "remove_records"):
            records = self._records(data.get("records"), key[1])
            if verb == "set_records":
                new = records
            elif verb == "add_records":
                new = rrset["records"] + [r for r in records
                                          if r["value"] not in {o["value"] for o in rrset["records"]}]
                if "ttl" in data:
                    rrset["ttl"] = self._ttl(data["ttl"])
            else:
                gone = {r["value"] for r in records}
                new = [r for r in rrset["records"] if r["value"] not in gone]
            if not new and verb == "set_records":
                raise _invalid("records", "must hold at least one record; delete the RRSet instead")
            if new:
                rrset["records"] = new
            else:
                del zone["rrsets"][key]  # removing the last record removes the RRset
        else:
            raise ApiError(404, *FAULT_CODES[404])
        return 201, {"action": self._zone_action(zone, f"{verb}")}

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "json_error", "invalid JSON in request body") from None
        if not isinstance(data, dict):
            raise ApiError(400, "json_error", "request body must be a JSON object")
        return data

    @staticmethod
    def _ttl(ttl: Any) -> int | None:
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or not 60 <= ttl <= 2147483647):
            raise _invalid("ttl", f"{ttl!r} is not a TTL between 60 and 2147483647 (or null for the zone's)")
        return ttl

    @staticmethod
    def _records(raw: Any, rtype: str) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise _invalid("records", "must be a list of {value, comment}")
        out: list[dict[str, Any]] = []
        for item in raw:
            value = item.get("value") if isinstance(item, dict) else None
            comment = item.get("comment") if isinstance(item, dict) else None
            if not isinstance(value, str) or not value or (comment is not None and not isinstance(comment, str)):
                raise _invalid("records", f"{item!r} is not a record with a value and an optional comment")
            problem = _record_problem(rtype, value)
            if problem:
                raise _invalid("records", f"{value!r}: {problem}")
            if value in {o["value"] for o in out}:
                raise _invalid("records", f"{value!r} is listed twice")
            out.append({"value": value, "comment": comment})
        return out

    @staticmethod
    def _number(text: str) -> int:
        if not text.isdigit():
            raise ApiError(400, "invalid_input", f"invalid input in field 'id': {text!r} is not an integer")
        return int(text)

    def _list(self, kind: str, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            return query.get(name, [None])[-1]

        if kind == "servers":
            items = [(s, s["labels"]) for s in self._servers.values()]
            if statuses := query.get("status"):
                items = [it for it in items if it[0].get("status", "running") in statuses]
        else:
            items = [(p, p["labels"]) for p in self._primary_ips.values()]
            if (ip := one("ip")) is not None:
                items = [it for it in items if it[0]["network"].network_address.compressed == ip
                         or it[0]["network"].with_prefixlen == ip]
        if (name := one("name")) is not None:
            items = [it for it in items if it[0]["name"] == name]
        if (selector := one("label_selector")) is not None:
            items = [it for it in items if _label_matches(it[1], selector)]
        view = self._server_json if kind == "servers" else self._primary_ip_json
        return self._page(kind, [view(it[0]) for it in items], query)

    def _change_dns_ptr(self, kind: str, resource: dict[str, Any], body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "json_error", "invalid JSON in request body") from None
        if not isinstance(data, dict):
            raise ApiError(400, "json_error", "request body must be a JSON object")
        if not isinstance(data.get("ip"), str):
            raise _invalid("ip", "is required")
        if "dns_ptr" not in data:
            raise _invalid("dns_ptr", "is required")
        hostname = data["dns_ptr"]
        if hostname is not None and not is_valid_hostname(hostname):
            raise _invalid("dns_ptr", f"{hostname!r} is not a valid hostname")
        try:
            ip = ipaddress.ip_address(data["ip"])
        except ValueError:
            raise _invalid("ip", f"{data['ip']!r} is not an IP address") from None
        pip_ids = [resource["ipv4_id"], resource["ipv6_id"]] if kind == "servers" else [resource["id"]]
        pip = next((self._primary_ips[i] for i in pip_ids
                    if i is not None and ip in self._primary_ips[i]["network"]), None)
        if pip is None:
            raise _invalid("ip", f"{ip} is not an address of this {kind[:-1].replace('_', ' ')}")

        def apply() -> None:
            if hostname is not None:
                pip["ptrs"][ip.compressed] = hostname
            elif ip.version == 4:
                pip["ptrs"][ip.compressed] = default_ipv4_ptr(ip.compressed)
            else:
                pip["ptrs"].pop(ip.compressed, None)
            self.backend.ptr_changed(ip.compressed, pip["ptrs"].get(ip.compressed))

        action_id = next(self._ids)
        action = {"id": action_id, "command": "change_dns_ptr", "status": "running", "progress": 0,
                  "started": _now(), "finished": None, "error": None,
                  "resources": [{"id": resource["id"], "type": kind[:-1]}],
                  "_polls_left": self.action_polls, "_apply": apply}
        self._actions[action_id] = action
        if self.action_polls <= 0:
            self._finish(action)
        return self._action_json(action)

    def _poll_action(self, action_id: int, owner: tuple[int, str] | None) -> dict[str, Any]:
        action = self._actions.get(action_id)
        if action is None or (owner and {"id": owner[0], "type": owner[1]} not in action["resources"]):
            raise ApiError(404, "not_found", f"action with ID '{action_id}' not found")
        if action["status"] == "running":
            action["_polls_left"] -= 1
            if action["_polls_left"] <= 0:
                self._finish(action)
        return self._action_json(action)

    @staticmethod
    def _finish(action: dict[str, Any]) -> None:
        action["_apply"]()
        action.update(status="success", progress=100, finished=_now())


# --- HTTP ------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the library's requests.Session expects
    server: "_Server"

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.server.emulator.handle(self.command, self.path, headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read request_log()
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: HcloudEmulator


def serve(emulator: HcloudEmulator, host: str = "127.0.0.1", port: int = 0) -> tuple[_Server, str]:
    """Serve the emulator on a loopback address in a daemon thread; returns (server, base URL ending in /v1)."""
    address = ipaddress.ip_address(host)
    if not address.is_loopback:
        raise ValueError(f"the emulator listens on loopback only, not {host}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    server = type("_LoopbackServer", (_Server,), {"address_family": family})((host, port), _Handler)
    server.emulator = emulator
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},  # quick shutdown()
                     name="hcloud-emulator", daemon=True).start()
    bound = f"[{host}]" if address.version == 6 else host
    return server, f"http://{bound}:{server.server_address[1]}/v1"


def shutdown(server: _Server) -> None:
    server.shutdown()
    server.server_close()

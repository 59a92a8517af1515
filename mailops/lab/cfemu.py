"""A stateful emulator of the Cloudflare API v4 (zones and DNS records).

It is faithful enough that the official ``cloudflare`` Python SDK (v5) works
against it unchanged, in-process::

    emu = CloudflareEmulator(state_file=tmp / "cf.json")
    emu.add_token(TOKEN); emu.add_zone("news.test")
    cf = cloudflare.Cloudflare(api_token=TOKEN, base_url="http://cf.test/client/v4",
                               http_client=cloudflare.DefaultHttpxClient(
                                   transport=httpx.WSGITransport(app=emu.wsgi_app)))

or over HTTP (``serve()``, or ``python -m mailops.lab.cfemu``, which the lab runs
on its gateway, port 8787, mirroring every change into the lab BIND).

What it does like Cloudflare: the response envelope, page/per_page pagination
(pages past the end are 200 with ``result: []``), the list filters
(``name.exact=``, ``comment.present=``, ``match=any``...), create/get/PUT/PATCH/
DELETE, the transactional batch (deletes, patches, puts, posts; at most 200
operations), TXT content returned exactly as written, and the error codes
(81058 identical record, 81053/81054 CNAME conflicts, 81044 no such record,
9000/9005/9006/9007/9021/9004 validation, 6003/9106/9103 bad auth headers,
1000 unknown token (401), 10000 token without write permission (403)).
Faults (status, count, ``retry-after``), slow responses and a batch that fails
midway can be injected to test a client's retries and the batch's atomicity.

State lives under one lock.  Every committed mutation is written atomically
(mode 0600) to ``state_file`` and then passed to ``on_change(zone_name,
records)`` *while the lock is still held*, so observers see changes one at a
time and in commit order.  An exception in ``on_change`` is recorded in
``change_errors`` (and printed) but does not fail the API request: the change
is already committed, and BindMirror resynchronises the whole zone on the next
change.  API tokens are configuration, never persisted.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime
import hashlib
import http
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
import dns.zone

from mailops.dns.records import Record, join_txt, split_txt

API_PREFIX = "/client/v4"
DEFAULT_PORT = 8787
BATCH_LIMIT = 200          # operations per batch request on the free plan
SUPPORTED_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "TXT")
PROXIABLE_TYPES = ("A", "AAAA", "CNAME")
HOSTNAME_TYPES = ("CNAME", "MX", "NS", "PTR")
AUTO_TTL_SECONDS = 300     # what Cloudflare serves for ttl 1 ("automatic")
_BEARER = re.compile(r"Bearer ([A-Za-z0-9_-]+)\Z")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_RECORD_FIELDS = ("name", "type", "content", "ttl", "proxied", "priority", "comment", "tags", "settings")
_LIST_CONTROLS = ("page", "per_page", "order", "direction", "match", "include_shadow_metadata", "tag_match")


class ApiError(Exception):
    """An API failure: HTTP status plus Cloudflare's errors[{code, message}]."""

    def __init__(self, status: int, code: int, message: str, *more: tuple[int, str],
                 chain: list[dict] | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.errors = [{"code": code, "message": message}] + [{"code": c, "message": m} for c, m in more]
        if chain:
            self.errors[0]["error_chain"] = chain


def _invalid(detail: str, code: int = 1004) -> ApiError:
    """Cloudflare's generic validation failure, with the detail in the error chain."""
    return ApiError(400, 1004, "DNS Validation Error", chain=[{"code": code, "message": detail}])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hostname(text: str, *, allow_wildcard: bool = False) -> str | None:
    """text as a lower-case name without trailing dot, or None if it is not a valid name."""
    name = text.strip().rstrip(".").lower()
    labels = name.split(".")
    if not name or len(name) > 253:
        return None
    for i, label in enumerate(labels):
        if not (_LABEL.match(label) or (allow_wildcard and i == 0 and label == "*")):
            return None
    return name


class CloudflareEmulator:
    tag_quota = 0  # the free plan allows no record tags (Cloudflare answers 1004/9300)

    def __init__(self, state_file: Path | None = None,
                 on_change: Callable[[str, list[dict]], None] | None = None):
        self.state_file = Path(state_file) if state_file else None
        self.on_change = on_change
        self.change_errors: list[str] = []
        self.request_log: collections.deque[dict] = collections.deque(maxlen=100_000)  # bounded: daemons live long
        self._lock = threading.RLock()
        self._zones: dict[str, dict] = {}
        self._records: dict[str, dict[str, dict]] = {}  # zone id -> record id -> record (creation order)
        self._tokens: dict[str, bool] = {}              # token -> may write
        self._faults: list[dict] = []
        self._batch_fail_after: tuple[int, int] | None = None
        self._delay = 0.0
        if self.state_file and self.state_file.exists():
            try:
                state = json.loads(self.state_file.read_text())
                self._zones = {z["id"]: z for z in state["zones"]}
                self._records = {zid: {r["id"]: r for r in recs} for zid, recs in state["records"].items()}
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.state_file}: unreadable Cloudflare emulator state ({exc})") from exc

    # -- admin (Python, not HTTP) ----------------------------------------------
    def add_zone(self, name: str) -> str:
        """Create zone name (if missing); return its id."""
        name = _hostname(name)
        if name is None:
            raise ValueError("invalid zone name")
        with self._lock:
            for z in self._zones.values():
                if z["name"] == name:
                    return z["id"]
            now = _now()
            zone = {"id": secrets.token_hex(16), "name": name, "status": "active", "paused": False,
                    "type": "full", "development_mode": 0,
                    "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
                    "original_name_servers": None, "original_registrar": None, "original_dnshost": None,
                    "created_on": now, "modified_on": now, "activated_on": now,
                    "meta": {"step": 2, "phishing_detected": False},
                    "owner": {"id": None, "type": "user", "email": None},
                    "account": {"id": hashlib.sha256(b"mailops").hexdigest()[:32], "name": "mailops emulator"},
                    "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
                    "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website",
                             "price": 0, "currency": "USD", "frequency": "", "is_subscribed": False,
                             "can_subscribe": False, "legacy_id": "free", "legacy_discount": False,
                             "externally_managed": False}}
            self._zones[zone["id"]] = zone
            self._records[zone["id"]] = {}
            self._save()
            return zone["id"]

    def add_token(self, token: str, *, write: bool = True) -> None:
        """Accept token; a read-only token (write=False) gets 403/10000 on every write."""
        with self._lock:
            self._tokens[token] = write

    def records(self, zone_name: str) -> list[dict]:
        """A copy of every record of zone_name, in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._records[self._zone_by_name(zone_name)["id"]].values()))

    def notify_all(self) -> None:
        """Call on_change for every zone (the daemon does this once at start to resync BIND)."""
        with self._lock:
            self._notify(list(self._zones))

    def inject_fault(self, status: int, *, count: int = 1, retry_after: float | None = None,
                     methods: set[str] | None = None, path_contains: str | None = None,
                     code: int | None = None, message: str | None = None) -> None:
        """The next count requests matching methods/path_contains fail with status (no state change)."""
        if code is None:
            code, default = (10100, "More than 1200 requests per 300 seconds reached. Please wait and "
                                    "consider throttling your request speed") if status == 429 else \
                (1000, http.HTTPStatus(status).phrase)
            message = message or default
        with self._lock:
            self._faults.append({"status": status, "count": count, "retry_after": retry_after,
                                 "methods": {m.upper() for m in methods} if methods else None,
                                 "path_contains": path_contains, "code": code, "message": message})

    def fail_batch_after(self, n_ops: int, status: int = 500) -> None:
        """The next batch request fails (status) after applying n_ops of its operations; as
        Cloudflare runs a batch in one transaction, none of them may remain applied."""
        with self._lock:
            self._batch_fail_after = (n_ops, status)

    def delay(self, seconds: float) -> None:
        """Delay every following response by seconds (0 turns it off)."""
        self._delay = float(seconds)

    def request_count(self, method: str | None = None, path_contains: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.request_log
                       if (method is None or r["method"] == method.upper())
                       and (path_contains is None or path_contains in r["path"]))

    def reset_stats(self) -> None:
        with self._lock:
            self.request_log.clear()

    # -- WSGI --------------------------------------------------------------------
    def wsgi_app(self, environ, start_response):
        method = environ["REQUEST_METHOD"].upper()
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        status, payload, extra = self.handle(method, environ.get("PATH_INFO", ""), query, headers, body)
        data = json.dumps(payload).encode()
        start_response(f"{status} {http.HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
                       + list(extra.items()))
        return [data]

    def handle(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict, dict]:
        """One API request -> (HTTP status, envelope, extra headers)."""
        entry = {"method": method, "path": path, "query": query, "status": None, "time": time.time()}
        with self._lock:
            self.request_log.append(entry)
            fault = self._take_fault(method, path)
        if self._delay:
            time.sleep(self._delay)
        try:
            if fault:
                extra = {"retry-after": f"{fault['retry_after']:g}"} if fault["retry_after"] is not None else {}
                raise ApiError(fault["status"], fault["code"], fault["message"], headers=extra)
            result, info, messages = self._route(method, path, query, headers, body)
            status, payload, extra = 200, {"success": True, "errors": [], "messages": messages, "result": result}, {}
            if info is not None:
                payload["result_info"] = info
        except Exception as exc:  # an emulator bug still answers in the envelope
            if not isinstance(exc, ApiError):
                traceback.print_exc()
                exc = ApiError(500, 1000, f"emulator error: {exc!r}")
            status, extra = exc.status, exc.headers
            payload = {"success": False, "errors": exc.errors, "messages": [], "result": None}
        entry["status"] = status
        return status, payload, extra

    def _take_fault(self, method: str, path: str) -> dict | None:
        for fault in self._faults:
            if fault["count"] > 0 and (fault["methods"] is None or method in fault["methods"]) \
                    and (fault["path_contains"] is None or fault["path_contains"] in path):
                fault["count"] -= 1
                return fault
        return None

    # -- routing and authentication ------------------------------------------------
    def _route(self, method, path, query, headers, body):
        route = path[len(API_PREFIX):].rstrip("/") if path.startswith(API_PREFIX + "/") else None
        token = self._authenticate(headers)
        m = route and re.fullmatch(r"/zones(?:/([^/]+)(?:/dns_records(?:/([^/]+))?)?)?", route)
        if route == "/user/tokens/verify" and method == "GET":
            return ({"id": hashlib.sha256(token.encode()).hexdigest()[:32], "status": "active"}, None,
                    [{"code": 10000, "message": "This API Token is valid and active", "type": None}])
        if not m:
            raise ApiError(404, 7000, "No route for that URI")
        zone_id, record_id = m.group(1), m.group(2)
        has_records = "/dns_records" in route
        allowed = ("GET", "PUT", "PATCH", "DELETE") if record_id and record_id != "batch" else \
            ("POST",) if record_id == "batch" else ("GET", "POST") if has_records else ("GET",)
        if method not in allowed:
            raise ApiError(405, 7001, f"Method {method} not available for that URI.")
        if method in _WRITE_METHODS and not self._tokens[token]:
            raise ApiError(403, 10000, "Authentication error")
        data = self._json(body) if method in ("POST", "PUT", "PATCH") else {}
        with self._lock:
            if zone_id is None:
                return self._list_zones(query)
            zone = self._zones.get(zone_id)
            if zone is None:
                raise ApiError(404, 7003, f"Could not route to {route}, perhaps your object identifier is invalid?",
                               (7000, "No route for that URI"))
            if not has_records:
                return copy.deepcopy(zone), None, []
            if record_id is None:
                return (self._list_records(zone, query) if method == "GET" else
                        (self._commit(zone, self._create(zone, data, self._records[zone_id])), None, []))
            if record_id == "batch":
                return self._batch(zone, data), None, []
            return self._one_record(zone, method, record_id, data), None, []

    def _authenticate(self, headers: dict) -> str:
        auth = headers.get("authorization")
        if auth is None:
            if "x-auth-key" in headers or "x-auth-email" in headers:
                raise ApiError(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")
            raise ApiError(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        m = _BEARER.match(auth)
        if not m:
            raise ApiError(400, 6003, "Invalid request headers",
                           chain=[{"code": 6111, "message": "Invalid format for Authorization header"}])
        with self._lock:
            if m.group(1) not in self._tokens:
                raise ApiError(401, 1000, "Invalid API Token")
        return m.group(1)

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(400, 6007, "Malformed JSON in request body")
        return data

    # -- zones -----------------------------------------------------------------------
    def _zone_by_name(self, name: str) -> dict:
        for z in self._zones.values():
            if z["name"] == name.rstrip(".").lower():
                return z
        raise KeyError(f"no zone {name}")

    def _list_zones(self, query):
        zones = [z for z in self._zones.values()
                 if query.get("name", z["name"]).rstrip(".").lower() == z["name"]
                 and query.get("status", z["status"]) == z["status"]]
        zones.sort(key=lambda z: z["name"], reverse=query.get("direction") == "desc")
        page, info = _paginate(zones, query, default=20, minimum=5, maximum=50)
        return copy.deepcopy(page), info, []

    # -- records: list -----------------------------------------------------------------
    def _list_records(self, zone, query):
        predicates = []
        for key, value in query.items():
            if key in _LIST_CONTROLS:
                continue
            field, _, op = key.partition(".")
            if key == "type":
                predicates.append(lambda r, v=value.upper(): r["type"] == v)
            elif key == "proxied":
                predicates.append(lambda r, v=value.lower() == "true": r["proxied"] == v)
            elif key in ("comment.present", "comment.absent"):
                predicates.append(lambda r, want=op == "present": bool(r["comment"]) == want)
            elif field in ("name", "content", "comment") and op in ("", "exact", "contains", "startswith",
                                                                      "endswith"):
                predicates.append(_text_filter(field, op or "exact", value))
            else:  # rather than silently return unfiltered records
                raise ApiError(400, 1004, f"DNS Validation Error: filter {key!r} is not supported by the emulator")
        combine = any if query.get("match") == "any" else all
        recs = [r for r in self._records[zone["id"]].values() if not predicates or combine(p(r) for p in predicates)]
        order = query.get("order")
        if order:
            if order not in ("type", "name", "content", "ttl", "proxied"):
                raise ApiError(400, 1004, f"DNS Validation Error: invalid order {order!r}")
            recs.sort(key=lambda r: r[order], reverse=query.get("direction") == "desc")
        page, info = _paginate(recs, query, default=100, minimum=1, maximum=5_000_000)
        return copy.deepcopy(page), info, []

    # -- records: writes ---------------------------------------------------------------
    def _one_record(self, zone, method, record_id, data):
        recs = self._records[zone["id"]]
        current = recs.get(record_id)
        if current is None:
            raise ApiError(404, 81044, "Record does not exist.")
        if method == "GET":
            return copy.deepcopy(current)
        if method == "DELETE":
            del recs[record_id]
            self._commit(zone, None)
            return {"id": record_id}
        new = self._create(zone, data, recs, current=current, merge=method == "PATCH")
        return self._commit(zone, new)

    def _create(self, zone, data, recs, *, current=None, merge=False) -> dict:
        """Validate data into a record (replacing current, or merged into it for PATCH) and store
        it in recs; conflicts are checked against recs."""
        src = {k: current[k] for k in _RECORD_FIELDS if k in current} if merge else {}
        src.update({k: v for k, v in data.items() if k in _RECORD_FIELDS})
        rec = self._validate(zone, src)
        self._check_conflicts(rec, recs, current["id"] if current else None)
        now = _now()
        rec.update({"id": current["id"] if current else secrets.token_hex(16),
                    "created_on": current["created_on"] if current else now, "modified_on": now})
        recs[rec["id"]] = rec
        return rec

    def _validate(self, zone, src) -> dict:
        zname = zone["name"]
        raw = src.get("name")
        name = _hostname(raw, allow_wildcard=True) if isinstance(raw, str) else None
        if raw in ("@", zname + "."):
            name = zname
        if name is None:
            raise ApiError(400, 9000, "DNS name is invalid.")
        if name != zname and not name.endswith("." + zname):
            name = f"{name}.{zname}"  # Cloudflare treats a name outside the zone as relative
        rtype = src.get("type")
        if not isinstance(rtype, str) or rtype.upper() not in SUPPORTED_TYPES:
            raise _invalid(f"record type {rtype!r} is not supported (emulated: {', '.join(SUPPORTED_TYPES)})")
        rtype = rtype.upper()
        content = src.get("content")
        if not isinstance(content, str) or not content.strip():
            raise _invalid(f"Content for {rtype} record is invalid.")
        try:
            if rtype == "A":
                content = str(ipaddress.IPv4Address(content.strip()))
            elif rtype == "AAAA":
                content = str(ipaddress.IPv6Address(content.strip()))
        except ValueError:
            raise ApiError(400, 9005 if rtype == "A" else 9006,
                           f"Content for {rtype} record must be a valid IPv{4 if rtype == 'A' else 6} address.")
        if rtype in HOSTNAME_TYPES:
            host = "." if rtype == "MX" and content.strip() == "." else _hostname(content)
            if host is None:
                raise ApiError(400, 9007, "Content for CNAME record is invalid.") if rtype == "CNAME" \
                    else _invalid(f"Content for {rtype} record is invalid.")
            content = host
        ttl = src.get("ttl", 1)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl != int(ttl) \
                or not (ttl == 1 or 60 <= ttl <= 86400):
            raise ApiError(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for automatic.")
        proxied = bool(src.get("proxied") or False)
        if proxied and rtype not in PROXIABLE_TYPES:
            raise ApiError(400, 9004, "This record type cannot be proxied.")
        rec = {"zone_id": zone["id"], "zone_name": zname, "name": name, "type": rtype, "content": content,
               "proxiable": rtype in PROXIABLE_TYPES, "proxied": proxied, "ttl": int(ttl),
               "settings": src.get("settings") or {}, "meta": {}, "comment": src.get("comment") or None,
               "tags": list(src.get("tags") or [])}
        if len(rec["tags"]) > self.tag_quota:
            raise _invalid(f"DNS record has {len(rec['tags'])} tags, exceeding the quota of {self.tag_quota}.", 9300)
        if rtype == "MX":
            prio = src.get("priority")
            if isinstance(prio, bool) or not isinstance(prio, (int, float)) or not 0 <= prio <= 65535:
                raise _invalid("MX records need a priority between 0 and 65535.")
            rec["priority"] = int(prio)
        return rec

    @staticmethod
    def _check_conflicts(rec: dict, recs: dict, self_id: str | None) -> None:
        def ident(r):  # TXT compares as DNS does: raw and quoted forms are the same value
            value = join_txt(r["content"]) if r["type"] == "TXT" else r["content"]
            return r["name"], r["type"], value, r.get("priority")

        for other in recs.values():
            if other["id"] == self_id or other["name"] != rec["name"]:
                continue
            if ident(other) == ident(rec):
                raise ApiError(400, 81058, "An identical record already exists.")
            if rec["type"] == "CNAME":
                raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
            if other["type"] == "CNAME":
                raise ApiError(400, 81054, "A CNAME record with that host already exists.")

    def _batch(self, zone, data) -> dict:
        ops = {k: data.get(k) or [] for k in ("deletes", "patches", "puts", "posts")}
        if not all(isinstance(v, list) and all(isinstance(o, dict) for o in v) for v in ops.values()):
            raise ApiError(400, 6007, "Malformed JSON in request body")
        total = sum(len(v) for v in ops.values())
        if total > BATCH_LIMIT:
            raise _invalid(f"A batch may hold at most {BATCH_LIMIT} operations, got {total}.")
        fail_after, self._batch_fail_after = self._batch_fail_after, None
        work = copy.deepcopy(self._records[zone["id"]])  # applied to the zone only if every op succeeds
        out: dict[str, list] = {k: [] for k in ops}
        done = 0
        for kind in ("deletes", "patches", "puts", "posts"):  # Cloudflare's fixed order
            for op in ops[kind]:
                if fail_after and done >= fail_after[0]:
                    raise ApiError(fail_after[1], 1000, "Internal error while applying the batch; nothing was changed")
                if kind == "posts":
                    out[kind].append(self._create(zone, op, work))
                else:
                    current = work.get(op.get("id"))
                    if current is None:
                        raise ApiError(404, 81044, "Record does not exist.")
                    if kind == "deletes":
                        out[kind].append(work.pop(current["id"]))
                    else:
                        out[kind].append(self._create(zone, op, work, current=current, merge=kind == "patches"))
                done += 1
        self._records[zone["id"]] = work
        self._commit(zone, None)
        return copy.deepcopy(out)

    # -- commit: persist, then notify ----------------------------------------------------
    def _commit(self, zone, result):
        self._save()
        self._notify([zone["id"]])
        return copy.deepcopy(result)

    def _save(self) -> None:
        if not self.state_file:
            return
        state = {"zones": list(self._zones.values()),
                 "records": {zid: list(recs.values()) for zid, recs in self._records.items()}}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def _notify(self, zone_ids) -> None:
        if not self.on_change:
            return
        for zid in zone_ids:
            name = self._zones[zid]["name"]
            try:
                self.on_change(name, copy.deepcopy(list(self._records[zid].values())))
            except Exception as exc:  # committed already: report, resync on the next change
                self.change_errors.append(f"{name}: {exc}")
                print(f"cfemu: on_change for {name} failed: {exc}", file=sys.stderr, flush=True)


def _text_filter(field: str, op: str, value: str):
    want = value.rstrip(".").lower() if field == "name" else value

    def match(r) -> bool:
        have = r[field] or ""
        have = have.lower() if field == "name" else have
        if op == "exact":
            return have == want if r[field] is not None else False
        return {"contains": want in have, "startswith": have.startswith(want),
                "endswith": have.endswith(want)}[op]
    return match


def _paginate(items: list, query: dict, *, default: int, minimum: int, maximum: int):
    def number(key, fallback):
        try:
            return int(float(query.get(key, fallback)))
        except ValueError:
            raise ApiError(400, 1004, f"DNS Validation Error: {key} must be a number") from None
    page = max(1, number("page", 1))
    per_page = min(max(number("per_page", default), minimum), maximum)
    chunk = items[(page - 1) * per_page: page * per_page]
    return chunk, {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(items),
                   "total_pages": math.ceil(len(items) / per_page)}


# --------------------------------------------------------------------------- BIND mirror
class BindMirror:
    """on_change for CloudflareEmulator: make a BIND zone hold exactly the emulator's records.

    On each change it reads the zone with a TSIG-signed AXFR, computes the RRsets the
    records imply (TXT joined from raw or quoted content and re-split into <= 255-byte
    strings, MX from priority + content, ttl 1 -> 300) and sends one RFC 2136 UPDATE that
    replaces the RRsets that differ and deletes those no longer present.  The apex SOA and
    NS belong to the lab server and are never touched."""

    def __init__(self, server: str, port: int, keyname: str, secret: str, algorithm: str = "hmac-sha256",
                 timeout: float = 5.0):
        self.server, self.port, self.timeout = server, port, timeout
        self.keyname = dns.name.from_text(keyname)
        self.algorithm = algorithm
        self.keyring = {self.keyname: dns.tsig.Key(self.keyname, secret, algorithm)}
        self.updates_sent = 0

    def __call__(self, zone_name: str, records: list[dict]) -> None:
        origin = dns.name.from_text(zone_name)
        have, want = self._current(origin), self.rrsets_for(zone_name, records)
        msg = dns.update.UpdateMessage(origin, keyring=self.keyring, keyname=self.keyname,
                                       keyalgorithm=self.algorithm)
        for name, rtype in sorted(have.keys() - want.keys()):
            msg.delete(dns.name.from_text(name), rtype)
        for (name, rtype), (ttl, values) in sorted(want.items()):
            if have.get((name, rtype)) != (ttl, values):
                msg.replace(dns.name.from_text(name), ttl, *(_rdata(rtype, v) for v in sorted(values)))
        if not msg.update:
            return
        resp = dns.query.tcp(msg, self.server, port=self.port, timeout=self.timeout)
        if resp.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"DNS update of {zone_name} at {self.server}#{self.port}: "
                               f"{dns.rcode.to_text(resp.rcode())}")
        self.updates_sent += 1

    @staticmethod
    def rrsets_for(zone_name: str, records: list[dict]) -> dict[tuple[str, str], tuple[int, frozenset]]:
        """{(owner, type): (ttl, canonical values)} that the emulator's records imply."""
        apex = zone_name.rstrip(".").lower()
        sets: dict[tuple[str, str], tuple[int, set]] = {}
        for r in records:
            if r["name"] == apex and r["type"] == "NS":
                continue  # the apex NS set is the DNS server's own
            value = f"{r['priority']} {r['content']}" if r["type"] == "MX" else r["content"]
            ttl = AUTO_TTL_SECONDS if r["ttl"] == 1 else int(r["ttl"])
            old_ttl, values = sets.setdefault((r["name"], r["type"]), (ttl, set()))
            sets[(r["name"], r["type"])] = (min(old_ttl, ttl), values)  # one TTL per RRset
            values.add(Record.make(r["name"], r["type"], value).value)
        return {k: (ttl, frozenset(v)) for k, (ttl, v) in sets.items()}

    def _current(self, origin: dns.name.Name) -> dict:
        xfr = dns.query.xfr(self.server, origin, port=self.port, keyring=self.keyring, keyname=self.keyname,
                            keyalgorithm=self.algorithm, lifetime=self.timeout, relativize=False)
        zone = dns.zone.from_xfr(xfr, relativize=False)
        out = {}
        for name, node in zone.nodes.items():
            owner = name.to_text(omit_final_dot=True).lower()
            for rds in node.rdatasets:
                rtype = dns.rdatatype.to_text(rds.rdtype)
                if name == origin and rtype in ("SOA", "NS"):
                    continue
                if rtype == "TXT":  # join the strings' bytes (to_text would escape UTF-8 as \DDD)
                    values = frozenset(b"".join(rd.strings).decode("utf-8", "replace") for rd in rds)
                else:
                    values = frozenset(Record.make(owner, rtype, rd.to_text()).value for rd in rds)
                out[(owner, rtype)] = (rds.ttl, values)
        return out


def _rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    if rtype == "TXT":
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode() for s in split_txt(value)])
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, value)


# --------------------------------------------------------------------------- HTTP server
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # the request log is in the emulator
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(host): a reverse DNS query to the
        # system resolver, i.e. traffic to an address outside the lab.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


def serve(emulator: CloudflareEmulator, host: str, port: int) -> WSGIServer:
    """Serve the emulator over HTTP on host:port (0 = any free port) from a daemon thread.
    Stop it with ``server.shutdown(); server.server_close()``."""
    server_class = type("_Server", (_ThreadingServer,),
                        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    server = server_class((host, port), _QuietHandler)
    server.set_app(emulator.wsgi_app)
    threading.Thread(target=server.serve_forever, name="cfemu-http", daemon=True).start()
    return server


# --------------------------------------------------------------------------- daemon (lab)
PID_NAME, LOG_NAME, STATE_NAME, TOKEN_NAME = "cfemu.pid", "cfemu.log", "state.json", "token"


@dataclass
class DaemonConfig:
    state_dir: Path
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    zones: tuple[str, ...] = ()
    mirror_dns: str | None = None  # "HOST:PORT" of the BIND to mirror into
    mirror_tsig_name: str | None = None
    mirror_tsig_secret_file: Path | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_NAME

    @property
    def token_file(self) -> Path:
        return self.state_dir / TOKEN_NAME

    @property
    def base_url(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"http://{host}:{self.port}{API_PREFIX}"


def ensure_token(cfg: DaemonConfig) -> str:
    """The daemon's API token (created once: random, 40 characters like Cloudflare's, mode 0600)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.state_dir.chmod(0o700)
    if not cfg.token_file.exists():
        fd = os.open(cfg.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(30) + "\n")
    return cfg.token_file.read_text().strip()


def running_pid(cfg: DaemonConfig) -> int | None:
    """PID of the emulator daemon of cfg (pid file, verified by its command line naming our state file)."""
    from mailops.lab.system import is_ours

    try:
        pid = int((cfg.state_dir / PID_NAME).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if is_ours(pid, str(cfg.state_file)) else None


def _answers(cfg: DaemonConfig, token: str) -> bool:
    req = urllib.request.Request(cfg.base_url + "/user/tokens/verify", headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(req, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start(cfg: DaemonConfig, timeout: float = 15) -> int:
    """Start the daemon for cfg (detached, logging to state_dir/cfemu.log) and wait until it
    answers with the token; return its PID (the running one if already started)."""
    from mailops.errors import MailopsError
    from mailops.lab.system import last_lines, spawn, wait_tcp

    pid = running_pid(cfg)
    if pid:
        return pid
    token = ensure_token(cfg)
    if wait_tcp(cfg.listen, cfg.port, 0.3):
        raise MailopsError(f"cannot start the Cloudflare emulator: {cfg.listen}:{cfg.port} is already in use")
    argv = [sys.executable, "-m", "mailops.lab.cfemu", "--listen", f"{cfg.listen}:{cfg.port}",
            "--state", str(cfg.state_file), "--token-file", str(cfg.token_file)]
    for zone in cfg.zones:
        argv += ["--zone", zone]
    if cfg.mirror_dns:
        argv += ["--mirror-dns", cfg.mirror_dns, "--mirror-tsig-name", str(cfg.mirror_tsig_name),
                 "--mirror-tsig-secret-file", str(cfg.mirror_tsig_secret_file)]
    log = cfg.state_dir / LOG_NAME
    proc = spawn(argv, log)
    (cfg.state_dir / PID_NAME).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (cfg.state_dir / PID_NAME).unlink(missing_ok=True)
            raise MailopsError(f"the Cloudflare emulator exited with status {proc.returncode} ({log}): "
                               f"{last_lines(log)}")
        if _answers(cfg, token):
            return proc.pid
        time.sleep(0.2)
    stop(proc.pid, cfg)
    raise MailopsError(f"the Cloudflare emulator did not answer on {cfg.base_url} within {timeout:g}s "
                       f"({log}): {last_lines(log)}")


def stop(pid: int | None, cfg: DaemonConfig) -> None:
    """Stop the daemon of cfg (only if pid's command line names our state file)."""
    from mailops.lab.system import stop_daemon

    stop_daemon(pid, str(cfg.state_file), cfg.state_dir / PID_NAME)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mailops.lab.cfemu", description="Cloudflare API v4 emulator")
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--state", required=True, type=Path, help="JSON state file")
    p.add_argument("--token-file", required=True, type=Path, help="file holding the accepted API token")
    p.add_argument("--zone", action="append", default=[], help="zone to create if missing (repeatable)")
    p.add_argument("--mirror-dns", help="HOST:PORT of a DNS server to mirror every zone into (RFC 2136)")
    p.add_argument("--mirror-tsig-name")
    p.add_argument("--mirror-tsig-secret-file", type=Path)
    args = p.parse_args(argv)
    mirror = None
    if args.mirror_dns:
        if not (args.mirror_tsig_name and args.mirror_tsig_secret_file):
            p.error("--mirror-dns needs --mirror-tsig-name and --mirror-tsig-secret-file")
        host, port = _hostport(args.mirror_dns)
        mirror = BindMirror(host, port, args.mirror_tsig_name, args.mirror_tsig_secret_file.read_text().strip())
    emu = CloudflareEmulator(args.state, on_change=mirror)
    emu.add_token(args.token_file.read_text().strip(), write=True)
    for zone in args.zone:
        emu.add_zone(zone)
    emu.notify_all()  # BIND may have lost or gained records while we were not running
    if emu.change_errors:
        print(f"cfemu: cannot mirror into {args.mirror_dns}: {emu.change_errors[-1]}", file=sys.stderr)
        return 1
    host, port = _hostport(args.listen)
    server = serve(emu, host, port)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"cfemu: serving {API_PREFIX} on {args.listen}, zones: {', '.join(args.zone) or 'from state'}", flush=True)
    while not stopping.wait(1):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

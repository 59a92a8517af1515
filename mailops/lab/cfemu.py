"""A stateful emulator of the Cloudflare API v4 (zones and DNS records).

It is faithful enough that the official ``cloudflare`` Python SDK (v5) works
against it unchanged, in-process::

    emu = CloudflareEmulator(state_file=tmp / "cf.json")
    emu.add_token(TOKEN); emu.add_zone("news.test")
    cf = cloudflare.Cloudflare(api_token=TOKEN, base_url="http://cf.test/client/v4",
                               http_client=cloudflare.DefaultHttpxClient(
                                   transport=httpx.WSGITransport(app=emu.wsgi_app)))

or over HTTP (``cfemu_daemon.serve()``, or ``python -m mailops.lab.cfemu_daemon``, which
the lab runs on its gateway, port 8787, mirroring every change into the lab BIND through
``cfemu_mirror.BindMirror``).  What it accepts as a record is in cfemu_records.py.

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

import collections
import copy
import hashlib
import http
import json
import os
import re
import secrets
import sys
import threading
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Callable

from mailops.lab.cfemu_records import (RECORD_FIELDS, ApiError, check_conflicts, hostname, invalid, paginate, select,
                                       timestamp, validate)

API_PREFIX = "/client/v4"
DEFAULT_PORT = 8787
BATCH_LIMIT = 200          # operations per batch request on the free plan
_BEARER = re.compile(r"Bearer ([A-Za-z0-9_-]+)\Z")
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


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
        name = hostname(name)
        if name is None:
            raise ValueError("invalid zone name")
        with self._lock:
            for z in self._zones.values():
                if z["name"] == name:
                    return z["id"]
            now = timestamp()
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
        page, info = paginate(zones, query, default=20, minimum=5, maximum=50)
        return copy.deepcopy(page), info, []

    # -- records: list -----------------------------------------------------------------
    def _list_records(self, zone, query):
        page, info = paginate(select(self._records[zone["id"]].values(), query), query,
                              default=100, minimum=1, maximum=5_000_000)
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
        src = {k: current[k] for k in RECORD_FIELDS if k in current} if merge else {}
        src.update({k: v for k, v in data.items() if k in RECORD_FIELDS})
        rec = validate(zone, src, self.tag_quota)
        check_conflicts(rec, recs, current["id"] if current else None)
        now = timestamp()
        rec.update({"id": current["id"] if current else secrets.token_hex(16),
                    "created_on": current["created_on"] if current else now, "modified_on": now})
        recs[rec["id"]] = rec
        return rec

    def _batch(self, zone, data) -> dict:
        ops = {k: data.get(k) or [] for k in ("deletes", "patches", "puts", "posts")}
        if not all(isinstance(v, list) and all(isinstance(o, dict) for o in v) for v in ops.values()):
            raise ApiError(400, 6007, "Malformed JSON in request body")
        total = sum(len(v) for v in ops.values())
        if total > BATCH_LIMIT:
            raise invalid(f"A batch may hold at most {BATCH_LIMIT} operations, got {total}.")
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

"""What the Cloudflare emulator accepts: records validated as Cloudflare does (with its error
codes), the conflicts it refuses, the list filters and pagination.  Used by cfemu.py."""

from __future__ import annotations

import datetime
import ipaddress
import math
import re

from mailops.dns.records import join_txt

SUPPORTED_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "TXT")
PROXIABLE_TYPES = ("A", "AAAA", "CNAME")
HOSTNAME_TYPES = ("CNAME", "MX", "NS", "PTR")
AUTO_TTL_SECONDS = 300     # what Cloudflare serves for ttl 1 ("automatic")
RECORD_FIELDS = ("name", "type", "content", "ttl", "proxied", "priority", "comment", "tags", "settings")
LIST_CONTROLS = ("page", "per_page", "order", "direction", "match", "include_shadow_metadata", "tag_match")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


class ApiError(Exception):
    """An API failure: HTTP status plus Cloudflare's errors[{code, message}]."""

    def __init__(self, status: int, code: int, message: str, *more: tuple[int, str],
                 chain: list[dict] | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.errors = [{"code": code, "message": message}] + [{"code": c, "message": m} for c, m in more]
        if chain:
            self.errors[0]["error_chain"] = chain


def invalid(detail: str, code: int = 1004) -> ApiError:
    """Cloudflare's generic validation failure, with the detail in the error chain."""
    return ApiError(400, 1004, "DNS Validation Error", chain=[{"code": code, "message": detail}])


def timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hostname(text: str, *, allow_wildcard: bool = False) -> str | None:
    """text as a lower-case name without trailing dot, or None if it is not a valid name."""
    name = text.strip().rstrip(".").lower()
    labels = name.split(".")
    if not name or len(name) > 253:
        return None
    for i, label in enumerate(labels):
        if not (_LABEL.match(label) or (allow_wildcard and i == 0 and label == "*")):
            return None
    return name


def validate(zone: dict, src: dict, tag_quota: int) -> dict:
    """The record src describes, as Cloudflare stores it, or ApiError with Cloudflare's code."""
    zname = zone["name"]
    raw = src.get("name")
    name = hostname(raw, allow_wildcard=True) if isinstance(raw, str) else None
    if raw in ("@", zname + "."):
        name = zname
    if name is None:
        raise ApiError(400, 9000, "DNS name is invalid.")
    if name != zname and not name.endswith("." + zname):
        name = f"{name}.{zname}"  # Cloudflare treats a name outside the zone as relative
    rtype = src.get("type")
    if not isinstance(rtype, str) or rtype.upper() not in SUPPORTED_TYPES:
        raise invalid(f"record type {rtype!r} is not supported (emulated: {', '.join(SUPPORTED_TYPES)})")
    rtype = rtype.upper()
    content = src.get("content")
    if not isinstance(content, str) or not content.strip():
        raise invalid(f"Content for {rtype} record is invalid.")
    try:
        if rtype == "A":
            content = str(ipaddress.IPv4Address(content.strip()))
        elif rtype == "AAAA":
            content = str(ipaddress.IPv6Address(content.strip()))
    except ValueError:
        raise ApiError(400, 9005 if rtype == "A" else 9006,
                       f"Content for {rtype} record must be a valid IPv{4 if rtype == 'A' else 6} address.")
    if rtype in HOSTNAME_TYPES:
        host = "." if rtype == "MX" and content.strip() == "." else hostname(content)
        if host is None:
            raise ApiError(400, 9007, "Content for CNAME record is invalid.") if rtype == "CNAME" \
                else invalid(f"Content for {rtype} record is invalid.")
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
    if len(rec["tags"]) > tag_quota:
        raise invalid(f"DNS record has {len(rec['tags'])} tags, exceeding the quota of {tag_quota}.", 9300)
    if rtype == "MX":
        prio = src.get("priority")
        if isinstance(prio, bool) or not isinstance(prio, (int, float)) or not 0 <= prio <= 65535:
            raise invalid("MX records need a priority between 0 and 65535.")
        rec["priority"] = int(prio)
    return rec


def check_conflicts(rec: dict, recs: dict, self_id: str | None) -> None:
    """ApiError if rec may not stand beside the other records of its zone (self_id: the one it replaces)."""
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


def select(records, query: dict) -> list[dict]:
    """The records that match the list filters in query, in the order it asks for."""
    predicates = []
    for key, value in query.items():
        if key in LIST_CONTROLS:
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
            predicates.append(text_filter(field, op or "exact", value))
        else:  # rather than silently return unfiltered records
            raise ApiError(400, 1004, f"DNS Validation Error: filter {key!r} is not supported by the emulator")
    combine = any if query.get("match") == "any" else all
    recs = [r for r in records if not predicates or combine(p(r) for p in predicates)]
    order = query.get("order")
    if order:
        if order not in ("type", "name", "content", "ttl", "proxied"):
            raise ApiError(400, 1004, f"DNS Validation Error: invalid order {order!r}")
        recs.sort(key=lambda r: r[order], reverse=query.get("direction") == "desc")
    return recs


def text_filter(field: str, op: str, value: str):
    want = value.rstrip(".").lower() if field == "name" else value

    def match(r) -> bool:
        have = r[field] or ""
        have = have.lower() if field == "name" else have
        if op == "exact":
            return have == want if r[field] is not None else False
        return {"contains": want in have, "startswith": have.startswith(want),
                "endswith": have.endswith(want)}[op]
    return match


def paginate(items: list, query: dict, *, default: int, minimum: int, maximum: int):
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

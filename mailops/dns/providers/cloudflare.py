"""Cloudflare through the official ``cloudflare`` SDK (v5).

One zone listing for the whole run, one (paginated) record list per zone and
one batch per zone: the batch endpoint applies deletes, patches, puts and
posts in one transaction, so a zone is either fully old or fully new.  The
SDK retries 429 and 5xx with backoff and honours ``retry-after``.  Callers
list and apply zones from many threads: every request (retries included)
first takes a slot from the limiter shared by all providers of the same API
user (mailops.dns.apilimit.CLOUDFLARE_LIMITS), and once the first page of a
list gives the total, the other pages are fetched concurrently.
Ownership: records mailops owns carry the comment ``OWNER_COMMENT``.
"""

from __future__ import annotations

import hashlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import cloudflare
import httpx

from mailops.dns import apilimit
from mailops.dns.providers.base import Existing, ZoneChanges
from mailops.dns.records import Record, in_zone, normalize_name, quote_txt
from mailops.errors import MailopsError
from mailops.inventory.secrets import token_problem

OWNER_COMMENT = "managed-by=mailops"


def owner_comment(owner: str | None = None) -> str:
    """The ownership comment; ``managed-by=mailops/<id>`` for mailops_dns_owner: <id>."""
    return OWNER_COMMENT if not owner else f"{OWNER_COMMENT}/{owner}"


BATCH_LIMIT = 200  # operations per batch request on the free plan
_PER_PAGE = 5000
_MAX_PAGES = 1000  # an API that pages on past this is broken, not large (5 million records)
_PAGE_WORKERS = 8  # pages of one list fetched at once
_EXCERPT = 60  # characters of an unexpected body quoted in the error
# What mailops reads of each listed item, and the JSON types it must have.
_ZONE_FIELDS: dict[str, tuple[type, ...]] = {"id": (str,), "name": (str,)}
_RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "name": (str,), "type": (str,), "content": (str, type(None)),
    "ttl": (int, float, type(None)), "priority": (int, float, type(None)), "comment": (str, type(None))}


class _Unexpected(Exception):
    """A successful answer whose body is not shaped as the API documents."""


def _kind(value) -> str:
    return "missing or null" if value is None else f"a {type(value).__name__}"


class CloudflareProvider:
    kind = "cloudflare"
    rrset_ttl = False
    ownership = f"record comment {OWNER_COMMENT!r}"

    def __init__(self, name: str, token: str, api_base_url: str | None = None, *,
                 max_retries: int = 5, transport: httpx.BaseTransport | None = None, owner: str | None = None,
                 limiter: apilimit.RateLimiter | None = None):
        self.name = name
        problem = token_problem(token)
        if problem:  # httpx would fail encoding the header with a traceback, or the API refuse it
            raise MailopsError(f"cloudflare provider {name!r}: the API token {problem}; put the token exactly as "
                               f"Cloudflare shows it in api_token of mailops_dns_providers.{name}")
        self.comment = owner_comment(owner)
        self.requests = 0
        self._count_lock = threading.Lock()
        # The limit is per API user: every provider of the same token in this process shares one.
        self.limiter = limiter or apilimit.shared(
            ("cloudflare", api_base_url or "", hashlib.sha256(token.encode()).hexdigest()), apilimit.CLOUDFLARE_LIMITS)

        def count(_request: httpx.Request) -> None:
            self.limiter.acquire()
            with self._count_lock:
                self.requests += 1

        def keep(response: httpx.Response) -> None:
            response.read()  # cached: the SDK reads the same bytes; error messages quote them
            self._local.last = response

        self._token = token
        self._local = threading.local()  # the last response of each thread, for its error message
        http_client = cloudflare.DefaultHttpxClient(transport=transport,
                                                    event_hooks={"request": [count], "response": [keep]})
        self.client = cloudflare.Cloudflare(api_token=token, base_url=api_base_url or None,
                                            max_retries=max_retries, http_client=http_client)
        # A stray CLOUDFLARE_EMAIL/CLOUDFLARE_API_KEY in the environment would silently replace the token.
        self.client.api_key = self.client.api_email = self.client.user_service_key = None
        self._zones: dict[str, str] | None = None

    @property
    def _last(self) -> httpx.Response | None:
        return getattr(self._local, "last", None)

    def _seen(self, response: httpx.Response | None) -> str:
        """What came back, short and without the token: status, content type, the body's start."""
        if response is None:
            return "no response"
        ctype = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
        try:
            text = " ".join(response.content[:200].decode("utf-8", "replace").split())
        except httpx.ResponseNotRead:
            text = ""
        if self._token:
            text = text.replace(self._token, "***")
        text = text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else "")
        return f"HTTP {response.status_code} {ctype} " + (repr(text) if text else "with an empty body")

    @staticmethod
    def _request(response: httpx.Response | None, exc: Exception | None = None) -> str:
        request = getattr(exc, "request", None) if response is None else response.request
        return f"{request.method} {request.url.path}" if request is not None else "no request sent"

    def _error(self, what: str, exc: Exception) -> MailopsError:
        status = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        codes = ""
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            errs = body.get("errors") or []
            codes = ", ".join(f"{e.get('code')} {e.get('message')}" for e in errs if isinstance(e, dict))
        if isinstance(exc, cloudflare.AuthenticationError) or (status in (400, 401, 403) and "10000" in codes
                                                                and not isinstance(exc, cloudflare.PermissionDeniedError)):
            fix = "the API token was refused; put a valid token in the provider's api_token"
        elif isinstance(exc, cloudflare.PermissionDeniedError):
            fix = "the API token lacks permission; give it Zone:Read and DNS:Edit on the zone"
        elif isinstance(exc, cloudflare.RateLimitError):
            fix = "rate limited even after retries; wait a few minutes and run again"
        elif isinstance(exc, cloudflare.APIConnectionError):
            fix = "cannot reach the API; check api_base_url and the network"
        elif isinstance(exc, cloudflare.InternalServerError):
            fix = "Cloudflare kept failing after retries; run again later"
        elif codes:
            fix = "the API refused the request: fix what its error codes say"
        else:
            fix = f"the API refused the request without an error code (it answered {self._seen(response)})"
        detail = f"HTTP {status}" if status else type(exc).__name__
        if codes:
            detail += f": {codes}"
        return MailopsError(f"cloudflare provider {self.name!r}: {what} failed "
                            f"({self._request(response, exc)}: {detail}); {fix}")

    def _bad_answer(self, what: str, why: str, exc: Exception | None = None) -> MailopsError:
        last = getattr(exc, "mailops_response", None) or self._last
        return MailopsError(f"cloudflare provider {self.name!r}: {what} ({self._request(last)}): the API "
                            f"answered {self._seen(last)}, {why}; check that api_base_url "
                            f"({self.client.base_url}) is Cloudflare's API v4")

    def _call(self, what: str, run):
        """Run SDK calls; API errors and answers that are not Cloudflare's JSON become one MailopsError."""
        try:
            return run()
        except cloudflare.APIError as exc:
            raise self._error(what, exc) from None
        except _Unexpected as exc:
            raise self._bad_answer(what, str(exc), exc) from None
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            # The SDK builds its models without validating them: a body that is not the documented
            # JSON (HTML, null) breaks inside it, with no useful message of its own.
            raise self._bad_answer(what, "not Cloudflare's JSON", exc) from None

    def _zone_ids(self) -> dict[str, str]:
        if self._zones is None:
            zones = self._call("listing zones", lambda: self._all(
                lambda page: self.client.zones.list(per_page=50, page=page), _ZONE_FIELDS))
            self._zones = {normalize_name(z.name): z.id for z in zones}
        return self._zones

    @staticmethod
    def _checked(page, fields: dict[str, tuple[type, ...]]) -> tuple[list, int | None]:
        """A page's items, each checked to have ``fields`` of those types, and its total_count."""
        result = page.result
        if not isinstance(result, list):
            raise _Unexpected(f"whose 'result' is {_kind(result)}, not a list")
        for item in result:
            for name, types in fields.items():
                value = getattr(item, name, None)
                if not isinstance(value, types) or isinstance(value, bool):
                    raise _Unexpected(f"with an item whose {name!r} is {_kind(value)}")
        total = getattr(page.result_info, "total_count", None)
        if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
            raise _Unexpected(f"whose result_info.total_count is {_kind(total)}, not a number")
        return result, total

    def _all(self, fetch, fields: dict[str, tuple[type, ...]]) -> list:
        """Every item of a paginated list (``fetch(page_number)`` gets one page): stops at total_count
        (saves the SDK's request for an empty page past the end); when the first page gives the
        total, the remaining pages are fetched concurrently (the limiter paces them)."""
        page = fetch(1)
        items, total = self._checked(page, fields)
        items = list(items)
        if not items or (total is not None and len(items) >= total):
            return items
        per_page = len(items)
        if total is not None:
            pages = math.ceil(total / per_page)
            if pages > _MAX_PAGES:
                raise _Unexpected(f"announcing {total} items in pages of {per_page}, more than {_MAX_PAGES} pages")
            def one(n: int):
                try:
                    return self._checked(fetch(n), fields)
                except Exception as exc:  # the error message quotes this thread's response, not the caller's
                    exc.mailops_response = self._last
                    raise
            with ThreadPoolExecutor(min(_PAGE_WORKERS, pages - 1)) as pool:
                for result, _ in pool.map(one, range(2, pages + 1)):
                    items += result
            if len(items) != total:  # changed while being read, or pages not as announced: never plan on that
                raise _Unexpected(f"announcing {total} items but paging out {len(items)} (run again if the zones "
                                  "were being changed)")
            return items
        # No total: page on one by one until an empty page (the SDK's own way).
        for _ in range(_MAX_PAGES - 1):
            page = page.get_next_page()
            result, total = self._checked(page, fields)
            items += result
            if not result or (total is not None and len(items) >= total):
                return items
        raise _Unexpected(f"still paging after {_MAX_PAGES} pages")

    def zone_for(self, name: str) -> str | None:
        matches = [z for z in self._zone_ids() if in_zone(name, z)]
        return max(matches, key=len) if matches else None

    def _zone_id(self, zone: str) -> str:
        try:
            return self._zone_ids()[normalize_name(zone)]
        except KeyError:
            raise MailopsError(f"cloudflare provider {self.name!r}: no zone {zone} is visible to the API token; "
                               "add the zone to the account or give the token access to it") from None

    def nameservers(self, zone: str) -> list[str]:
        return []

    @staticmethod
    def _record(obj) -> Record:
        value = obj.content or ""
        if obj.type == "MX":
            value = f"{int(obj.priority or 0)} {value}"
        return Record.make(obj.name, obj.type, value, int(obj.ttl or 1))

    def list_records(self, zone: str) -> list[Existing]:
        zone_id = self._zone_id(zone)

        def run() -> list[Existing]:
            out: list[Existing] = []
            for obj in self._all(lambda page: self.client.dns.records.list(
                    zone_id=zone_id, per_page=_PER_PAGE, page=page), _RECORD_FIELDS):
                comment = obj.comment or ""
                other = comment if comment.startswith(OWNER_COMMENT) and comment != self.comment else None
                out.append(Existing(self._record(obj), comment == self.comment, obj.id, other))
            return out
        return self._call(f"listing records of {zone}", run)

    def _body(self, rec: Record) -> dict:
        body = {"name": rec.name, "type": rec.type, "ttl": rec.ttl, "comment": self.comment}
        if rec.type == "MX":
            pref, _, exchange = rec.value.partition(" ")
            body.update(priority=int(pref), content=exchange.rstrip(".") or ".")
        elif rec.type == "TXT":
            body["content"] = quote_txt(rec.value)  # explicit <= 255-byte strings
        elif rec.type in ("CNAME", "PTR", "NS"):
            body["content"] = rec.value.rstrip(".")
        else:
            body["content"] = rec.value
        if rec.type in ("A", "AAAA", "CNAME"):
            body["proxied"] = False  # mail names must resolve to the server itself
        return body

    def apply(self, zone: str, changes: ZoneChanges) -> None:
        zone_id = self._zone_id(zone)
        posts = [self._body(r) for r in changes.creates]
        patches = [dict(self._body(n), id=o.ref) for o, n in changes.updates]
        deletes = [{"id": o.ref} for o in changes.deletes]
        if len(posts) + len(patches) + len(deletes) <= BATCH_LIMIT:
            batches = [(deletes, patches, posts)]
        else:
            # Too big for one transaction: creates (addresses first) and updates before deletes.
            batches = [([], [], posts[i:i + BATCH_LIMIT]) for i in range(0, len(posts), BATCH_LIMIT)]
            batches += [([], patches[i:i + BATCH_LIMIT], []) for i in range(0, len(patches), BATCH_LIMIT)]
            batches += [(deletes[i:i + BATCH_LIMIT], [], []) for i in range(0, len(deletes), BATCH_LIMIT)]
        for dels, pats, pos in batches:
            kwargs = {k: v for k, v in (("deletes", dels), ("patches", pats), ("posts", pos)) if v}
            try:
                self.client.dns.records.batch(zone_id=zone_id, **kwargs)
            except cloudflare.APIError as exc:
                raise self._error(f"applying the changes to {zone}", exc) from None
            except (AttributeError, TypeError, ValueError, KeyError):
                raise self._bad_answer(f"applying the changes to {zone}", "not Cloudflare's JSON (the changes "
                                       "may or may not be applied: run mailops dns plan to see)") from None

"""Cloudflare provider against an API that answers with the wrong body.

A tiny HTTP server on 127.0.0.1 serves canned answers to the official
``cloudflare`` SDK, as a misconfigured api_base_url (a web server, a proxy's
error page) or a broken API would: each must become one MailopsError line that
names the provider, the request and what came back, never a traceback, a hang
or a misleading "no zone", and never the token."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailops.dns.providers.cloudflare import CloudflareProvider
from mailops.errors import MailopsError

TOKEN = "tok-SECRET-4711"


def zones_page(result, **info) -> bytes:
    return json.dumps({"success": True, "errors": [], "messages": [], "result": result,
                       "result_info": {"page": 1, "per_page": 50, "count": 1, "total_count": 1, **info}}).encode()


GOOD_ZONES = zones_page([{"id": "z1", "name": "shop.test"}])


class Api:
    """Serves ``answers[path] = (status, content type, body)``; echoes the token when asked to."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                api.requests.append(f"{self.command} {path}")
                status, ctype, body = api.answers.get(path, (404, "application/json", b'{"success": false}'))
                body = body.replace(b"{AUTH}", self.headers.get("Authorization", "").encode())
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}/client/v4"

    def provider(self) -> CloudflareProvider:
        return CloudflareProvider("cf-main", TOKEN, self.base, max_retries=0)


@pytest.fixture
def api():
    a = Api()
    yield a
    a.server.shutdown()
    a.server.server_close()


def one_line_error(run) -> str:
    with pytest.raises(MailopsError) as err:
        run()
    text = str(err.value)
    assert "\n" not in text and TOKEN not in text, text
    assert "cloudflare provider 'cf-main'" in text, text
    return text


@pytest.mark.parametrize("ctype, body, says", [
    ("text/html", b"<html><body>Welcome to nginx!</body></html>", "text/html '<html><body>Welcome to nginx!"),
    ("application/json", b"null", "application/json 'null', not Cloudflare's JSON"),
    ("application/json", zones_page("shop.test"), "whose 'result' is a str, not a list"),
    ("application/json", zones_page([{"id": ["z1"], "name": "shop.test"}]), "an item whose 'id' is a list"),
    ("application/json", zones_page([{"id": "z1", "name": 5}]), "an item whose 'name' is a int"),
    ("application/json", zones_page([{"id": "z1", "name": "shop.test"}], total_count="many"),
     "result_info.total_count is a str, not a number"),
])
def test_a_200_with_the_wrong_body_is_one_line_naming_the_request_and_the_body(api, ctype, body, says):
    api.answers["/client/v4/zones"] = (200, ctype, body)
    text = one_line_error(lambda: api.provider().zone_for("mta1.shop.test"))
    assert "listing zones (GET /client/v4/zones): the API answered HTTP 200" in text, text
    assert says in text and "api_base_url" in text, text
    assert "no zone" not in text  # not the misleading "has no zone holding ..."


def test_wrong_record_types_name_the_zone_listing(api):
    api.answers["/client/v4/zones"] = (200, "application/json", GOOD_ZONES)
    api.answers["/client/v4/zones/z1/dns_records"] = (200, "application/json", zones_page(
        [{"id": "r1", "name": "shop.test", "type": "TXT", "content": "v=spf1 -all", "ttl": [300]}]))
    text = one_line_error(lambda: api.provider().list_records("shop.test"))
    assert "listing records of shop.test (GET /client/v4/zones/z1/dns_records)" in text, text
    assert "an item whose 'ttl' is a list" in text, text


def test_an_api_that_never_stops_paging_is_an_error_not_a_hang(api):
    # a full page, no total_count: the SDK would ask for the next page for ever
    api.answers["/client/v4/zones"] = (200, "application/json", zones_page(
        [{"id": "z1", "name": "shop.test"}], total_count=None))
    text = one_line_error(lambda: api.provider().zone_for("shop.test"))
    assert "still paging after 1000 pages" in text, text


def test_a_body_that_echoes_the_token_is_quoted_without_it(api):
    api.answers["/client/v4/zones"] = (200, "text/plain", b"you sent {AUTH}")
    text = one_line_error(lambda: api.provider().zone_for("shop.test"))
    assert "you sent Bearer ***" in text, text


def test_http_400_without_error_codes_says_what_came_back(api):
    api.answers["/client/v4/zones"] = (400, "text/html", b"<h1>Bad Request</h1>")
    text = one_line_error(lambda: api.provider().zone_for("shop.test"))
    assert "above" not in text, text
    assert "(GET /client/v4/zones: HTTP 400)" in text and "without an error code" in text, text
    assert "text/html '<h1>Bad Request</h1>'" in text, text


def test_http_400_with_error_codes_names_them(api):
    api.answers["/client/v4/zones"] = (400, "application/json", json.dumps(
        {"success": False, "errors": [{"code": 1004, "message": "DNS Validation Error"}]}).encode())
    text = one_line_error(lambda: api.provider().zone_for("shop.test"))
    assert "HTTP 400: 1004 DNS Validation Error" in text and "above" not in text, text


def test_a_garbled_batch_answer_says_the_changes_may_be_applied(api):
    from mailops.dns.providers.base import ZoneChanges
    from mailops.dns.records import Record
    api.answers["/client/v4/zones"] = (200, "application/json", GOOD_ZONES)
    api.answers["/client/v4/zones/z1/dns_records/batch"] = (200, "text/html", b"<html>oops</html>")
    changes = ZoneChanges(creates=[Record.make("shop.test", "TXT", "v=spf1 -all", 300)], updates=[], deletes=[])
    text = one_line_error(lambda: api.provider().apply("shop.test", changes))
    assert "applying the changes to shop.test (POST /client/v4/zones/z1/dns_records/batch)" in text, text
    assert "may or may not be applied" in text, text


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
ITEM = st.fixed_dictionaries({}, optional={k: JSON for k in ("id", "name", "type", "content", "ttl", "priority",
                                                             "comment")})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.lists(ITEM, max_size=3).map(lambda items: zones_page(items, total_count=len(items)))))
def test_any_answer_is_a_result_or_the_projects_own_error(body):
    """Random bytes, random JSON and random items: the provider lists records or raises MailopsError."""
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/zones"):
            return httpx.Response(200, content=GOOD_ZONES, headers={"content-type": "application/json"})
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    provider = CloudflareProvider("cf-main", TOKEN, "http://127.0.0.1:9/client/v4", max_retries=0,
                                  transport=httpx.MockTransport(answer))
    try:
        provider.list_records("shop.test")
    except MailopsError as exc:
        assert "\n" not in str(exc) and TOKEN not in str(exc)

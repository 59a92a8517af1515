"""The Cloudflare API emulator (mailops.lab.cfemu), exercised through the official
`cloudflare` SDK, unchanged, over an in-process WSGI transport.

The last test talks to the emulator daemon that `mailops lab up` runs on the lab
gateway and resolves what it published through the lab BIND."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import stat
import time

import cloudflare
import dns.resolver
import httpx
import pytest

from mailops.lab import core
from mailops.lab import cfemu_daemon
from mailops.lab.cfemu import CloudflareEmulator
from mailops.lab.cfemu_mirror import BindMirror
from mailops.lab.system import pid_alive

TOKEN = "emulatorTestToken_0123456789abcdefghijkl"  # 40 characters like a real token
READ_ONLY_TOKEN = "readOnlyTestToken_0123456789abcdefghijkl"


@pytest.fixture(autouse=True)
def _bearer_auth_only(monkeypatch):
    # A stray CLOUDFLARE_EMAIL / CLOUDFLARE_API_KEY would make the SDK drop the bearer token.
    for var in ("CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY", "CLOUDFLARE_API_USER_SERVICE_KEY", "CLOUDFLARE_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def emu(tmp_path):
    changes: list[tuple[str, list[dict]]] = []
    e = CloudflareEmulator(tmp_path / "cloudflare.json", on_change=lambda z, recs: changes.append((z, recs)))
    e.add_token(TOKEN)
    e.add_token(READ_ONLY_TOKEN, write=False)
    e.zone_id = e.add_zone("news.test")
    e.changes = changes
    return e


def sdk(emu, token=TOKEN, **kw) -> cloudflare.Cloudflare:
    transport = httpx.WSGITransport(app=emu.wsgi_app)
    return cloudflare.Cloudflare(api_token=token, base_url="http://cf.test/client/v4",
                                 http_client=cloudflare.DefaultHttpxClient(transport=transport), **kw)


def codes(exc: cloudflare.APIStatusError) -> list[int]:
    return [e["code"] for e in exc.body["errors"]]


def txt(cf, zone_id, name, content, **kw):
    return cf.dns.records.create(zone_id=zone_id, name=name, type="TXT", content=content, ttl=kw.pop("ttl", 1), **kw)


# --------------------------------------------------------------------------- zones


def test_zones_list_finds_a_zone_by_name_and_pages_until_an_empty_page(emu):
    for i in range(11):
        emu.add_zone(f"z{i:02d}.test")
    cf = sdk(emu)
    assert [z.id for z in cf.zones.list(name="news.test")] == [emu.zone_id]
    assert cf.zones.list(name="absent.test").result == []
    emu.reset_stats()
    names = [z.name for z in cf.zones.list(per_page=5)]
    assert sorted(names) == sorted({*names}) and len(names) == 12
    # pages 1-3 hold 5+5+2 zones; the SDK stops only after an empty page 4
    assert emu.request_count("GET", "/zones") == 4
    assert cf.zones.get(zone_id=emu.zone_id).name == "news.test"


# --------------------------------------------------------------------------- records


def test_record_create_get_put_patch_delete(emu):
    cf = sdk(emu)
    z = emu.zone_id
    rec = txt(cf, z, "_dmarc", '"v=DMARC1; p=none"', comment="mailops")
    assert rec.name == "_dmarc.news.test" and rec.zone_name == "news.test"
    assert len(rec.id) == 32 and int(rec.id, 16) >= 0
    assert rec.content == '"v=DMARC1; p=none"'  # returned exactly as written (quoted)
    assert (rec.ttl, rec.proxied, rec.comment) == (1, False, "mailops")
    assert cf.dns.records.get(rec.id, zone_id=z).content == rec.content

    put = cf.dns.records.update(rec.id, zone_id=z, name="_dmarc.news.test", type="TXT",
                                content="v=DMARC1; p=reject", ttl=300)
    assert (put.id, put.content, put.ttl) == (rec.id, "v=DMARC1; p=reject", 300)
    assert put.comment is None  # PUT replaces the whole record

    cf.dns.records.edit(rec.id, zone_id=z, name="_dmarc", type="TXT", ttl=300, comment="owned")
    patched = cf.dns.records.get(rec.id, zone_id=z)
    assert (patched.content, patched.comment) == ("v=DMARC1; p=reject", "owned")  # PATCH merges
    assert patched.created_on == rec.created_on and patched.modified_on > rec.modified_on

    assert cf.dns.records.delete(rec.id, zone_id=z).id == rec.id
    with pytest.raises(cloudflare.NotFoundError) as err:
        cf.dns.records.get(rec.id, zone_id=z)
    assert codes(err.value) == [81044]
    assert emu.records("news.test") == []


def test_mx_keeps_priority_apart_from_the_exchange_and_names_resolve_against_the_zone(emu):
    cf = sdk(emu)
    mx = cf.dns.records.create(zone_id=emu.zone_id, name="@", type="MX", content="MX1.News.Test.",
                               priority=10, ttl=3600)
    assert (mx.name, mx.content, mx.priority) == ("news.test", "mx1.news.test", 10)
    a = cf.dns.records.create(zone_id=emu.zone_id, name="MX1.news.test.", type="A", content="198.51.100.11", ttl=1)
    assert a.name == "mx1.news.test" and a.proxiable and not a.proxied


def test_list_filters_by_exact_name_type_comment_and_match_any(emu):
    cf = sdk(emu)
    z = emu.zone_id
    spf = txt(cf, z, "@", "v=spf1 -all", comment="mailops")
    dmarc = txt(cf, z, "_dmarc", "v=DMARC1; p=none", comment="mailops")
    web = cf.dns.records.create(zone_id=z, name="www", type="A", content="198.51.100.80", ttl=1)
    other = txt(cf, z, "www", "google-site-verification=x")

    def ids(**filters):
        return {r.id for r in cf.dns.records.list(zone_id=z, **filters)}

    assert ids(name={"exact": "news.test"}, type="TXT") == {spf.id}
    assert ids(name={"exact": "www.news.test"}) == {web.id, other.id}
    assert ids(name={"endswith": ".news.test"}, type="TXT") == {dmarc.id, other.id}
    assert ids(comment={"exact": "mailops"}) == {spf.id, dmarc.id}
    # any non-empty value: the SDK leaves out a parameter whose value is ""
    assert ids(comment={"absent": "true"}) == {web.id, other.id}
    assert ids(comment={"present": "true"}) == {spf.id, dmarc.id}
    assert ids(content={"contains": "DMARC1"}) == {dmarc.id}
    assert ids(type="A", comment={"exact": "mailops"}, match="any") == {web.id, spf.id, dmarc.id}
    assert [r.name for r in cf.dns.records.list(zone_id=z, order="name", direction="desc")][0] == "www.news.test"
    with pytest.raises(cloudflare.BadRequestError):  # an unsupported filter must not be ignored silently
        cf.dns.records.list(zone_id=z, tag={"present": "owner"})


def test_sdk_iterator_returns_each_of_250_records_once(emu):
    cf = sdk(emu)
    posts = [{"name": f"r{i:03d}", "type": "A", "content": f"198.51.100.{i % 250 + 1}", "ttl": 1}
             for i in range(250)]
    cf.dns.records.batch(zone_id=emu.zone_id, posts=posts[:200])
    cf.dns.records.batch(zone_id=emu.zone_id, posts=posts[200:])
    emu.reset_stats()
    seen = [r.id for r in cf.dns.records.list(zone_id=emu.zone_id, per_page=100)]
    assert len(seen) == 250 and len(set(seen)) == 250
    assert emu.request_count("GET", "/dns_records") == 4  # 100 + 100 + 50, then the empty page


# --------------------------------------------------------------------------- batch


def test_batch_applies_deletes_then_patches_then_puts_then_posts(emu):
    cf = sdk(emu)
    z = emu.zone_id
    old = txt(cf, z, "_dmarc", "v=DMARC1; p=none")
    web = cf.dns.records.create(zone_id=z, name="www", type="A", content="198.51.100.80", ttl=1)
    result = cf.dns.records.batch(
        zone_id=z,
        # posted before the delete, this would be an identical record (81058)
        posts=[{"name": "_dmarc", "type": "TXT", "content": "v=DMARC1; p=none", "ttl": 1}],
        # the put runs after the patch, so its content wins
        puts=[{"id": web.id, "name": "www", "type": "A", "content": "198.51.100.82", "ttl": 60}],
        patches=[{"id": web.id, "name": "www", "type": "A", "content": "198.51.100.81", "ttl": 1}],
        deletes=[{"id": old.id}],
    )
    assert [r.id for r in result.deletes] == [old.id]
    assert [r.content for r in result.patches] == ["198.51.100.81"]
    assert [(r.content, r.ttl) for r in result.puts] == [("198.51.100.82", 60)]
    assert result.posts[0].id != old.id
    assert {(r["name"], r["content"]) for r in emu.records("news.test")} == {
        ("_dmarc.news.test", "v=DMARC1; p=none"), ("www.news.test", "198.51.100.82")}
    assert len(emu.changes) == 3  # two creates and ONE notification for the whole batch


def test_a_failing_operation_leaves_the_zone_as_it_was(emu, tmp_path):
    cf = sdk(emu, max_retries=0)
    z = emu.zone_id
    keep = txt(cf, z, "@", "v=spf1 -all")
    before, file_before, notified = emu.records("news.test"), (tmp_path / "cloudflare.json").read_text(), \
        len(emu.changes)
    with pytest.raises(cloudflare.BadRequestError) as err:  # the last post duplicates `keep`
        cf.dns.records.batch(zone_id=z, deletes=[{"id": keep.id}],
                             posts=[{"name": "x", "type": "TXT", "content": "a", "ttl": 1},
                                    {"name": "@", "type": "TXT", "content": "1", "ttl": 1},
                                    {"name": "@", "type": "TXT", "content": '"1"', "ttl": 1}])
    assert codes(err.value) == [81058]
    emu.fail_batch_after(2)
    with pytest.raises(cloudflare.InternalServerError):
        cf.dns.records.batch(zone_id=z, deletes=[{"id": keep.id}],
                             posts=[{"name": f"n{i}", "type": "TXT", "content": "a", "ttl": 1} for i in range(3)])
    assert emu.records("news.test") == before
    assert (tmp_path / "cloudflare.json").read_text() == file_before
    assert len(emu.changes) == notified


def test_batch_rolled_back_midway_is_applied_once_by_the_sdk_retry(emu):
    cf = sdk(emu)  # default: two retries on 5xx
    emu.fail_batch_after(1)
    cf.dns.records.batch(zone_id=emu.zone_id, posts=[{"name": f"n{i}", "type": "TXT", "content": "a", "ttl": 1}
                                                      for i in range(3)])
    assert sorted(r["name"] for r in emu.records("news.test")) == ["n0.news.test", "n1.news.test", "n2.news.test"]
    assert emu.request_count("POST", "/batch") == 2


def test_batch_over_200_operations_is_refused(emu):
    cf = sdk(emu)
    with pytest.raises(cloudflare.BadRequestError):
        cf.dns.records.batch(zone_id=emu.zone_id, posts=[{"name": f"n{i}", "type": "TXT", "content": "a", "ttl": 1}
                                                          for i in range(201)])
    assert emu.records("news.test") == []


# --------------------------------------------------------------------------- validation and conflicts


def test_identical_record_is_a_400_with_code_81058_also_when_quoted_differently(emu):
    cf = sdk(emu)
    txt(cf, emu.zone_id, "@", "v=spf1 -all")
    for content in ("v=spf1 -all", '"v=spf1 " "-all"'):
        with pytest.raises(cloudflare.BadRequestError) as err:
            txt(cf, emu.zone_id, "news.test", content)
        assert err.value.status_code == 400 and codes(err.value) == [81058]
    txt(cf, emu.zone_id, "@", "v=spf1 ~all")  # another value at the same name is fine


def test_cname_cannot_share_a_name_with_other_records(emu):
    cf = sdk(emu)
    cf.dns.records.create(zone_id=emu.zone_id, name="www", type="A", content="198.51.100.80", ttl=1)
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.dns.records.create(zone_id=emu.zone_id, name="www", type="CNAME", content="web.example", ttl=1)
    assert codes(err.value) == [81053]
    cf.dns.records.create(zone_id=emu.zone_id, name="shop", type="CNAME", content="web.example", ttl=1)
    with pytest.raises(cloudflare.BadRequestError) as err:
        txt(cf, emu.zone_id, "shop", "hello")
    assert codes(err.value) == [81054]


@pytest.mark.parametrize("fields, code", [
    ({"name": "a", "type": "A", "content": "198.51.100.300", "ttl": 1}, 9005),
    ({"name": "a", "type": "AAAA", "content": "198.51.100.3", "ttl": 1}, 9006),
    ({"name": "a", "type": "CNAME", "content": "not a host", "ttl": 1}, 9007),
    ({"name": "a", "type": "TXT", "content": "x", "ttl": 30}, 9021),
    ({"name": "a", "type": "TXT", "content": "x", "ttl": 90000}, 9021),
    ({"name": "a", "type": "TXT", "content": "x", "ttl": 1, "proxied": True}, 9004),
    ({"name": "a b", "type": "TXT", "content": "x", "ttl": 1}, 9000),
    ({"name": "a", "type": "MX", "content": "mx.news.test", "ttl": 1}, 1004),  # no priority
    ({"name": "a", "type": "TXT", "content": "x", "ttl": 1, "tags": ["owner:mailops"]}, 1004),  # free plan
])
def test_invalid_records_are_refused_with_cloudflares_codes(emu, fields, code):
    cf = sdk(emu)
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.dns.records.create(zone_id=emu.zone_id, **fields)
    assert codes(err.value) == [code]
    assert emu.records("news.test") == []


def test_empty_body_fails_on_the_name_first_like_cloudflare(emu):
    with httpx.Client(transport=httpx.WSGITransport(app=emu.wsgi_app), base_url="http://cf.test") as http:
        resp = http.post(f"/client/v4/zones/{emu.zone_id}/dns_records", json={},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 400
        assert resp.json() == {"success": False, "errors": [{"code": 9000, "message": "DNS name is invalid."}],
                               "messages": [], "result": None}
        assert http.get("/client/v4/nowhere", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_unknown_zone_and_record_are_404(emu):
    cf = sdk(emu)
    with pytest.raises(cloudflare.NotFoundError) as err:
        cf.dns.records.list(zone_id="0" * 32).result
    assert 7003 in codes(err.value)
    with pytest.raises(cloudflare.NotFoundError) as err:
        cf.dns.records.delete("f" * 32, zone_id=emu.zone_id)
    assert codes(err.value) == [81044]


# --------------------------------------------------------------------------- authentication


def test_unknown_token_is_an_authentication_error_and_a_malformed_one_a_bad_request(emu):
    with pytest.raises(cloudflare.AuthenticationError) as err:
        sdk(emu, token="x" * 40).zones.list().result
    assert err.value.status_code == 401 and codes(err.value) == [1000]
    with pytest.raises(cloudflare.BadRequestError) as err:
        sdk(emu, token="has spaces in it").zones.list().result
    assert codes(err.value) == [6003]


def test_read_only_token_reads_but_cannot_write(emu):
    txt(sdk(emu), emu.zone_id, "@", "v=spf1 -all")
    ro = sdk(emu, token=READ_ONLY_TOKEN)
    assert [r.content for r in ro.dns.records.list(zone_id=emu.zone_id)] == ["v=spf1 -all"]
    with pytest.raises(cloudflare.PermissionDeniedError) as err:
        txt(ro, emu.zone_id, "_dmarc", "v=DMARC1; p=none")
    assert err.value.status_code == 403 and codes(err.value) == [10000]
    with pytest.raises(cloudflare.PermissionDeniedError):
        ro.dns.records.batch(zone_id=emu.zone_id, deletes=[{"id": emu.records("news.test")[0]["id"]}])
    assert len(emu.records("news.test")) == 1


# --------------------------------------------------------------------------- faults


def test_429_with_retry_after_is_retried_by_the_sdk(emu):
    emu.inject_fault(429, count=2, retry_after=0.05, methods={"POST"})
    started = time.monotonic()
    rec = txt(sdk(emu, max_retries=2), emu.zone_id, "@", "v=spf1 -all")
    assert time.monotonic() - started >= 0.1  # it waited as told, twice
    assert emu.request_count("POST") == 3
    assert [r["id"] for r in emu.records("news.test")] == [rec.id]  # the failed attempts changed nothing

    emu.inject_fault(429, retry_after=7, path_contains="/dns_records")
    with pytest.raises(cloudflare.RateLimitError) as err:
        sdk(emu, max_retries=0).dns.records.list(zone_id=emu.zone_id).result
    assert err.value.response.headers["retry-after"] == "7" and codes(err.value) == [10100]


def test_500_is_retried_by_the_sdk(emu):
    emu.inject_fault(500, count=1, methods={"GET"})
    assert [z.name for z in sdk(emu).zones.list(name="news.test")] == ["news.test"]
    assert emu.request_log[0]["status"] == 500 and emu.request_log[1]["status"] == 200


def test_delay_slows_responses(emu):
    emu.delay(0.2)
    started = time.monotonic()
    sdk(emu).zones.get(zone_id=emu.zone_id)
    assert time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- state and mirror input


def test_state_file_survives_a_new_emulator_and_is_private(emu, tmp_path):
    rec = txt(sdk(emu), emu.zone_id, "@", '"v=spf1 -all"')
    path = tmp_path / "cloudflare.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CloudflareEmulator(path)
    again.add_token(TOKEN)
    assert again.add_zone("news.test") == emu.zone_id
    assert sdk(again).dns.records.get(rec.id, zone_id=emu.zone_id).content == '"v=spf1 -all"'
    assert json.loads(path.read_text())["records"][emu.zone_id][0]["id"] == rec.id


def test_on_change_receives_the_whole_zone_after_each_commit(emu):
    cf = sdk(emu)
    a = txt(cf, emu.zone_id, "@", "v=spf1 -all")
    b = txt(cf, emu.zone_id, "_dmarc", "v=DMARC1; p=none")
    cf.dns.records.delete(a.id, zone_id=emu.zone_id)
    assert [(z, [r["id"] for r in recs]) for z, recs in emu.changes] == [
        ("news.test", [a.id]), ("news.test", [a.id, b.id]), ("news.test", [b.id])]


def test_mirror_computes_rrsets_as_dns_serves_them():
    dkim = "v=DKIM1; k=rsa; p=" + "A" * 400
    recs = [{"name": "news.test", "type": "TXT", "content": '"v=spf1 " "-all"', "ttl": 1},
            {"name": "s1._domainkey.news.test", "type": "TXT", "content": dkim, "ttl": 3600},
            {"name": "news.test", "type": "MX", "content": "mx1.news.test", "priority": 10, "ttl": 300},
            {"name": "news.test", "type": "MX", "content": "mx2.news.test", "priority": 20, "ttl": 300},
            {"name": "news.test", "type": "NS", "content": "ns.elsewhere.example", "ttl": 300}]
    assert BindMirror.rrsets_for("news.test", recs) == {
        ("news.test", "TXT"): (300, frozenset({"v=spf1 -all"})),
        ("s1._domainkey.news.test", "TXT"): (3600, frozenset({dkim})),
        ("news.test", "MX"): (300, frozenset({"10 mx1.news.test.", "20 mx2.news.test."})),
    }  # the apex NS set stays the DNS server's own


# --------------------------------------------------------------------------- the daemon


def test_daemon_serves_the_sdk_over_http_and_stops_on_sigterm(tmp_path):
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dcfg = cfemu_daemon.DaemonConfig(state_dir=tmp_path / "cf", listen="127.0.0.1", port=port, zones=("news.test",))
    pid = cfemu_daemon.start(dcfg)
    try:
        assert cfemu_daemon.start(dcfg) == pid == cfemu_daemon.running_pid(dcfg)  # idempotent
        assert stat.S_IMODE(dcfg.token_file.stat().st_mode) == 0o600
        cf = cloudflare.Cloudflare(api_token=dcfg.token_file.read_text().strip(), base_url=dcfg.base_url,
                                   http_client=cloudflare.DefaultHttpxClient(trust_env=False))
        zone_id = next(iter(cf.zones.list(name="news.test"))).id
        txt(cf, zone_id, "@", "v=spf1 -all")
    finally:
        cfemu_daemon.stop(pid, dcfg)
    assert not pid_alive(pid) and cfemu_daemon.running_pid(dcfg) is None
    assert [r["content"] for r in CloudflareEmulator(dcfg.state_file).records("news.test")] == ["v=spf1 -all"]


# --------------------------------------------------------------------------- the lab daemon


@pytest.mark.lab
def test_lab_daemon_publishes_a_dkim_sized_txt_record_into_the_lab_bind(lab, lab_cfg):
    ccfg = core.cloudflare_config(lab_cfg)
    token = ccfg.token_file.read_text().strip()
    assert stat.S_IMODE(ccfg.token_file.stat().st_mode) == 0o600
    # trust_env=False: never route lab traffic through a proxy from the environment
    cf = cloudflare.Cloudflare(api_token=token, base_url=ccfg.base_url, max_retries=0,
                               http_client=cloudflare.DefaultHttpxClient(trust_env=False))
    zone_id = next(iter(cf.zones.list(name="news.test"))).id
    key = base64.b64encode(secrets.token_bytes(294)).decode()  # the size of a 2048-bit RSA public key
    value = f"v=DKIM1; k=rsa; p={key}"
    assert 400 < len(value) < 420
    name = f"t{secrets.token_hex(4)}._domainkey.news.test"
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.cache = [lab_cfg.gateway_ipv4], None

    rec = cf.dns.records.create(zone_id=zone_id, name=name, type="TXT", content=value, ttl=1)
    try:
        answer = resolver.resolve(name, "TXT")  # mirrored before the API answered
        strings = [s for rd in answer for s in rd.strings]
        assert all(len(s) <= 255 for s in strings) and len(strings) == 2
        assert b"".join(strings).decode() == value
        assert answer.rrset.ttl == 300  # "automatic"
    finally:
        cf.dns.records.delete(rec.id, zone_id=zone_id)
    with pytest.raises((dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)):
        resolver.resolve(name, "TXT")

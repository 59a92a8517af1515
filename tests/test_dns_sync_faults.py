"""`dns sync --apply` against a Cloudflare API that breaks while mailops reads it.

The Cloudflare emulator serves two zones over HTTP on 127.0.0.1; a middleware in
front of it answers the record listing of one zone with HTML, with JSON of the
wrong types, or with ``null``, as a misconfigured proxy or a broken API would. The
real CLI must stop with one line naming the provider, exit non-zero, and write
nothing into either zone: every zone is planned before any is changed."""

from __future__ import annotations

import json
import types

import pytest

from mailops.lab.cfemu import CloudflareEmulator
from mailops.lab.cfemu_daemon import serve
from tests.helpers import copy_inventory, mailops

TOKEN = "cf-fault-token-0815"
ZONES = ("shop.test", "news.test")

BROKEN = {
    "html": ("text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "wrong-types": ("application/json",
                    json.dumps({"success": True, "errors": [], "messages": [],
                                "result": [{"id": 7, "type": ["TXT"], "name": None, "content": {}}],
                                "result_info": {"page": "one", "per_page": 100, "count": 1,
                                                "total_count": 1}}).encode()),
    "null": ("application/json", b"null"),
}


def _breaking(emulator: CloudflareEmulator, zone_id: str, kind: str):
    """A WSGI app that answers GETs of zone_id's records with BROKEN[kind]."""
    ctype, body = BROKEN[kind]

    def app(environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and environ.get("PATH_INFO", "").startswith(
                f"/client/v4/zones/{zone_id}/dns_records"):
            start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
            return [body]
        return emulator.wsgi_app(environ, start_response)
    return types.SimpleNamespace(wsgi_app=app)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_answer_stops_the_sync_before_any_zone_changes(tmp_path, kind):
    emulator = CloudflareEmulator()
    emulator.add_token(TOKEN)
    ids = {zone: emulator.add_zone(zone) for zone in ZONES}
    server = serve(_breaking(emulator, ids["news.test"], kind), "127.0.0.1", 0)
    try:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        base = f"http://127.0.0.1:{server.server_port}/client/v4"

        def settings(s: dict) -> None:
            s["mailops_dkim_keystore"] = str(tmp_path / "dkim")
            s["mailops_dns_providers"] = {"cf": {"type": "cloudflare", "api_token": {"file": str(token_file)},
                                                 "api_base_url": base}}
            for domain in s["mailops_domains"].values():
                domain["dns_provider"] = "cf"
            s.pop("mailops_reverse_dns_providers", None)

        def hosts(h: dict) -> None:
            for host in h["all"]["children"]["mailhosts"]["hosts"].values():
                host.pop("mailops_reverse_dns_provider", None)

        inv = copy_inventory(tmp_path / "inv", settings=settings, hosts=hosts)
        before = {zone: emulator.records(zone) for zone in ZONES}
        proc = mailops("dns", "sync", "--apply", "--force", "-i", str(inv), check=False, timeout=120)
        err = proc.stderr.strip()
        assert proc.returncode != 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and TOKEN not in proc.stdout + proc.stderr
        assert len(err.splitlines()) == 1 and "cloudflare provider 'cf'" in err, err
        assert {zone: emulator.records(zone) for zone in ZONES} == before == {z: [] for z in ZONES}
        assert emulator.request_count("POST") == 0, "a batch was sent although a zone could not be read"
    finally:
        server.shutdown()
        server.server_close()

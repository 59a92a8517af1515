"""octoDNS side of bench/dns_sync.py: the same records, synced by octoDNS to the same emulator.

octoDNS (``octodns`` + ``octodns-cloudflare``, the ``bench`` extra) reads one YAML
zone file per zone (YamlProvider) and syncs it to a CloudflareProvider whose
``api_url`` names the emulator.  The provider talks ``requests``; its session gets
``WsgiAdapter`` mounted for every URL, which calls the emulator's WSGI app
in-process -- the same transport style as the mailops side (the official SDK over
httpx's WSGI transport), so neither tool pays network time, and a request for any
other host fails instead of leaving the process.
"""

from __future__ import annotations

import io
import sys
import time
import urllib.parse
from pathlib import Path

import octodns
import octodns_cloudflare  # imported here, not by the timed Manager
import requests
import yaml
from octodns.manager import Manager
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.response import HTTPResponse

from mailops.dns.records import Record, relative_name

EMULATOR_HOST = "cf.emulator"
BASE_URL = f"http://{EMULATOR_HOST}/client/v4"
PROVIDER_ID = "cloudflare"
VERSIONS = f"octodns {octodns.__version__}, octodns-cloudflare {octodns_cloudflare.__version__}"


class WsgiAdapter(BaseAdapter):
    """A requests transport adapter that hands each request to a WSGI app in-process
    (requests-wsgi-adapter style).  Only ``host`` is served; anything else is refused."""

    def __init__(self, app, host: str = EMULATOR_HOST):
        super().__init__()
        self.app, self.host = app, host

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        url = urllib.parse.urlsplit(request.url)
        if url.hostname != self.host:
            raise requests.ConnectionError(f"WsgiAdapter serves only {self.host}, refused {request.url}",
                                           request=request)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        environ = {
            "REQUEST_METHOD": request.method, "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(url.path), "QUERY_STRING": url.query,
            "SERVER_NAME": url.hostname, "SERVER_PORT": str(url.port or (443 if url.scheme == "https" else 80)),
            "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0), "wsgi.url_scheme": url.scheme, "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for key, value in request.headers.items():
            key = key.upper().replace("-", "_")
            if key == "CONTENT_LENGTH":
                continue
            environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
        started: dict = {}

        def start_response(status, headers, exc_info=None):
            started.update(status=status, headers=headers)

        chunks = self.app(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        code, _, reason = started["status"].partition(" ")
        raw = HTTPResponse(body=io.BytesIO(content), headers=started["headers"], status=int(code),
                           reason=reason, preload_content=False, decode_content=False)
        resp = requests.Response()
        resp.status_code, resp.reason, resp.raw = int(code), reason, raw
        resp.headers = CaseInsensitiveDict(started["headers"])
        resp.encoding = get_encoding_from_headers(resp.headers)
        resp.url, resp.request, resp.connection = request.url, request, self
        return resp

    def close(self) -> None:
        pass


# --- configuration ------------------------------------------------------------------

def _octodns_value(rec: Record) -> object:
    if rec.type == "MX":
        pref, _, exchange = rec.value.partition(" ")
        return {"preference": int(pref), "exchange": exchange}
    if rec.type == "TXT":
        return rec.value.replace(";", "\\;")  # octoDNS wants ; escaped in TXT values
    return rec.value


def write_config(root: Path, zones: dict[str, list[Record]], *, token_env: str, workers: int) -> Path:
    """One YAML zone file per zone holding exactly ``zones``' records, and an octoDNS config
    syncing them to Cloudflare (the emulator); returns the config file's path."""
    zone_dir = root / "zones"
    zone_dir.mkdir(parents=True)
    for zone, records in zones.items():
        nodes: dict[str, list[dict]] = {}
        for rec in records:
            name = relative_name(rec.name, zone)
            nodes.setdefault("" if name == "@" else name, []).append(
                {"type": rec.type, "ttl": rec.ttl, "value": _octodns_value(rec)})
        data = {name: sorted(recs, key=lambda r: r["type"]) for name, recs in sorted(nodes.items())}
        (zone_dir / f"{zone}.yaml").write_text(yaml.safe_dump(data, sort_keys=True, width=10_000))
    config = {
        "manager": {"max_workers": workers},
        "providers": {
            "config": {"class": "octodns.provider.yaml.YamlProvider", "directory": str(zone_dir),
                       "default_ttl": 300, "enforce_order": True},
            PROVIDER_ID: {"class": "octodns_cloudflare.CloudflareProvider", "token": f"env/{token_env}",
                          "api_url": BASE_URL,
                          # DNS records only: a token with Zone:Read + DNS:Edit (what mailops asks for)
                          # may not read page rules, and mailops manages none.
                          "pagerules": False},
        },
        "zones": {f"{zone}.": {"sources": ["config"], "targets": [PROVIDER_ID]} for zone in zones},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- run ----------------------------------------------------------------------------

def run_sync(config: Path, emulator, *, workers: int) -> dict:
    """One ``octodns-sync --doit`` (config read, plan, apply) against emulator, in-process."""
    emulator.reset_stats()
    t = time.perf_counter()
    manager = Manager(str(config), max_workers=workers)
    provider = manager.providers[PROVIDER_ID]
    adapter = WsgiAdapter(emulator.wsgi_app)
    for prefix in ("http://", "https://"):  # nothing this session sends can leave the process
        provider._sess.mount(prefix, adapter)
    changes = manager.sync(dry_run=False, plan_output_fh=io.StringIO())
    wall = time.perf_counter() - t
    return {"wall": wall, "changes": changes, "zones": len(manager.config["zones"]),
            "requests": emulator.request_count()}

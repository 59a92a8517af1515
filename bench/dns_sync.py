"""Benchmark: `dns sync` of many domains through the Cloudflare API emulator.

    .venv/bin/python bench/dns_sync.py                # 200 domains
    .venv/bin/python bench/dns_sync.py --domains 50

Builds a throw-away inventory (one mail host, N sending domains, each its own
Cloudflare zone, one RSA-2048 DKIM key each), runs the library's plan + apply
+ provider read-back against the emulator in-process (the official SDK over
httpx's WSGI transport: no network), then a no-op sync.  Prints wall time and
API requests (total and per zone) for both.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from mailops.dkim.store import KeyStore
from mailops.dns.providers.cloudflare import CloudflareProvider
from mailops.dns.sync import Providers, apply_plan, make_plan
from mailops.inventory import load_inventory
from mailops.lab.cfemu import CloudflareEmulator

TOKEN = "bench-token"


def make_inventory(root: Path, n: int) -> Path:
    inv = root / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    domains = [f"d{i:03d}.test" for i in range(n)]
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"mailhosts": {"hosts": {
        f"mta1.{domains[0]}": {"ansible_host": "198.51.100.11", "mailops_ipv4": "198.51.100.11",
                               "mailops_ipv6": "2001:db8:51::11"}}}}}}))
    (inv / "group_vars" / "all" / "mailops.yml").write_text(yaml.safe_dump({
        "mailops_dkim_keystore": str(root / "dkim"),
        "mailops_dns_providers": {"cf": {"type": "cloudflare", "api_token": {"env": "BENCH_CF_TOKEN"},
                                         "api_base_url": "http://cf.emulator/client/v4"}},
        "mailops_domains": {d: {"dns_provider": "cf", "dmarc": {"policy": "reject", "rua": [f"mailto:dmarc@{d}"]}}
                            for d in domains},
    }))
    return inv


def run_sync(inv, store, emulator) -> dict:
    transport = httpx.WSGITransport(app=emulator.wsgi_app)
    provider = CloudflareProvider("cf", TOKEN, "http://cf.emulator/client/v4", transport=transport)
    emulator.reset_stats()
    t = time.perf_counter()
    plan, providers = make_plan(inv, store, providers=Providers(inv, {"cf": provider}))
    apply_plan(plan, providers)
    applied = time.perf_counter() - t
    return {"wall": applied, "changes": plan.pending, "zones": len(plan.zones),
            "requests": emulator.request_count()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", type=int, default=200)
    args = ap.parse_args()
    os.environ["BENCH_CF_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inv_dir = make_inventory(root, args.domains)
        inv, problems = load_inventory(inv_dir)
        assert not problems, problems[:3]
        store = KeyStore.for_inventory(inv)
        t = time.perf_counter()
        for domain, settings in inv.domains.items():
            store.generate(domain, settings.dkim)
        keygen = time.perf_counter() - t
        emulator = CloudflareEmulator()
        emulator.add_token(TOKEN)
        for domain in inv.domains:
            emulator.add_zone(domain)
        first = run_sync(inv, store, emulator)
        noop = run_sync(inv, store, emulator)
    n = args.domains
    print(f"mailops dns sync benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()} {platform.machine()}, "
          f"{os.cpu_count()} cores; {n} domains/zones, Cloudflare emulator in-process "
          f"(DKIM keys generated in {keygen:.1f}s, not counted)")
    print(f"{'sync':>8} {'wall s':>8} {'changes':>8} {'requests':>9} {'req/zone':>9} {'ms/zone':>8}")
    for label, r in (("first", first), ("no-op", noop)):
        print(f"{label:>8} {r['wall']:8.2f} {r['changes']:8d} {r['requests']:9d} "
              f"{r['requests'] / n:9.2f} {1000 * r['wall'] / n:8.1f}")


if __name__ == "__main__":
    main()

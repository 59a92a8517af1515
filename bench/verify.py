"""Benchmark: time to verify 1, 10 and 100 sending domains.

    .venv/bin/python bench/verify.py            # needs the lab up (mailops lab up) and vps1 converged

Makes a throw-away copy of the lab inventory with 100 extra sending domains
(d000.news.test ... d099.news.test, published through the lab's Cloudflare API
emulator, which the lab BIND serves), generates their DKIM keys, publishes
everything with `dns sync`, then times the library's `verify` for the DNS
group over 1, 10 and 100 domains, and the whole verify (dns, server,
security, live send) for 1 domain.  The extra records are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from mailops.dkim.store import KeyStore
from mailops.dns.sync import Providers, apply_plan, make_plan, sync
from mailops.inventory import load_inventory
from mailops.lab import core
from mailops.lab.config import LabConfig
from mailops.verify.runner import verify

ROOT = Path(__file__).resolve().parent.parent


def make_inventory(dest: Path, n: int, keystore: Path) -> Path:
    shutil.copytree(ROOT / "inventories" / "lab", dest)
    gv = dest / "group_vars" / "all" / "mailops.yml"
    data = yaml.safe_load(gv.read_text())
    for i in range(n):
        data["mailops_domains"][f"d{i:03d}.news.test"] = {"dns_provider": "lab-cloudflare",
                                                          "dmarc": {"policy": "reject"}}
    data["mailops_dkim_keystore"] = str(keystore)
    gv.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[1, 10, 100])
    args = ap.parse_args()
    cfg = LabConfig()
    core.up(cfg, vps=1)
    n = max(args.sizes)
    with tempfile.TemporaryDirectory() as tmp:
        # the lab's own keys (shop.test, news.test) plus new ones for the bench domains
        keystore = Path(tmp) / "dkim"
        shutil.copytree("/var/lib/mailops/lab/dkim", keystore)
        inv_dir = make_inventory(Path(tmp) / "inv", n, keystore)
        inv, problems = load_inventory(inv_dir)
        assert not problems, problems[:3]
        store = KeyStore.for_inventory(inv)
        for domain, settings in inv.domains.items():
            store.generate(domain, settings.dkim)
        t = time.perf_counter()
        published = sync(inv, store, force=True)
        sync_s = time.perf_counter() - t
        rows = []
        try:
            bench_domains = sorted(d for d in inv.domains if d.startswith("d"))
            for size in args.sizes:
                t = time.perf_counter()
                report = verify(inv_dir, only=("dns",), domains=bench_domains[:size])
                rows.append((f"dns, {size} domain(s)", time.perf_counter() - t, report))
            t = time.perf_counter()
            report = verify(inv_dir, domains=["shop.test"])
            rows.append(("all groups, 1 domain", time.perf_counter() - t, report))
        finally:
            lab_inv, _ = load_inventory(ROOT / "inventories" / "lab")
            plan, providers = make_plan(lab_inv, KeyStore.for_inventory(lab_inv),
                                        providers=Providers(lab_inv), force=True)
            apply_plan(plan, providers)
    print(f"mailops verify benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()} {platform.machine()}, "
          f"{os.cpu_count()} cores; lab DNS (BIND) on the same machine")
    print(f"setup: dns sync of {n} extra domains: {published['changes']} changes in {sync_s:.1f}s")
    print(f"{'run':<24} {'wall s':>7} {'checks':>7} {'pass':>5} {'fail':>5} {'inconcl':>8}")
    for label, seconds, report in rows:
        print(f"{label:<24} {seconds:7.2f} {len(report.results):7d} {report.count('pass'):5d} "
              f"{report.count('fail'):5d} {report.count('inconclusive'):8d}")
        for r in [r for r in report.results if r.status == "fail"][:3]:
            print(f"    fail: {r.subject} {r.name}: {r.detail}")


if __name__ == "__main__":
    main()

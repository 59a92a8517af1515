"""Benchmark: time to verify 1, 10 and 100 sending domains, and the server group of 1 and N hosts.

    .venv/bin/python bench/verify.py [--sizes 1 10 100] [--hosts 10]   # lab up, vps1 converged

Makes a throw-away copy of the lab inventory with 100 extra sending domains
(d000.news.test ... d099.news.test, published through the lab's Cloudflare API
emulator, which the lab BIND serves), generates their DKIM keys, publishes
everything with `dns sync`, then times the library's `verify` for the DNS
group over 1, 10 and 100 domains, and the whole verify (dns, server,
security, live send) for 1 domain.  The extra records are removed at the end.

The server group (the testinfra checks) is timed for one host and for N hosts,
each with one persistent SSH connection per host (mailops.checks.connection) and
with testinfra's ssh per command (MAILOPS_CHECKS_CONNECTION=ssh), side by side.
The lab converges one mail host (vps1), so the N hosts are vps1 under N
inventory names (bench02.shop.test ...; separate SSH targets and connections,
one machine: their commands share the lab's CPU as well as the controller's).
Copies fail the checks that compare against the inventory host name (hostname,
which host serves MTA-STS); the commands run are the same.
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


def make_inventory(dest: Path, n: int, keystore: Path, hosts: int = 1) -> Path:
    shutil.copytree(ROOT / "inventories" / "lab", dest)
    if hosts > 1:  # vps1 under more inventory names (see the module docstring)
        hosts_yml = dest / "hosts.yml"
        inv = yaml.safe_load(hosts_yml.read_text())
        mail = inv["all"]["children"]["mailhosts"]["hosts"]
        for i in range(2, hosts + 1):
            mail[f"bench{i:02d}.shop.test"] = dict(mail["mta1.shop.test"])
        hosts_yml.write_text(yaml.safe_dump(inv, sort_keys=False))
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
    ap.add_argument("--hosts", type=int, default=10, help="hosts for the parallel server-group run")
    ap.add_argument("--repeat", type=int, default=2, help="server-group runs per variant (best is shown)")
    args = ap.parse_args()
    cfg = LabConfig()
    if not (cfg.machines_dir / "vps1").is_dir():  # lab up only when vps1 is not there: it may be shared
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
            group_seconds = report.seconds
        finally:
            lab_inv, _ = load_inventory(ROOT / "inventories" / "lab")
            plan, providers = make_plan(lab_inv, KeyStore.for_inventory(lab_inv),
                                        providers=Providers(lab_inv), force=True)
            apply_plan(plan, providers)
    server_rows = bench_server(Path(tmp_server := tempfile.mkdtemp()), args.hosts, args.repeat)
    shutil.rmtree(tmp_server, ignore_errors=True)
    print(f"mailops verify benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()} {platform.machine()}, "
          f"{os.cpu_count()} cores; lab DNS (BIND) on the same machine")
    print(f"setup: dns sync of {n} extra domains: {published['changes']} changes in {sync_s:.1f}s")
    print(f"{'run':<24} {'wall s':>7} {'checks':>7} {'pass':>5} {'fail':>5} {'inconcl':>8}")
    for label, seconds, report in rows:
        print(f"{label:<24} {seconds:7.2f} {len(report.results):7d} {report.count('pass'):5d} "
              f"{report.count('fail'):5d} {report.count('inconclusive'):8d}")
        for r in [r for r in report.results if r.status == "fail"][:3]:
            print(f"    fail: {r.subject} {r.name}: {r.detail}")
    print("groups of the whole verify, s (they run concurrently): "
          + ", ".join(f"{g} {s:.2f}" for g, s in sorted(group_seconds.items(), key=lambda x: -x[1])))
    print(f"\nserver group (best of {args.repeat}; load average before: {os.getloadavg()[0]:.1f})")
    print(f"{'run':<44} {'wall s':>7} {'checks':>7} {'pass':>5} {'fail':>5} {'inconcl':>8}")
    for label, seconds, report in server_rows:
        print(f"{label:<44} {seconds:7.2f} {len(report.results):7d} {report.count('pass'):5d} "
              f"{report.count('fail'):5d} {report.count('inconclusive'):8d}")
    timing = {label: seconds for label, seconds, _ in server_rows}
    one, ssh1, many = (timing[k] for k in ("1 host, persistent connection", "1 host, ssh per command",
                                              f"{args.hosts} hosts, persistent connection"))
    print(f"ssh per command / persistent, 1 host: {ssh1 / one:.1f} x")
    print(f"{args.hosts} hosts / 1 host (persistent): {many / one:.2f} x   (goal <= 2)")


def bench_server(tmp: Path, hosts: int, repeat: int) -> list[tuple[str, float, object]]:
    """The server group alone: 1 host each way, then ``hosts`` inventory names for vps1."""
    inv_dir = make_inventory(tmp / "inv", 0, Path("/var/lib/mailops/lab/dkim"), hosts=hosts)
    names = ["mta1.shop.test"] + [f"bench{i:02d}.shop.test" for i in range(2, hosts + 1)]
    rows = []
    for label, connection, subset in (("1 host, persistent connection", "persistent", names[:1]),
                                      ("1 host, ssh per command", "ssh", names[:1]),
                                      (f"{hosts} hosts, persistent connection", "persistent", names)):
        os.environ["MAILOPS_CHECKS_CONNECTION"] = connection
        best = None
        for _ in range(repeat if connection == "persistent" else 1):
            t = time.perf_counter()
            report = verify(inv_dir, only=("server",), hosts=subset)
            seconds = time.perf_counter() - t
            best = min(best or (seconds, report), (seconds, report), key=lambda x: x[0])
        rows.append((label, *best))
    os.environ.pop("MAILOPS_CHECKS_CONNECTION", None)
    return rows


if __name__ == "__main__":
    main()

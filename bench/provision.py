"""Benchmark: provisioning wall time, fresh and no-op, for 1 and 3 hosts, and
the effect of the speed settings (SSH pipelining, ControlPersist, fact cache).

Run as root on a machine where `mailops lab up` works:

    .venv/bin/python bench/provision.py            # 1 and 3 hosts
    .venv/bin/python bench/provision.py --hosts 1  # quicker

It brings the lab up with 3 VPSes, resets them to fresh machines, writes a
temporary inventory (a copy of inventories/lab with mta1..mta3.shop.test),
syncs the lab DNS (dns sync) and converges through the same code path as
`mailops provision`.  Figures are printed side by side; nothing is asserted.
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

from mailops.ansible import apply, forget_facts
from mailops.dkim.store import KeyStore
from mailops.inventory import load_inventory
from mailops.lab import core
from mailops.lab.config import LabConfig
from mailops.dns.sync import sync

ROOT = Path(__file__).resolve().parent.parent

# What "without the speed settings" means: Ansible's own defaults.
SLOW_ENV = {
    "MAILOPS_MITOGEN": "0",
    "ANSIBLE_PIPELINING": "False",
    "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
    "ANSIBLE_GATHERING": "implicit",
    "ANSIBLE_CACHE_PLUGIN": "memory",
}


def make_inventory(cfg: LabConfig, n: int, dest: Path) -> Path:
    shutil.copytree(ROOT / "inventories" / "lab", dest)
    hosts_file = dest / "hosts.yml"
    data = yaml.safe_load(hosts_file.read_text())
    group = data["all"]["children"]["mailhosts"]
    template = group["hosts"]["mta1.shop.test"]
    group["hosts"] = {}
    for i in range(1, n + 1):
        vps = cfg.vps(i)
        h = dict(template)
        h.update({"ansible_host": vps.ipv4, "mailops_ipv4": vps.ipv4, "mailops_ipv6": vps.ipv6})
        group["hosts"][f"mta{i}.shop.test"] = h
    hosts_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def converge(inv: Path, env: dict | None = None) -> tuple[float, int, bool]:
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        t = time.monotonic()
        r = apply(inv)
        for h in r.hosts.values():
            if h.failed or h.unreachable:
                print(f"  ! {h.host}: {h.failed_task}: {h.failed_message}")
        return time.monotonic() - t, r.changed, r.ok
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, nargs="*", default=[1, 3])
    args = ap.parse_args()
    cfg = LabConfig()
    core.up(cfg, vps=max(args.hosts))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.hosts:
            for i in range(1, n + 1):
                core.reset(cfg, f"vps{i}")
                forget_facts(f"mta{i}.shop.test")
            inv_dir = make_inventory(cfg, n, Path(tmp) / f"inv{n}")
            inv, problems = load_inventory(inv_dir)
            assert not problems, problems
            store = KeyStore.for_inventory(inv)
            for domain, settings in inv.domains.items():
                store.generate(domain, settings.dkim)
            sync(inv, store)
            fresh, changed, ok = converge(inv_dir)
            noop, noop_changed, ok2 = converge(inv_dir)
            slow_noop, _c, ok3 = converge(inv_dir, SLOW_ENV)
            rows.append((n, fresh, changed, noop, noop_changed, slow_noop, ok and ok2 and ok3))
    print(f"mailops provisioning benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()} "
          f"{platform.machine()}, {os.cpu_count()} cores")
    print(f"{'hosts':>5} {'fresh s':>8} {'changed':>8} {'no-op s':>8} {'changed':>8} "
          f"{'no-op w/o speed settings s':>27} {'ratio':>6} ok")
    for n, fresh, changed, noop, noop_changed, slow, ok in rows:
        print(f"{n:>5} {fresh:8.1f} {changed:8d} {noop:8.1f} {noop_changed:8d} {slow:27.1f} {slow / noop:6.2f} {ok}")
    print("speed settings = mitogen strategy + SSH pipelining + ControlPersist + smart gathering with a "
          "jsonfile fact cache; 'without' = Ansible's defaults (linear strategy, no pipelining, "
          "no ControlPersist, no fact cache)")


if __name__ == "__main__":
    main()

"""Benchmark: cold and warm `lab up`, `lab down`, and the size of the images.

Cold = no cached image (debootstrap + receiver packages are built), warm = the
images are cached and the lab was just taken down.  Run as root:

    .venv/bin/python bench/lab.py            # warm only (keeps the image cache)
    .venv/bin/python bench/lab.py --cold     # also rebuild the images first

Prints the figures; nothing is asserted about timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from mailops.lab import core, image
from mailops.lab.config import LabConfig


def timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="remove cached images first and time a cold build")
    ap.add_argument("--vps", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = LabConfig()
    figures: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {platform.machine()}",
                     "vps": args.vps}
    figures["down_before_s"] = round(timed(lambda: core.down(cfg))[0], 1)
    if args.cold:
        image.remove_images(cfg)
        secs, res = timed(lambda: core.up(cfg, vps=args.vps))
        figures["cold_up_s"] = round(secs, 1)
        figures["cold_image_build_s"] = {n: i["build_seconds"] for n, i in res.images.items()}
        figures["down_after_cold_s"] = round(timed(lambda: core.down(cfg))[0], 1)
    warm = []
    for _ in range(2):
        secs, _res = timed(lambda: core.up(cfg, vps=args.vps))
        warm.append(round(secs, 1))
        down_s = round(timed(lambda: core.down(cfg))[0], 1)
    figures["warm_up_s"] = warm
    figures["down_s"] = down_s
    secs, _res = timed(lambda: core.up(cfg, vps=args.vps))
    figures["warm_up_s"].append(round(secs, 1))
    figures["noop_up_s"] = round(timed(lambda: core.up(cfg, vps=args.vps))[0], 2)
    for name in ("base", "receiver"):
        info = image.image_info(cfg, name) or {}
        figures[f"image_{name}_MB"] = round(image.disk_usage(image.image_path(cfg, name)) / 1e6)
        figures[f"image_{name}_build_s"] = info.get("build_seconds")
    figures["apt_cache_MB"] = round(image.disk_usage(cfg.apt_cache_dir) / 1e6) if cfg.apt_cache_dir.exists() else 0
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"mailops lab benchmark  {figures['date']}  {figures['machine']}  (--vps {args.vps})")
    if "cold_up_s" in figures:
        print(f"  cold lab up (images built)     {figures['cold_up_s']:7.1f} s   "
              f"(base {figures['cold_image_build_s']['base']} s, receiver {figures['cold_image_build_s']['receiver']} s)")
        print(f"  cold / warm ratio              {figures['cold_up_s'] / min(figures['warm_up_s']):7.1f} x")
    print(f"  warm lab up (cached images)    {', '.join(f'{s:.1f}' for s in figures['warm_up_s'])} s")
    print(f"  no-op lab up (already up)      {figures['noop_up_s']:7.2f} s")
    print(f"  lab down                       {figures['down_s']:7.1f} s")
    print(f"  base image on disk             {figures['image_base_MB']:7d} MB (built in {figures['image_base_build_s']} s)")
    print(f"  receiver image on disk         {figures['image_receiver_MB']:7d} MB (built in {figures['image_receiver_build_s']} s)")
    print(f"  package proxy cache            {figures['apt_cache_MB']:7d} MB")
    print("  (lab left up)")


if __name__ == "__main__":
    main()

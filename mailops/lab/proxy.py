"""The lab's package proxy: apt-cacher-ng on the gateway.

Lab machines have no route to the mirror; like many operators' private
networks they install packages through a caching proxy.  apt-cacher-ng runs
with a config directory of our own: Debian's stock config remaps mirrors and
answers "503 Host not found" here.  The cache directory outlives `lab down` so
repeated runs are served from it.
"""

from __future__ import annotations

from pathlib import Path

from mailops.lab.config import LabConfig
from mailops.lab.supervisor import Daemon
from mailops.lab.system import wait_tcp


def conf_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir / "apt-cacher-ng"


def write_config(cfg: LabConfig) -> Path:
    cdir = conf_dir(cfg)
    (cdir / "log").mkdir(parents=True, exist_ok=True)
    cfg.apt_cache_dir.mkdir(parents=True, exist_ok=True)
    (cdir / "acng.conf").write_text(
        f"CacheDir: {cfg.apt_cache_dir}\n"
        f"LogDir: {cdir / 'log'}\n"
        f"SocketPath: {cdir / 'socket'}\n"
        f"PidFile: {cdir / 'pid'}\n"
        f"Port: {cfg.proxy_port}\n"
        f"BindAddress: {cfg.gateway_ipv4} {cfg.gateway_ipv6}\n"
        # Fetch from whatever host the client asks for; no mirror remapping.
        "PassThroughPattern: .*\n"
        "ReportPage: acng-report.html\n"
        "ExThreshold: 4\n"
        "VerboseLog: 1\n")
    return cdir


def daemon(cfg: LabConfig) -> Daemon:
    """apt-cacher-ng as a supervised lab service, recognised by our config directory in its command line."""
    cdir = conf_dir(cfg)
    # not cdir/pid: that one is apt-cacher-ng's own
    return Daemon("apt-cacher-ng", str(cdir), cdir / "supervised.pid", cdir / "log" / "stdout.log")


def start(cfg: LabConfig) -> int:
    cdir = write_config(cfg)
    return daemon(cfg).start(["apt-cacher-ng", "-c", str(cdir), "ForeGround=1"],
                             lambda: wait_tcp(cfg.gateway_ipv4, cfg.proxy_port, 0.2), timeout=15,
                             waiting_for=f"listen on {cfg.gateway_ipv4}:{cfg.proxy_port}")


def running(cfg: LabConfig, pid: int | None) -> bool:
    return daemon(cfg).is_ours(pid)


def stop(cfg: LabConfig, pid: int | None) -> None:
    daemon(cfg).stop(pid)


def cache_stats(cfg: LabConfig) -> dict:
    """Requests served from the cache vs fetched upstream, from apt-cacher-ng's log."""
    log = conf_dir(cfg) / "log" / "apt-cacher.log"
    hits = misses = 0
    try:
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split("|")
            if len(parts) > 1 and parts[1] == "I":
                hits += 1
            elif len(parts) > 1 and parts[1] == "O":
                misses += 1
    except OSError:
        pass
    return {"log_in": hits, "log_out": misses}

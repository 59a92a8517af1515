"""The lab's package proxy: apt-cacher-ng on the gateway.

Lab machines have no route to the mirror; like many operators' private
networks they install packages through a caching proxy.  apt-cacher-ng runs
with a config directory of our own: Debian's stock config remaps mirrors and
answers "503 Host not found" here.  The cache directory outlives `lab down` so
repeated runs are served from it.
"""

from __future__ import annotations

from pathlib import Path

from mailops.errors import MailopsError
from mailops.lab.config import LabConfig
from mailops.lab.system import is_ours, last_lines, run, spawn, terminate, wait_tcp


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


def start(cfg: LabConfig) -> int:
    cdir = write_config(cfg)
    log = cdir / "log" / "stdout.log"
    proc = spawn(["apt-cacher-ng", "-c", str(cdir), "ForeGround=1"], log)
    if not wait_tcp(cfg.gateway_ipv4, cfg.proxy_port, 15):
        proc.kill()
        raise MailopsError(f"apt-cacher-ng did not listen on {cfg.gateway_ipv4}:{cfg.proxy_port}: "
                           f"{last_lines(log)}")
    return proc.pid


def running(cfg: LabConfig, pid: int | None) -> bool:
    return is_ours(pid, str(conf_dir(cfg)))


def stop(cfg: LabConfig, pid: int | None) -> None:
    terminate(pid, str(conf_dir(cfg)))


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

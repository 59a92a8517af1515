"""The lab's services on the gateway: BIND, the package proxy, the ACME CA and the
Cloudflare API emulator.

Each is described once here (its configuration, how to start it, what `lab status`
shows) and run by the one lab supervisor (supervisor.Daemon), so `lab up`, `status`
and `down` treat all of them alike.  Lab state records each one's PID under its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mailops.lab import acme, cfemu, cfemu_daemon, dns, dns_server, proxy
from mailops.lab.config import DNSBL_ZONE, LAB_ZONE, MAILBOX_DOMAIN, SENDING_ZONES, LabConfig
from mailops.lab.supervisor import Daemon


# -- configuration -----------------------------------------------------------
def dns_config(cfg: LabConfig) -> dns.DNSServerConfig:
    R = dns.Record
    gw4, gw6 = cfg.gateway_ipv4, cfg.gateway_ipv6
    rx = cfg.receiver
    zones: dict[str, list] = {
        f"{LAB_ZONE}.": [
            R("gw", "A", gw4), R("gw", "AAAA", gw6),
            R("proxy", "A", gw4), R("proxy", "AAAA", gw6),
        ],
        f"{MAILBOX_DOMAIN}.": [
            R("@", "MX", f"10 {rx.fqdn}."),
            R(rx.fqdn + ".", "A", rx.ipv4), R(rx.fqdn + ".", "AAAA", rx.ipv6),
            R("@", "TXT", '"v=spf1 -all"'),
            R(rx.fqdn + ".", "TXT", '"v=spf1 a -all"'),
        ],
        dns.reverse_zone_for(cfg.ipv4_network): [
            R(dns.ptr_name(gw4), "PTR", f"gw.{LAB_ZONE}."),
            R(dns.ptr_name(rx.ipv4), "PTR", rx.fqdn + "."),
        ],
        dns.reverse_zone_for(cfg.ipv6_network): [
            R(dns.ptr_name(gw6), "PTR", f"gw.{LAB_ZONE}."),
            R(dns.ptr_name(rx.ipv6), "PTR", rx.fqdn + "."),
        ],
    }
    for zone in SENDING_ZONES:
        zones[f"{zone}."] = []
    return dns.DNSServerConfig(
        state_dir=cfg.state_dir / "dns",
        listen_v4=[gw4], listen_v6=[gw6],
        zones=zones,
        nameserver_name=f"ns1.{LAB_ZONE}.",
        dnsbl_zone=f"{DNSBL_ZONE}.",
    )


def acme_config(cfg: LabConfig) -> acme.AcmeConfig:
    return acme.lab_acme_config(cfg)


CLOUDFLARE_ZONES = ("news.test",)  # the lab inventory's lab-cloudflare domain


def cloudflare_config(cfg: LabConfig) -> cfemu_daemon.DaemonConfig:
    """The lab's Cloudflare API emulator: on the gateway, port 8787, mirroring into the lab BIND."""
    dcfg = dns_config(cfg)
    return cfemu_daemon.DaemonConfig(state_dir=cfg.state_dir / "cloudflare", listen=cfg.gateway_ipv4,
                                     port=cfemu.DEFAULT_PORT, zones=CLOUDFLARE_ZONES,
                                     mirror_dns=f"{cfg.gateway_ipv4}:{dcfg.port}",
                                     mirror_tsig_name=dcfg.tsig_key_name,
                                     mirror_tsig_secret_file=dcfg.state_dir / dns.SECRET_FILE)


def _start_named(cfg: LabConfig) -> int:
    dcfg = dns_config(cfg)
    dns.write_config(dcfg)
    return dns.start(dcfg)


# -- the services --------------------------------------------------------------
@dataclass(frozen=True)
class Service:
    key: str                                  # its key in the lab state's "services"
    title: str                                # how `lab status` names it
    step: str                                 # what `lab up` is doing while it starts it
    daemon: Callable[[LabConfig], Daemon]
    start: Callable[[LabConfig], int]
    address: Callable[[LabConfig], str]
    started: Callable[[LabConfig], str]       # what `lab up` reports once it runs
    after_start: Callable[[LabConfig], object] | None = None  # each `lab up`, also when it ran already


SERVICES = (
    Service("named", "dns (bind9)", "starting the DNS server (BIND)",
            lambda cfg: dns_server.daemon(dns_config(cfg).state_dir), _start_named,
            lambda cfg: f"{cfg.gateway_ipv4}:53, [{cfg.gateway_ipv6}]:53",
            lambda cfg: f"DNS server (BIND) answering on {cfg.gateway_ipv4} and {cfg.gateway_ipv6}"),
    Service("apt-cacher-ng", "package proxy (apt-cacher-ng)", "starting the package proxy (apt-cacher-ng)",
            proxy.daemon, proxy.start, lambda cfg: cfg.proxy_url,
            lambda cfg: f"package proxy on {cfg.proxy_url}"),
    Service("pebble", "acme ca (pebble)", "starting the ACME test CA (pebble)",
            lambda cfg: acme.daemon(acme_config(cfg)), lambda cfg: acme.start(acme_config(cfg)),
            lambda cfg: acme.directory_url(acme_config(cfg)),
            lambda cfg: f"ACME CA (pebble) at {acme.directory_url(acme_config(cfg))}",
            after_start=lambda cfg: acme.write_issuing_roots(acme_config(cfg))),
    Service("cloudflare", "cloudflare api (emulator)", "starting the Cloudflare API emulator",
            lambda cfg: cfemu_daemon.daemon(cloudflare_config(cfg)),
            lambda cfg: cfemu_daemon.start(cloudflare_config(cfg)),
            lambda cfg: cloudflare_config(cfg).base_url,
            lambda cfg: (f"Cloudflare API emulator at {cloudflare_config(cfg).base_url} "
                         f"(token in {cloudflare_config(cfg).token_file})")),
)


def running_pid(service: Service, cfg: LabConfig, state: dict) -> int | None:
    """The service's PID if it runs: from its pid file, else the one the lab state recorded."""
    daemon = service.daemon(cfg)
    recorded = state.get("services", {}).get(service.key)
    return daemon.running_pid() or (recorded if daemon.is_ours(recorded) else None)


def stop(service: Service, cfg: LabConfig, pid: int | None) -> None:
    service.daemon(cfg).stop(pid)


def status_row(service: Service, cfg: LabConfig, state: dict) -> dict:
    pid = running_pid(service, cfg, state)
    return {"name": service.title, "address": service.address(cfg), "state": "running" if pid else "stopped",
            "pid": pid or state.get("services", {}).get(service.key)}

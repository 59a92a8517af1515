"""The lab's ACME certificate authority: Debian's ``pebble`` on the gateway.

Lab machines obtain real ACME certificates (certbot, http-01) from pebble
running on the gateway address.  Pebble's validation authority resolves names
through the lab BIND (``-dnsserver``) and fetches the http-01 token from the
VPS on port 80 over the lab bridge.

Two different CAs are involved:

* the *HTTPS CA* that signed pebble's own web server certificate (the ACME
  API on :14000 and the management API on :15000).  Debian's package ships no
  test certificates, so we create a small CA and a server certificate for the
  listen address once and keep them in ``state_dir`` (they survive restarts,
  so the bundle copied to lab machines stays valid).  ``server_ca_bundle()``
  is the file certbot must trust (REQUESTS_CA_BUNDLE).
* the *issuing* root/intermediates that sign the certificates pebble issues.
  Pebble regenerates them at every start; ``issuing_roots()`` fetches the
  current ones from the management API so checks can verify a chain.

The process is tracked by PID and by its command line (which contains our
config path): nothing is ever killed by name.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mailops.errors import MailopsError, PrerequisiteMissing
from mailops.lab.supervisor import Daemon
from mailops.lab.system import last_lines, wait_tcp

CONFIG_NAME = "pebble-config.json"
PID_NAME = "pebble.pid"
LOG_NAME = "pebble.log"
CA_CERT_NAME = "https-ca.pem"  # the bundle certbot trusts
CA_KEY_NAME = "https-ca.key"
SERVER_CERT_NAME = "https-cert.pem"
SERVER_KEY_NAME = "https-key.pem"


@dataclass
class AcmeConfig:
    state_dir: Path
    listen: str = "198.51.100.1"
    port: int = 14000
    mgmt_port: int = 15000
    dns_server: str = "198.51.100.1:53"
    http_port: int = 80

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)


def lab_acme_config(lab_cfg) -> AcmeConfig:
    """The AcmeConfig of the lab (``<lab state_dir>/acme`` on the gateway address)."""
    return AcmeConfig(state_dir=Path(lab_cfg.state_dir) / "acme", listen=lab_cfg.gateway_ipv4,
                      dns_server=f"{lab_cfg.gateway_ipv4}:53")


def _host(addr: str) -> str:
    """addr as it appears in a URL or host:port (IPv6 in brackets)."""
    try:
        if ipaddress.ip_address(addr).version == 6:
            return f"[{addr}]"
    except ValueError:
        pass
    return addr


def config_path(cfg: AcmeConfig) -> Path:
    return cfg.state_dir / CONFIG_NAME


def directory_url(cfg: AcmeConfig) -> str:
    return f"https://{_host(cfg.listen)}:{cfg.port}/dir"


def management_url(cfg: AcmeConfig) -> str:
    return f"https://{_host(cfg.listen)}:{cfg.mgmt_port}"


# -- pebble's own HTTPS certificate -------------------------------------------
def _server_names(cfg: AcmeConfig) -> tuple[list, list]:
    """(IP addresses, DNS names) the server certificate must cover."""
    ips, names = [], ["localhost"]
    for value in (cfg.listen, "127.0.0.1", "::1"):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            names.insert(0, value)
            continue
        if ip not in ips:
            ips.append(ip)
    return ips, names


def _ensure_https_cert(cfg: AcmeConfig) -> None:
    """Create the HTTPS CA (once) and a server certificate for cfg.listen (when missing or stale)."""
    from mailops.lab import pki

    d = cfg.state_dir
    ca = pki.ensure_ca(d / CA_CERT_NAME, d / CA_KEY_NAME, "mailops lab ACME server HTTPS CA")
    ips, names = _server_names(cfg)
    pki.ensure_server_cert(d / SERVER_CERT_NAME, d / SERVER_KEY_NAME, ca, names=names, ips=ips)


def server_ca_bundle(cfg: AcmeConfig) -> Path:
    """The PEM file of the CA that signed pebble's HTTPS certificate (certbot's REQUESTS_CA_BUNDLE)."""
    _ensure_https_cert(cfg)
    return cfg.state_dir / CA_CERT_NAME


def _ssl_context(cfg: AcmeConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server_ca_bundle(cfg)))


def _get(cfg: AcmeConfig, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=_ssl_context(cfg), timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- config, start, stop ------------------------------------------------------
def write_config(cfg: AcmeConfig) -> Path:
    """Write pebble's JSON config (and the HTTPS certificate it names); return its path."""
    _ensure_https_cert(cfg)
    conf = {
        "pebble": {
            "listenAddress": f"{_host(cfg.listen)}:{cfg.port}",
            "managementListenAddress": f"{_host(cfg.listen)}:{cfg.mgmt_port}",
            "certificate": str(cfg.state_dir / SERVER_CERT_NAME),
            "privateKey": str(cfg.state_dir / SERVER_KEY_NAME),
            # The VA connects to the validated name on these ports.
            "httpPort": cfg.http_port,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    path = config_path(cfg)
    path.write_text(json.dumps(conf, indent=2) + "\n")
    return path


def daemon(cfg: AcmeConfig) -> Daemon:
    """pebble as a supervised lab service, recognised by our config path in its command line."""
    return Daemon("pebble", str(config_path(cfg)), cfg.state_dir / PID_NAME, cfg.state_dir / LOG_NAME)


def running_pid(cfg: AcmeConfig) -> int | None:
    """PID of the pebble started for cfg (pid file, verified through /proc cmdline), or None."""
    return daemon(cfg).running_pid()


def _pebble_binary() -> str:
    for cand in ("/usr/bin/pebble", "/usr/local/bin/pebble"):
        if os.access(cand, os.X_OK):
            return cand
    import shutil

    found = shutil.which("pebble")
    if not found:
        raise PrerequisiteMissing("pebble is not installed (apt install pebble)")
    return found


def start(cfg: AcmeConfig, timeout: float = 15) -> int:
    """Start pebble for cfg, detached, logging to state_dir/pebble.log; wait until the
    directory URL answers over HTTPS (verified against server_ca_bundle); return its PID.
    If it is already running for cfg, return that PID."""
    pid = running_pid(cfg)
    if pid:
        return pid
    binary = _pebble_binary()
    conf = write_config(cfg)
    for port in (cfg.port, cfg.mgmt_port):
        if wait_tcp(cfg.listen, port, 0.3):
            raise MailopsError(f"cannot start pebble: {cfg.listen}:{port} is already in use "
                               "(another ACME server running?)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
    last = ["no answer"]

    def ready() -> bool:
        try:
            status, body = _get(cfg, directory_url(cfg), timeout=2)
        except (OSError, ssl.SSLError) as exc:
            last[0] = str(getattr(exc, "reason", exc))
            return False
        last[0] = f"HTTP {status}"
        return status == 200 and b"newAccount" in body

    pebble = daemon(cfg)
    return pebble.start([binary, "-config", str(conf), "-dnsserver", cfg.dns_server], ready, timeout=timeout,
                        waiting_for=f"answer {directory_url(cfg)}", env=env,
                        detail=lambda exited: last_lines(pebble.log) if exited
                        else f"{last[0]}; {last_lines(pebble.log)}")


def stop(pid: int | None, cfg: AcmeConfig) -> None:
    """Stop the pebble started for cfg (only if pid's command line names our config)."""
    daemon(cfg).stop(pid)


# -- issuing CA -----------------------------------------------------------------
def issuing_roots(cfg: AcmeConfig) -> list[str]:
    """PEM certificates of pebble's current issuing root(s) and intermediate(s).

    Pebble regenerates them at every start, so fetch them after start().  The
    roots come first, then the intermediates."""
    out: list[str] = []
    for kind in ("roots", "intermediates"):
        for i in range(8):  # alternate chains only with PEBBLE_ALTERNATE_ROOTS
            try:
                status, body = _get(cfg, f"{management_url(cfg)}/{kind}/{i}")
            except (OSError, ssl.SSLError) as exc:
                raise MailopsError(f"cannot read pebble's {kind} from {management_url(cfg)}: "
                                   f"{getattr(exc, 'reason', exc)}") from exc
            if status != 200 or b"BEGIN CERTIFICATE" not in body:
                if i == 0:
                    raise MailopsError(f"pebble's management API returned HTTP {status} for /{kind}/0")
                break
            out.append(body.decode())
    return out


def write_issuing_roots(cfg: AcmeConfig, path: Path | None = None) -> Path:
    """Write issuing_roots() into one PEM bundle (default state_dir/issuing-roots.pem)."""
    path = path or cfg.state_dir / "issuing-roots.pem"
    path.write_text("".join(p if p.endswith("\n") else p + "\n" for p in issuing_roots(cfg)))
    return path

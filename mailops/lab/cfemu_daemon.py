"""The Cloudflare emulator served over HTTP, and the lab daemon that runs it.

``python -m mailops.lab.cfemu_daemon`` is what the lab runs on its gateway
(port 8787), mirroring every change into the lab BIND; start()/stop() run it
under the lab's supervisor."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import socketserver
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from mailops.errors import MailopsError
from mailops.lab.cfemu import API_PREFIX, DEFAULT_PORT, CloudflareEmulator
from mailops.lab.cfemu_mirror import BindMirror
from mailops.lab.supervisor import Daemon
from mailops.lab.system import wait_tcp


# --------------------------------------------------------------------------- HTTP server
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # the request log is in the emulator
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(host): a reverse DNS query to the
        # system resolver, i.e. traffic to an address outside the lab.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


def serve(emulator: CloudflareEmulator, host: str, port: int) -> WSGIServer:
    """Serve the emulator over HTTP on host:port (0 = any free port) from a daemon thread.
    Stop it with ``server.shutdown(); server.server_close()``."""
    server_class = type("_Server", (_ThreadingServer,),
                        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    server = server_class((host, port), _QuietHandler)
    server.set_app(emulator.wsgi_app)
    threading.Thread(target=server.serve_forever, name="cfemu-http", daemon=True).start()
    return server


# --------------------------------------------------------------------------- the lab daemon
PID_NAME, LOG_NAME, STATE_NAME, TOKEN_NAME = "cfemu.pid", "cfemu.log", "state.json", "token"


@dataclass
class DaemonConfig:
    state_dir: Path
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    zones: tuple[str, ...] = ()
    mirror_dns: str | None = None  # "HOST:PORT" of the BIND to mirror into
    mirror_tsig_name: str | None = None
    mirror_tsig_secret_file: Path | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_NAME

    @property
    def token_file(self) -> Path:
        return self.state_dir / TOKEN_NAME

    @property
    def base_url(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"http://{host}:{self.port}{API_PREFIX}"


def ensure_token(cfg: DaemonConfig) -> str:
    """The daemon's API token (created once: random, 40 characters like Cloudflare's, mode 0600)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.state_dir.chmod(0o700)
    if not cfg.token_file.exists():
        fd = os.open(cfg.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(30) + "\n")
    return cfg.token_file.read_text().strip()


def daemon(cfg: DaemonConfig) -> Daemon:
    """The emulator as a supervised lab service, recognised by our state file in its command line."""
    return Daemon("the Cloudflare emulator", str(cfg.state_file), cfg.state_dir / PID_NAME, cfg.state_dir / LOG_NAME)


def running_pid(cfg: DaemonConfig) -> int | None:
    """PID of the emulator daemon of cfg (pid file, verified by its command line naming our state file)."""
    return daemon(cfg).running_pid()


def _answers(cfg: DaemonConfig, token: str) -> bool:
    req = urllib.request.Request(cfg.base_url + "/user/tokens/verify", headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(req, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start(cfg: DaemonConfig, timeout: float = 15) -> int:
    """Start the daemon for cfg (detached, logging to state_dir/cfemu.log) and wait until it
    answers with the token; return its PID (the running one if already started)."""
    pid = running_pid(cfg)
    if pid:
        return pid
    token = ensure_token(cfg)
    if wait_tcp(cfg.listen, cfg.port, 0.3):
        raise MailopsError(f"cannot start the Cloudflare emulator: {cfg.listen}:{cfg.port} is already in use")
    argv = [sys.executable, "-m", "mailops.lab.cfemu_daemon", "--listen", f"{cfg.listen}:{cfg.port}",
            "--state", str(cfg.state_file), "--token-file", str(cfg.token_file)]
    for zone in cfg.zones:
        argv += ["--zone", zone]
    if cfg.mirror_dns:
        argv += ["--mirror-dns", cfg.mirror_dns, "--mirror-tsig-name", str(cfg.mirror_tsig_name),
                 "--mirror-tsig-secret-file", str(cfg.mirror_tsig_secret_file)]
    return daemon(cfg).start(argv, lambda: _answers(cfg, token), timeout=timeout,
                             waiting_for=f"answer on {cfg.base_url}")


def stop(pid: int | None, cfg: DaemonConfig) -> None:
    """Stop the daemon of cfg (only if pid's command line names our state file)."""
    daemon(cfg).stop(pid)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mailops.lab.cfemu_daemon", description="Cloudflare API v4 emulator")
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--state", required=True, type=Path, help="JSON state file")
    p.add_argument("--token-file", required=True, type=Path, help="file holding the accepted API token")
    p.add_argument("--zone", action="append", default=[], help="zone to create if missing (repeatable)")
    p.add_argument("--mirror-dns", help="HOST:PORT of a DNS server to mirror every zone into (RFC 2136)")
    p.add_argument("--mirror-tsig-name")
    p.add_argument("--mirror-tsig-secret-file", type=Path)
    args = p.parse_args(argv)
    mirror = None
    if args.mirror_dns:
        if not (args.mirror_tsig_name and args.mirror_tsig_secret_file):
            p.error("--mirror-dns needs --mirror-tsig-name and --mirror-tsig-secret-file")
        host, port = _hostport(args.mirror_dns)
        mirror = BindMirror(host, port, args.mirror_tsig_name, args.mirror_tsig_secret_file.read_text().strip())
    emu = CloudflareEmulator(args.state, on_change=mirror)
    emu.add_token(args.token_file.read_text().strip(), write=True)
    for zone in args.zone:
        emu.add_zone(zone)
    emu.notify_all()  # BIND may have lost or gained records while we were not running
    if emu.change_errors:
        print(f"cfemu: cannot mirror into {args.mirror_dns}: {emu.change_errors[-1]}", file=sys.stderr)
        return 1
    host, port = _hostport(args.listen)
    server = serve(emu, host, port)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"cfemu: serving {API_PREFIX} on {args.listen}, zones: {', '.join(args.zone) or 'from state'}", flush=True)
    while not stopping.wait(1):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

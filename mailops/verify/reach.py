"""Can verify reach a mail host over SSH at all? Asked once per host, in bounded time, before
the server checks run: a host that refuses, never answers, or refuses the login would otherwise
fail every one of them with ssh's exit status 255 (and a silent one takes minutes)."""

from __future__ import annotations

import socket
import subprocess
import time

SSH_TIMEOUT = 10.0  # seconds for the TCP connect, again for the SSH banner, twice that for the login


def _banner(sock: socket.socket, timeout: float) -> bytes:
    """The server's first lines up to its SSH version line (RFC 4253 allows other lines before it)."""
    deadline = time.monotonic() + timeout
    data = b""
    while not any(line.startswith(b"SSH-") for line in data.split(b"\n")[:-1]) and len(data) < 4096:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def ssh_problem(host, timeout: float = SSH_TIMEOUT) -> str | None:
    """Why ``host`` (a MailHost) cannot be used over SSH, in one line; None when a login works."""
    where = f"cannot reach {host.name} over SSH ({host.ssh_host}:{host.ssh_port})"
    stage = "connecting"
    try:
        with socket.create_connection((host.ssh_host, host.ssh_port), timeout=timeout) as sock:
            stage = "waiting for the SSH banner"
            banner = _banner(sock, timeout)
    except ConnectionRefusedError:
        return f"{where}: connection refused"
    except (TimeoutError, socket.timeout):
        return f"{where}: timed out after {timeout:.0f} s {stage}"
    except socket.gaierror:
        return f"{where}: the name {host.ssh_host} does not resolve"
    except OSError as exc:
        return f"{where}: {(exc.strerror or str(exc)).lower()}"
    if not any(line.startswith(b"SSH-") for line in banner.split(b"\n")):
        if not banner:
            return f"{where}: it closed the connection without an SSH banner"
        first = " ".join(banner.split(b"\n", 1)[0].decode("ascii", "replace").split())[:60]
        return f"{where}: it answered {first!r}, not an SSH banner"
    # The port speaks SSH: log in the way the checks will (key, user, known host key).
    try:
        proc = subprocess.run(host.ssh_command() + ["true"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=2 * timeout)
    except subprocess.TimeoutExpired:
        return f"cannot log in to {host.name} over SSH: no answer within {2 * timeout:.0f} s"
    except OSError as exc:
        return f"cannot run ssh for {host.name}: {exc.strerror or exc}"
    if proc.returncode == 255:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        return f"cannot log in to {host.name} over SSH: {(lines[-1] if lines else 'ssh failed')[:200]}"
    return None

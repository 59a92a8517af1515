"""The lab DNS server's process: BIND's named, run by the lab supervisor.

A named is ours if its command line is ``named ... -c <state_dir>/named.conf``;
without a state directory, if the file it names starts with our MARKER line.
start() waits until named answers SOA (AA) for every zone."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from mailops.errors import MailopsError
from mailops.lab.dns_data import (CONF_NAME, LOG_NAME, LOG_ROTATE_BYTES, MARKER, PID_NAME, DNSServerConfig,
                                  all_zones, conf_path, find_tool, server_address)
from mailops.lab.supervisor import Daemon, NotReady
from mailops.lab.system import cmdline, pid_alive


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _conf_of(cmdline: list[str]) -> str | None:
    if not cmdline or os.path.basename(cmdline[0]) != "named":
        return None
    for i, a in enumerate(cmdline):
        if a == "-c" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if a.startswith("-c") and len(a) > 2:
            return a[2:]
    return None


def _serves(pid: int, state_dir: Path) -> bool:
    """True if pid is a named reading state_dir's named.conf."""
    conf = _conf_of(_cmdline(pid))
    return conf is not None and os.path.realpath(conf) == os.path.realpath(state_dir / CONF_NAME)


def _lab_state_dir(pid: int) -> Path | None:
    """The state directory of a named whose config write_config generated (MARKER), else None."""
    conf = _conf_of(_cmdline(pid))
    try:
        with open(conf) as f:
            return Path(conf).parent if f.readline().rstrip("\n") == MARKER else None
    except (OSError, TypeError):
        return None


def daemon(state_dir: Path) -> Daemon:
    """named of state_dir as a supervised lab service (named writes its own pid file)."""
    state_dir = Path(state_dir)
    return Daemon("named", str(state_dir / CONF_NAME), state_dir / PID_NAME, state_dir / LOG_NAME,
                  owns=lambda pid: _serves(pid, state_dir))


def running_pid(cfg: DNSServerConfig) -> int | None:
    """PID of the named serving cfg.state_dir (from its pid file, verified via /proc), or None."""
    return daemon(cfg.state_dir).running_pid()


def _probe_port(addr: str, port: int) -> None:
    """Bind addr:port (UDP and TCP) ourselves, without SO_REUSEPORT: named sets SO_REUSEPORT, so a
    second named on the same port would silently share it instead of failing."""
    fam = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
    for kind, label in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        s = socket.socket(fam, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
            s.bind((addr, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MailopsError(
                    f"cannot start named: {addr} port {port}/{label} is already in use (another DNS server running?)"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise MailopsError(
                    f"cannot start named: {addr} is not an address of this host (bring the lab network up first)"
                ) from None
            if e.errno == errno.EACCES:
                raise MailopsError(f"cannot start named: binding {addr} port {port} needs root") from None
            raise MailopsError(f"cannot start named: binding {addr} port {port}/{label}: {e.strerror}") from None
        finally:
            s.close()


_TS = re.compile(r"^\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2}\.\d{3} ")


def _log_lines(text: str) -> list[str]:
    return [_TS.sub("", ln).strip() for ln in text.splitlines() if ln.strip()]


def _startup_problem(lines: list[str], cfg: DNSServerConfig, exited: bool) -> str | None:
    """The log line explaining why named is not (properly) up, or None."""
    for i, ln in enumerate(lines):
        if re.search(r"creating IPv[46] interface .* failed", ln):
            prev = lines[i - 1] if i else ""
            m = re.search(r"listening on IPv[46] interface \S+, (\S+)", prev)
            where = m.group(1) if m else "a listen address"
            return f"could not listen on {where} (address in use?): {ln}"
        if re.search(r"address in use|could not listen|permission denied", ln, re.I):
            return ln
        if "not loaded due to errors" in ln:
            zone = ln.split(":", 1)[0]
            detail = [x for x in lines[:i] if x.startswith(zone) and re.search(r"error|fail|not|bad|ignoring", x)]
            return detail[-1] if detail else ln
    if exited:
        for i, ln in enumerate(lines):
            if ln.startswith("exiting (due to fatal error"):
                before = [x for x in lines[:i] if not x.startswith("exiting")]
                located = [x for x in before if re.match(r"\S+:\d+: ", x)]  # "named.conf:25: unknown option"
                bad = [
                    x for x in before
                    if re.search(r"error|fail|unable|not found|invalid|denied|unknown", x, re.I)
                    and not x.startswith("loading configuration: failure")
                ]
                return (located or bad or before or [ln])[-1]
        bad = [x for x in lines if re.search(r"error|fail|unable|invalid|denied|usage", x, re.I)]
        if bad:
            return bad[-1]
        return lines[-1] if lines else "no output"
    return None


def _missing_listeners(lines: list[str], cfg: DNSServerConfig) -> list[str]:
    listening = set()
    for ln in lines:
        m = re.search(r"listening on IPv[46] interface \S+, (\S+)#(\d+)$", ln)
        if m:
            listening.add((ipaddress.ip_address(m.group(1).split("%")[0]), int(m.group(2))))
    want = [ipaddress.ip_address(a) for a in list(cfg.listen_v4) + list(cfg.listen_v6)]
    return [str(a) for a in want if (a, cfg.port) not in listening]


def _soa_ok(addr: str, port: int, zone: str) -> bool:
    q = dns.message.make_query(zone, "SOA")  # RD=1 like a stub resolver
    try:
        r = dns.query.udp(q, addr, port=port, timeout=0.5)
    except (dns.exception.DNSException, OSError):
        return False
    return r.rcode() == dns.rcode.NOERROR and bool(r.flags & dns.flags.AA) and bool(r.answer)


def start(cfg: DNSServerConfig, timeout: float = 15.0) -> int:
    """Start named for cfg (write_config first) in its own session, stdout/stderr to
    state_dir/named.log; wait until it answers SOA (AA) for every zone on the first listen
    address; return its PID. Any failure stops what was started and raises MailopsError."""
    named = find_tool("named")
    conf = conf_path(cfg)
    if not conf.exists():
        raise MailopsError(f"{conf} does not exist: run write_config first")
    pid = running_pid(cfg)
    if pid:
        raise MailopsError(f"named for {cfg.state_dir} is already running (pid {pid})")
    addr = server_address(cfg)
    for a in list(cfg.listen_v4) + list(cfg.listen_v6):
        _probe_port(a, cfg.port)
    log = cfg.state_dir / LOG_NAME
    try:
        if log.exists() and log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(LOG_NAME + ".1"))
        offset = log.stat().st_size if log.exists() else 0
    except OSError as e:
        raise MailopsError(f"cannot use {log}: {e.strerror}") from None
    pending = all_zones(cfg)

    def new_lines() -> list[str]:
        with open(log, "rb") as f:
            f.seek(offset)
            return _log_lines(f.read().decode(errors="replace"))

    def ready() -> bool:
        nonlocal pending
        lines = new_lines()
        problem = _startup_problem(lines, cfg, exited=False)
        if problem:
            raise NotReady(problem)
        if "running" not in lines:
            return False
        missing = _missing_listeners(lines, cfg)
        if missing:
            raise NotReady(f"not listening on {', '.join(missing)} port {cfg.port} "
                           "(named only binds addresses configured on a network interface)")
        pending = [z for z in pending if not _soa_ok(addr, cfg.port, z)]
        return not pending

    def detail(exited: bool) -> str:
        lines = new_lines()
        if exited:
            return _startup_problem(lines, cfg, exited=True)
        what = f"no authoritative SOA answer for {pending[0]} from {addr}#{cfg.port}" if "running" in lines \
            else "not finished starting"
        return f"{what}; last log line: {lines[-1] if lines else 'none'}"

    return daemon(cfg.state_dir).start([named, "-g", "-c", str(conf)], ready, timeout=timeout,
                                       waiting_for="answer for every zone", detail=detail, cwd=cfg.state_dir,
                                       write_pidfile=False, poll=0.05)


def stop(pid: int, timeout: float = 10.0, *, state_dir: Path | None = None) -> None:
    """Stop a named started by start(): SIGTERM, wait up to timeout, then SIGKILL.
    No error if it is already gone. Refuses (MailopsError) to signal a process that is not a
    mailops lab named: its cmdline must be ``named ... -c <conf>`` where <conf> is
    state_dir/named.conf (if state_dir is given) or a file generated by write_config."""
    if not pid_alive(pid):
        return
    if state_dir is None:
        state_dir = _lab_state_dir(pid)
        if state_dir is None:
            raise MailopsError(f"refusing to stop pid {pid}: it is not a mailops lab named "
                               f"({cmdline(pid).strip() or '?'})")
    daemon(state_dir).stop(pid, refuse_foreign=True, timeout=timeout)

"""`mailops lab up | status | down`: build, inspect and remove the lab.

State (which machines and services run, with their PIDs) is kept in
``<state_dir>/state.json``, outside the repository.  ``up`` is idempotent: it
only starts what is not already running.  If ``up`` fails, everything that
this call started is stopped again and the error names the failing step.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mailops.errors import MailopsError
from mailops.lab import dns, image, machine, mailbox, net, receiver, services
from mailops.lab.config import LAB_ZONE, LabConfig, Machine, check_suite
# The services' configurations are in services.py; many callers know them as core.*.
from mailops.lab.services import acme_config, cloudflare_config, dns_config  # noqa: F401
from mailops.lab.system import require_commands, require_root, run

REQUIRED_COMMANDS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "nft": "nftables",
    "named": "bind9",
    "apt-cacher-ng": "apt-cacher-ng",
    "pebble": "pebble",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}

Log = Callable[[str], None]
# machines recorded without a suite were made when the lab knew only bookworm
LEGACY_SUITE = "bookworm"


def _quiet(_: str) -> None:
    pass


# -- state -----------------------------------------------------------------
def state_file(cfg: LabConfig) -> Path:
    return cfg.state_dir / "state.json"


def load_state(cfg: LabConfig) -> dict:
    try:
        return json.loads(state_file(cfg).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise MailopsError(f"{state_file(cfg)}: unreadable lab state ({exc}); run `mailops lab down` to reset") from exc


def save_state(cfg: LabConfig, state: dict) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_file(cfg).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(state_file(cfg))


@contextmanager
def _lock(cfg: LabConfig):
    """One lab operation at a time (two `lab up` must not race)."""
    cfg.state_dir.parent.mkdir(parents=True, exist_ok=True)
    lockfile = cfg.state_dir.parent / f".{cfg.state_dir.name}.lock"
    with open(lockfile, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MailopsError(f"another mailops lab operation holds {lockfile}; wait for it to finish") from None
        yield


# -- DNS records of the machines -----------------------------------------------
def _publish_machine(cfg: LabConfig, m: Machine) -> None:
    """The 'provider' records of a machine: its lab.test name and default PTR."""
    dcfg = dns_config(cfg)
    if m.role == "vps":
        short = m.fqdn.split(".")[0]
        dns.update(dcfg, f"{LAB_ZONE}.", replace=[dns.Record(short, "A", m.ipv4), dns.Record(short, "AAAA", m.ipv6)])
    for addr, net_ in ((m.ipv4, cfg.ipv4_network), (m.ipv6, cfg.ipv6_network)):
        zone = dns.reverse_zone_for(net_)
        owner = dns.ptr_name(addr)
        # Only set the provider default PTR if none exists: `dns sync` may own it later.
        if not _has_record(dcfg, owner, "PTR"):
            dns.update(dcfg, zone, replace=[dns.Record(owner, "PTR", m.fqdn + ".")])


def _has_record(dcfg: dns.DNSServerConfig, owner: str, rtype: str) -> bool:
    from dns import message, query, rdatatype  # dnspython

    resp = query.udp(message.make_query(owner, rtype), dcfg.listen_v4[0], port=dcfg.port, timeout=3)
    return any(rr.rdtype == rdatatype.from_text(rtype) for rr in resp.answer)


# -- up ----------------------------------------------------------------------
@dataclass
class UpResult:
    status: dict
    seconds: float
    images: dict
    started: list[str] = field(default_factory=list)


def up(cfg: LabConfig | None = None, vps: int = 1, log: Log = _quiet) -> UpResult:
    cfg = cfg or LabConfig()
    require_root()
    require_commands(REQUIRED_COMMANDS)
    if not 1 <= vps <= 40:
        raise MailopsError("--vps must be between 1 and 40")
    t0 = time.monotonic()
    if not net.bridge_exists(cfg):
        found = net.conflicts(cfg)
        if found:
            raise MailopsError(f"lab network conflicts with this host: {found[0]}; choose other ranges with "
                               "MAILOPS_LAB_IPV4 / MAILOPS_LAB_IPV6")
    fresh = not state_file(cfg).exists()
    with _lock(cfg):
        state = load_state(cfg)
        state.setdefault("machines", {})
        state.setdefault("services", {})
        state["config"] = {"ipv4_network": cfg.ipv4_network, "ipv6_network": cfg.ipv6_network,
                           "bridge": cfg.bridge}
        started: list[tuple[str, Callable[[], None]]] = []
        step = "checking prerequisites"
        try:
            step = "building images"
            images = image.ensure_images(cfg, log)
            step = "creating the lab network"
            if net.up(cfg):
                started.append(("network", lambda: net.down(cfg)))
            step = "preparing the lab SSH key and secrets"
            pubkey = _ensure_ssh_key(cfg)
            _ensure_lab_secrets(cfg)
            mailbox.ensure_certificate(cfg, cfg.receiver)

            for service in services.SERVICES:
                step = service.step
                pid = services.running_pid(service, cfg, state)
                if pid is None:
                    pid = service.start(cfg)
                    started.append((service.key, lambda s=service, p=pid: services.stop(s, cfg, p)))
                    log(service.started(cfg))
                state["services"][service.key] = pid
                if service.after_start:
                    service.after_start(cfg)
            save_state(cfg, state)

            wanted = [cfg.receiver] + [cfg.vps(n) for n in range(1, vps + 1)]
            for m in wanted:
                step = f"starting machine {m.name}"
                _publish_machine(cfg, m)
                current = state["machines"].get(m.name)
                if current and machine.is_running(current):
                    if m.role == "receiver":   # a newer mailops may configure it differently
                        step = "updating the receiving host's configuration"
                        for action in receiver.reconfigure(cfg, m, current):
                            log(f"{m.name}: {action}")
                    continue
                log(f"booting {m.name} ({m.fqdn}, {m.ipv4}, {m.ipv6})")
                img, suite = image.machine_image(cfg, m)
                root = machine.prepare_root(cfg, m, img, pubkey)
                if m.role == "receiver":
                    receiver.configure_root(cfg, m, root)
                running = machine.start(cfg, m, root)
                state["machines"][m.name] = {**running.to_dict(), "suite": suite}
                started.append((m.name, lambda r=running.to_dict(): _remove_machine(cfg, r)))
                save_state(cfg, state)
                _record_host_keys(cfg, state)
                if m.role == "receiver":
                    step = "waiting for the receiving MTA"
                    _wait_receiver(cfg, running.to_dict())
            save_state(cfg, state)
            _record_host_keys(cfg, state)
        except BaseException as exc:
            for name, undo in reversed(started):
                try:
                    undo()
                except Exception:  # keep undoing the rest
                    pass
                for group in ("machines", "services"):
                    state[group].pop(name, None)
            if fresh and not state["machines"] and not state["services"]:
                shutil.rmtree(cfg.state_dir, ignore_errors=True)
            else:
                save_state(cfg, state)
            undone = ", ".join(n for n, _ in started) or "nothing"
            if isinstance(exc, MailopsError):
                raise MailopsError(f"lab up failed while {step}: {exc} (stopped again: {undone})") from exc
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise MailopsError(f"lab up failed while {step}: {exc!r} (stopped again: {undone})") from exc
    return UpResult(status=status(cfg), seconds=round(time.monotonic() - t0, 1), images=images,
                    started=[n for n, _ in started])


def _ensure_ssh_key(cfg: LabConfig) -> str:
    cfg.ssh_dir.mkdir(parents=True, exist_ok=True)
    cfg.ssh_dir.chmod(0o700)
    if not cfg.ssh_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailops-lab", "-f", str(cfg.ssh_key)],
            "generating the lab SSH key")
    cfg.ssh_key.chmod(0o600)
    return cfg.ssh_key.with_suffix(".pub").read_text()


LAB_SUBMISSION_USERS = ("alice", "news")


def _ensure_lab_secrets(cfg: LabConfig) -> None:
    """Random passwords for the lab inventory's submission users and the receiver's IMAP logins,
    and the return-path key, 0600, never printed."""
    import secrets as _secrets

    sdir = cfg.state_dir / "secrets"
    sdir.mkdir(parents=True, exist_ok=True)
    sdir.chmod(0o700)
    paths = [sdir / f"{user}.password" for user in LAB_SUBMISSION_USERS]
    paths += [mailbox.password_path(cfg, login) for login in mailbox.IMAP_LOGINS]
    for path in paths:
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(_secrets.token_urlsafe(18) + "\n")
    # the fleet's return-path key (mailops_return_path.key): 32 random bytes, hex
    path = sdir / "returnpath.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_secrets.token_hex(32) + "\n")


def _record_host_keys(cfg: LabConfig, state: dict) -> None:
    """known_hosts for every running machine, by name, FQDN and both addresses."""
    lines = []
    for m in state.get("machines", {}).values():
        names = ",".join([m["name"], m["fqdn"], m["ipv4"], m["ipv6"]])
        for pub in sorted(Path(m["root"], "etc/ssh").glob("ssh_host_*_key.pub")):
            keytype, key = pub.read_text().split()[:2]
            lines.append(f"{names} {keytype} {key}")
    cfg.known_hosts.write_text("\n".join(lines) + "\n")


def _wait_receiver(cfg: LabConfig, m: dict, timeout: float = 60) -> None:
    from mailops.lab.system import wait_tcp

    if not wait_tcp(m["ipv4"], 25, timeout):
        raise MailopsError(f"the receiving host {m['fqdn']} does not accept SMTP on {m['ipv4']}:25; "
                           f"see `mailops lab ssh {m['name']}` and journalctl -u postfix")
    # the milters and Dovecot (LMTP) must be up too, or the first message would be tempfailed
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = machine.nsenter(m["leader_pid"], "systemctl", "is-active", "postfix", "opendkim", "opendmarc",
                              "dovecot", check=False).stdout.split()
        if out and all(s == "active" for s in out):
            return
        time.sleep(0.5)
    raise MailopsError(f"the receiving host's services are not all active ({' '.join(out)})")


def _remove_machine(cfg: LabConfig, m: dict) -> None:
    machine.stop(m)
    mdir = machine.machine_dir(cfg, m["name"])
    if mdir.exists():
        shutil.rmtree(mdir)


# -- status ------------------------------------------------------------------
def status(cfg: LabConfig | None = None) -> dict:
    cfg = cfg or LabConfig()
    state = load_state(cfg)
    machines = []
    for name, m in sorted(state.get("machines", {}).items(), key=lambda kv: (kv[1]["role"] != "receiver", kv[0])):
        machines.append({"name": name, "role": m["role"], "fqdn": m["fqdn"], "ipv4": m["ipv4"], "ipv6": m["ipv6"],
                         "state": machine.system_state(m), "leader_pid": m["leader_pid"],
                         "suite": m.get("suite", LEGACY_SUITE)})
    return {
        "up": bool(machines) and all(m["state"] in ("running", "degraded") for m in machines),
        "state_dir": str(cfg.state_dir),
        "network": {"bridge": cfg.bridge, "present": net.bridge_exists(cfg), "ipv4": cfg.ipv4_network,
                    "ipv6": cfg.ipv6_network, "gateway_ipv4": cfg.gateway_ipv4, "gateway_ipv6": cfg.gateway_ipv6,
                    "firewall": net.firewall_present()},
        "machines": machines,
        "services": [services.status_row(service, cfg, state) for service in services.SERVICES],
        "ssh_key": str(cfg.ssh_key),
    }


# -- down --------------------------------------------------------------------
def down(cfg: LabConfig | None = None, log: Log = _quiet) -> dict:
    """Stop and remove everything the lab made, then check that nothing is left."""
    cfg = cfg or LabConfig()
    require_root()
    with _lock(cfg):
        state = load_state(cfg)
        machines = state.get("machines", {})
        log("stopping " + ", ".join(machines))
        # all at once: each machine's shutdown is mostly waiting for its own systemd
        with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
            list(pool.map(lambda m: _remove_machine(cfg, m), machines.values()))
        problems = []
        for service in reversed(services.SERVICES):  # the emulator mirrors into BIND: BIND last
            try:
                services.stop(service, cfg, services.running_pid(service, cfg, state))
            except MailopsError as exc:  # stop the others, then say what is left
                problems.append(str(exc))
        if problems:
            raise MailopsError("lab down could not stop every service: " + "; ".join(problems))
        net.down(cfg)
        if cfg.state_dir.exists():
            shutil.rmtree(cfg.state_dir)
    remains = leftovers(cfg)
    if remains:
        raise MailopsError("lab down left things behind: " + "; ".join(remains))
    return {"removed": True}


def leftovers(cfg: LabConfig) -> list[str]:
    """Anything of the lab still present on the host (used by `down` and by tests)."""
    found = []
    found += [f"interface {n}" for n in net.leftover_links(cfg)]
    if net.firewall_present():
        found.append(f"nftables table inet {net.NFT_TABLE}")
    state_dir = str(cfg.state_dir)
    host_pidns = os.readlink("/proc/self/ns/pid")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if state_dir in cmd:  # also catches the Cloudflare emulator (its --state is under state_dir)
            found.append(f"process {pid} ({cmd[:60].strip()})")
        elif ns != host_pidns and "systemd" in cmd and _root_under(pid, state_dir):
            found.append(f"machine init {pid}")
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        mounts = ""
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if state_dir in line]
    netns = Path("/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith("mailops")]
    if cfg.state_dir.exists():
        found.append(f"directory {cfg.state_dir}")
    return found


def _root_under(pid: str, prefix: str) -> bool:
    # A container init's root, seen from the host, resolves into the machine dir
    # only if it shares our mount namespace view; fall back to its mountinfo.
    try:
        return prefix in Path(f"/proc/{pid}/mountinfo").read_text().split("\n", 1)[0]
    except OSError:
        return False


# -- access ------------------------------------------------------------------
def ssh_argv(cfg: LabConfig, name: str, command: list[str] | None = None) -> list[str]:
    """The ssh command line for a lab machine, with strict host key checking."""
    state = load_state(cfg)
    machines = state.get("machines", {})
    m = machines.get(name) or next((v for v in machines.values() if v["fqdn"] == name), None)
    if m is None:
        known = ", ".join(sorted(machines)) or "none (run `mailops lab up`)"
        raise MailopsError(f"no lab machine named {name!r}; running machines: {known}")
    return ["ssh", "-i", str(cfg.ssh_key), "-o", f"UserKnownHostsFile={cfg.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            f"root@{m['ipv4']}", *(command or [])]


def ssh_run(cfg: LabConfig, name: str, script: str, *, input: str | bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell script on a lab machine over SSH; returns the completed process."""
    binary = isinstance(input, bytes)
    return subprocess.run(ssh_argv(cfg, name, ["sh", "-c", _shell_quote(script)]), input=input,
                          capture_output=True, text=not binary, timeout=timeout)


def _shell_quote(script: str) -> str:
    import shlex

    return shlex.quote(script)


def machine_root(cfg: LabConfig, name: str) -> Path:
    m = load_state(cfg).get("machines", {}).get(name)
    if not m:
        raise MailopsError(f"lab machine {name!r} is not running; run `mailops lab up`")
    return Path(m["root"])


def reset(cfg: LabConfig | None = None, name: str = "vps1", log: Log = _quiet, suite: str | None = None) -> dict:
    """Replace one machine with a pristine copy of its image (a re-installed VPS).

    Its addresses and names stay; its SSH host keys are new (as after a
    provider's rebuild), and known_hosts is updated accordingly.  The copy is
    of ``suite`` if given (a rebuild with another Debian, its image built if
    missing), else of the suite the machine had (bookworm for machines started
    before suites were recorded)."""
    cfg = cfg or LabConfig()
    require_root()
    with _lock(cfg):
        state = load_state(cfg)
        current = state.get("machines", {}).get(name)
        if current is None:
            known = ", ".join(sorted(state.get("machines", {}))) or "none"
            raise MailopsError(f"no lab machine named {name!r}; running machines: {known}")
        m = cfg.receiver if current["role"] == "receiver" else cfg.vps(int(name.removeprefix("vps")))
        if m.role == "receiver":
            suite = cfg.suite_for(m)
        else:
            suite = check_suite(suite) if suite else current.get("suite", LEGACY_SUITE)
            image.ensure_image(cfg, "base", suite, log)
        log(f"resetting {name} ({suite})")
        _remove_machine(cfg, current)
        img, suite = image.machine_image(cfg, m, suite)
        root = machine.prepare_root(cfg, m, img, _ensure_ssh_key(cfg))
        if m.role == "receiver":
            receiver.configure_root(cfg, m, root)
        running = machine.start(cfg, m, root)
        state["machines"][name] = {**running.to_dict(), "suite": suite}
        save_state(cfg, state)
        _record_host_keys(cfg, state)
        if m.role == "receiver":
            _wait_receiver(cfg, running.to_dict())
        return state["machines"][name]

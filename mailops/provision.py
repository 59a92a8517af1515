"""First contact with a fresh VPS (`provision new-vps`) and converging (`apply`).

new-vps never trusts a host key silently: it shows the fingerprints, and
records them only when they match what the operator expects (or the operator
confirms).  Pre-flight checks refuse servers that cannot work as a sending
server, above all a provider that blocks outbound port 25.  :func:`new_vps`
is the whole workflow; callers render its progress through callbacks.

SSH access (address, user, port, key, known_hosts file) comes from the
checked inventory's :class:`MailHost`, as Ansible would use it.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mailops.ansible import ApplyResult, TaskEvent, apply, cached_host_keys, forget_facts
from mailops.errors import MailopsError
from mailops.inventory import Inventory, MailHost

MIN_RAM_MB = 450
MIN_DISK_MB = 2000


@dataclass
class HostKey:
    keytype: str
    key: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.key)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str


def scan_host_keys(host: MailHost) -> list[HostKey]:
    port = str(host.ssh_port)
    proc = subprocess.run(["ssh-keyscan", "-T", "10", "-p", port, "-t", "ed25519,ecdsa,rsa", host.ssh_host],
                          capture_output=True, text=True, timeout=60)
    keys = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            keys.append(HostKey(parts[1], parts[2]))
    if not keys:
        raise MailopsError(f"no SSH host key from {host.ssh_host}:{port}: is the server up and is SSH open?")
    return keys


def recorded_host_keys(host: MailHost) -> list[HostKey]:
    kh = host.known_hosts
    if not kh.exists():
        return []
    proc = subprocess.run(["ssh-keygen", "-F", host.known_host_name, "-f", str(kh)], capture_output=True, text=True)
    keys = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            keys.append(HostKey(parts[1], parts[2]))
    return keys


@dataclass
class TrustDecision:
    status: str  # "known" | "recorded"
    fingerprints: list[str]
    known_hosts: Path


def establish_trust(host: MailHost, *, expect_fingerprint: str | None = None,
                    confirm: Callable[[list[HostKey]], bool] | None = None) -> TrustDecision:
    """Trust on first use, never silently."""
    scanned = scan_host_keys(host)
    recorded = recorded_host_keys(host)
    kh = host.known_hosts
    if recorded:
        if any((s.keytype, s.key) == (r.keytype, r.key) for s in scanned for r in recorded):
            return TrustDecision("known", [k.fingerprint for k in scanned], kh)
        raise MailopsError(
            f"SSH host key of {host.ssh_host} does NOT match the one recorded in {kh} "
            f"(now {scanned[0].fingerprint}); if the VPS was re-installed, remove the old key with "
            f"`ssh-keygen -R {host.known_host_name} -f {kh}` and run new-vps again, otherwise stop: "
            "someone may be intercepting the connection")
    if expect_fingerprint:
        if expect_fingerprint not in [k.fingerprint for k in scanned]:
            raise MailopsError(f"SSH host key of {host.ssh_host} is {scanned[0].fingerprint}, not the expected "
                               f"{expect_fingerprint}; refusing to trust it")
    elif confirm is None or not confirm(scanned):
        raise MailopsError(f"SSH host key of {host.ssh_host} not confirmed ({scanned[0].fingerprint}); "
                           "compare it with your provider's console and re-run with --expect-fingerprint or --yes")
    kh.parent.mkdir(parents=True, exist_ok=True)
    with open(kh, "a") as fh:
        for k in scanned:
            fh.write(f"{host.known_host_name} {k.keytype} {k.key}\n")
    return TrustDecision("recorded", [k.fingerprint for k in scanned], kh)


PREFLIGHT_SCRIPT = r"""
import os, shutil, socket, sys
info = dict(l.strip().split("=", 1) for l in open("/etc/os-release") if "=" in l)
print("os", info.get("ID", "?").strip('"'), info.get("VERSION_ID", "?").strip('"'))
mem = [l for l in open("/proc/meminfo") if l.startswith("MemTotal:")][0].split()[1]
print("ram_mb", int(mem) // 1024)
print("disk_mb", shutil.disk_usage("/").free // 2**20)
probe = sys.argv[1]
try:
    s = socket.create_connection((probe, 25), timeout=10)
    s.settimeout(10)
    banner = s.recv(200).decode(errors="replace").strip().splitlines()[0]
    s.close()
    print("smtp25", "ok", banner[:80])
except Exception as exc:
    print("smtp25", "blocked", type(exc).__name__, str(exc)[:80])
"""


def preflight(host: MailHost, smtp_probe: str) -> list[CheckResult]:
    cmd = host.ssh_command() + ["python3", "-", smtp_probe]
    proc = subprocess.run(cmd, input=PREFLIGHT_SCRIPT, capture_output=True, text=True, timeout=90)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [CheckResult("ssh", False, f"cannot run commands over SSH: {last}")]
    facts = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" ")
        facts[key] = rest
    results = [CheckResult("ssh", True, f"connected as {host.ssh_user}")]
    os_id = facts.get("os", "? ?").split()
    supported = os_id[:1] == ["debian"] and os_id[1:2] in (["12"], ["13"])
    results.append(CheckResult("os", supported, f"{' '.join(os_id)}" + ("" if supported else
                               "; mailops supports Debian 13 (trixie) and Debian 12 (bookworm): "
                               "re-install the server with one of them")))
    ram = int(facts.get("ram_mb", 0))
    results.append(CheckResult("ram", ram >= MIN_RAM_MB, f"{ram} MB" + ("" if ram >= MIN_RAM_MB else
                                                                        f"; need at least {MIN_RAM_MB} MB")))
    disk = int(facts.get("disk_mb", 0))
    results.append(CheckResult("disk", disk >= MIN_DISK_MB, f"{disk} MB free on /" + (
        "" if disk >= MIN_DISK_MB else f"; need at least {MIN_DISK_MB} MB")))
    smtp = facts.get("smtp25", "blocked ?")
    ok = smtp.startswith("ok")
    results.append(CheckResult("outbound port 25", ok, f"{smtp_probe}: " + (
        smtp[3:].strip() if ok else smtp[8:].strip() + "; outbound SMTP looks blocked by the provider: ask them to "
        "unblock port 25 (a sending server cannot deliver without it)")))
    return results


def new_vps(inventory: Inventory, host_name: str, *, expect_fingerprint: str | None = None,
            confirm: Callable[[list[HostKey]], bool] | None = None,
            on_trust: Callable[[TrustDecision], None] = lambda trust: None,
            on_check: Callable[[CheckResult], None] = lambda check: None,
            on_event: Callable[[TaskEvent], None] | None = None) -> ApplyResult:
    """First contact with a fresh server: trust its host key, pre-flight checks, forget facts, converge.

    ``confirm`` is asked (with the scanned keys) only when the key is new and no
    ``expect_fingerprint`` is given; a failed pre-flight check stops before anything
    is changed on the server. Returns the converge result (``result.ok``).
    """
    host = inventory.select_hosts(host_name)[0]
    trust = establish_trust(host, expect_fingerprint=expect_fingerprint, confirm=confirm)
    on_trust(trust)
    checks = preflight(host, inventory.smtp_probe)
    for check in checks:
        on_check(check)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise MailopsError(f"pre-flight check '{failed[0].name}' failed for {host.name}: {failed[0].detail}")
    forget_facts(host.name)  # a fresh server: never reuse facts cached for an earlier machine
    return apply(inventory.path, limit=host.name, on_event=on_event)


def forget_stale_facts(inventory: Inventory) -> list[str]:
    """Forget the cached facts of every host whose cached SSH host keys are not the ones trusted
    in known_hosts now: the server was re-installed (perhaps with another Debian release) since
    Ansible looked at it, and its roles must not take the old machine's vars.  Returns their names."""
    stale = []
    for host in inventory.hosts:
        cached = cached_host_keys(host.name)
        if cached and cached.isdisjoint((k.keytype, k.key) for k in recorded_host_keys(host)):
            forget_facts(host.name)
            stale.append(host.name)
    return stale


def converge(inventory: Inventory, *, check: bool = False, diff: bool = False, limit: str | None = None,
             tags: str | None = None, on_event: Callable[[TaskEvent], None] | None = None) -> ApplyResult:
    """Converge the inventory's hosts (``limit``: an Ansible pattern), never with a re-installed
    server's stale facts."""
    forget_stale_facts(inventory)
    return apply(inventory.path, check=check, diff=diff, limit=limit, tags=tags, on_event=on_event)

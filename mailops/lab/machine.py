"""systemd-nspawn machines: a pristine copy of an image, booted with real systemd.

A machine's identity on the host is its *leader*: the container's PID 1 as
seen from the host.  Killing the nspawn process does not stop a container
(its systemd keeps running, orphaned), so we record the leader and stop the
machine with ``systemctl poweroff`` inside it, falling back to SIGKILL of the
leader, which takes the whole PID namespace down with it.

Each machine runs in cgroups of its own.  The host has no systemd, so without
them every nspawn payload lands in the same ``payload`` cgroup: the machines'
systemds then share /system.slice/postfix.service and friends, and a unit
stopped on one machine waits out its timeout for the other machines' processes
(Debian 13's systemd tracks units in the cgroup2 hierarchy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mailops.errors import MailopsError
from mailops.lab.config import LabConfig, Machine
from mailops.lab.system import (is_ours, pid_alive, run, spawn, wait_gone, last_lines,
                                wait_tcp)


@dataclass
class RunningMachine:
    name: str
    role: str
    ipv4: str
    ipv6: str
    fqdn: str
    root: str
    nspawn_pid: int
    leader_pid: int
    pidns: str
    veth: str
    started_at: float
    cgroups: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def machine_dir(cfg: LabConfig, name: str) -> Path:
    return cfg.machines_dir / name


def root_dir(cfg: LabConfig, name: str) -> Path:
    return machine_dir(cfg, name) / "root"


def veth_name(name: str) -> str:
    # nspawn names the host side of --network-bridge "vb-" + machine name (max 15 chars).
    return ("vb-" + name)[:15]


def prepare_root(cfg: LabConfig, machine: Machine, image: Path, ssh_pubkey: str) -> Path:
    """Copy the image and give the copy its own identity, like a provider would."""
    mdir = machine_dir(cfg, machine.name)
    root = mdir / "root"
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)
    run(["cp", "-a", str(image), str(root)], f"copying the image for {machine.name}")
    (root / ".mailops-image.json").unlink(missing_ok=True)
    # Fresh SSH host keys per machine, recorded for strict host key checking.
    run(["ssh-keygen", "-A", "-f", str(root)], f"generating SSH host keys for {machine.name}")
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(ssh_pubkey.strip() + "\n")
    (ssh / "authorized_keys").chmod(0o600)
    short = machine.fqdn.split(".")[0]
    (root / "etc/hostname").write_text(short + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{machine.ipv4}\t{machine.fqdn} {short}\n{machine.ipv6}\t{machine.fqdn} {short}\n")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(f"nameserver {cfg.gateway_ipv4}\nnameserver {cfg.gateway_ipv6}\n")
    _write_network(cfg, machine, root)
    return root


def _write_network(cfg: LabConfig, machine: Machine, root: Path) -> None:
    """Static addresses via systemd-networkd, as a cloud image would have them.

    No Gateway= on purpose: the lab has no way out, only the lab network.
    """
    netdir = root / "etc/systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "10-lab.network").write_text(
        "[Match]\nName=host0\n\n[Network]\n"
        f"DNS={cfg.gateway_ipv4}\nDNS={cfg.gateway_ipv6}\n"
        "IPv6AcceptRA=no\nLinkLocalAddressing=ipv6\n\n"
        f"[Address]\nAddress={machine.ipv4}/{cfg.ipv4_prefixlen}\n\n"
        f"[Address]\nAddress={machine.ipv6}/{cfg.ipv6_prefixlen}\nDuplicateAddressDetection=none\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.is_symlink():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    sockets = root / "etc/systemd/system/sockets.target.wants"
    sockets.mkdir(parents=True, exist_ok=True)
    slink = sockets / "systemd-networkd.socket"
    if not slink.is_symlink():
        slink.symlink_to("/lib/systemd/system/systemd-networkd.socket")


def _find_leader(nspawn_pid: int, root: Path, timeout: float) -> int:
    """The container's PID 1: the nspawn child whose root is the machine root."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(nspawn_pid):
            break
        try:
            children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            pid = int(child)
            ns = pid_namespace(pid)
            if ns and ns != pid_namespace(os.getpid()):
                return pid
        time.sleep(0.05)
    raise MailopsError("systemd-nspawn did not start the machine's init")


def pid_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def leader_alive(d: dict) -> bool:
    """The recorded leader still exists and is still that machine's init."""
    leader = d.get("leader_pid")
    return pid_alive(leader) and pid_namespace(leader) == d.get("pidns")


# the cgroup hierarchies a booted systemd tracks its units in
_SYSTEMD_HIERARCHIES = (("cgroup2", ""), ("cgroup", "name=systemd"))


def _own_cgroups(name: str) -> list[Path]:
    """Create (empty) cgroups for machine `name` below ours, one per systemd hierarchy."""
    ours = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        ours[controllers] = path
    made = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_root, mount_point = fields[3], fields[4]
        fstype, options = fields[fields.index("-") + 1], fields[-1].split(",")
        for want_type, want_name in _SYSTEMD_HIERARCHIES:
            path = ours.get(want_name)
            if fstype != want_type or (want_name and want_name not in options) or path is None:
                continue
            relative = os.path.relpath(path, mount_root)
            if relative.startswith(".."):
                continue
            group = Path(mount_point, relative, "mailops-lab", name)
            try:
                group.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
            made.append(group)
    return made


def _remove_cgroups(groups: list[str]) -> None:
    """rmdir the machine's cgroups, deepest first (a cgroup is removed only when empty)."""
    for top in map(Path, groups):
        if not top.is_dir():
            continue
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                sub.rmdir()
            except OSError:
                pass
        for done in (top, top.parent):  # the parent mailops-lab/ too, once no machine is left in it
            try:
                done.rmdir()
            except OSError:
                break


def start(cfg: LabConfig, machine: Machine, root: Path, timeout: float = 60.0) -> RunningMachine:
    log = machine_dir(cfg, machine.name) / "console.log"
    cgroups = _own_cgroups(machine.name)
    cmd = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
           "--machine", machine.name, "--directory", str(root),
           f"--network-bridge={cfg.bridge}", "--resolv-conf=off", "--timezone=off",
           "--link-journal=no", "--console=passive"]
    proc = spawn(cmd, log, cgroups=cgroups)
    try:
        leader = _find_leader(proc.pid, root, timeout=20)
    except MailopsError:
        proc.kill()
        proc.wait()
        _remove_cgroups([str(g) for g in cgroups])
        raise MailopsError(f"machine {machine.name} failed to boot: {last_lines(log)}")
    running = RunningMachine(machine.name, machine.role, machine.ipv4, machine.ipv6, machine.fqdn, str(root),
                             proc.pid, leader, pid_namespace(leader), veth_name(machine.name), time.time(),
                             [str(g) for g in cgroups])
    if not wait_tcp(machine.ipv4, 22, timeout):
        stop(running)
        raise MailopsError(f"machine {machine.name} booted but SSH on {machine.ipv4}:22 did not answer "
                           f"within {timeout:.0f}s: {last_lines(log)}")
    return running


def nsenter(leader: int, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return run(["nsenter", "-t", str(leader), "-a", *cmd], f"running {cmd[0]} in the machine", timeout=timeout,
               check=check)


def is_running(m: dict | RunningMachine) -> bool:
    d = m.to_dict() if isinstance(m, RunningMachine) else m
    return leader_alive(d)


def system_state(m: dict) -> str:
    """systemd's view of the machine: running, degraded, starting... or stopped."""
    if not is_running(m):
        return "stopped"
    proc = run(["nsenter", "-t", str(m["leader_pid"]), "-a", "systemctl", "is-system-running"],
               "", check=False, timeout=15)
    return proc.stdout.strip() or "unknown"


def stop(m: dict | RunningMachine, timeout: float = 30.0) -> None:
    d = m.to_dict() if isinstance(m, RunningMachine) else m
    leader, root, nspawn_pid = d.get("leader_pid"), d.get("root", "/nonexistent"), d.get("nspawn_pid")
    if leader_alive(d):
        run(["nsenter", "-t", str(leader), "-a", "systemctl", "poweroff", "--no-block"], "", check=False, timeout=15)
        if not wait_gone(leader, timeout) and leader_alive(d):
            # SIGKILL of a PID namespace's init kills every process in it.
            os.kill(leader, 9)
            wait_gone(leader, 10)
    if is_ours(nspawn_pid, root):
        wait_gone(nspawn_pid, 10) or os.kill(nspawn_pid, 9)
        wait_gone(nspawn_pid, 5)
    _remove_cgroups(d.get("cgroups", []))
    veth = d.get("veth")
    if veth and Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "del", veth], f"removing {veth}", check=False)

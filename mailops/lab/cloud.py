"""The lab as a cloud: the Hetzner Cloud API emulator's servers are real lab machines.

:class:`LabMachines` is the emulator's machine backend (hcloudemu_servers).
"Create server" takes the first free lab VPS number from ``FIRST_NUMBER`` on
(vps20+, so never one of the lab's own vps1..vps12) with that number's lab
addresses, copies the base image of the requested Debian release, and plays
cloud-init on the copy before it boots: the hostname is the server name, the
API's SSH keys go into root's authorized_keys, and the ``user_data``
cloud-config's ``ssh_keys``/``ssh_deletekeys``/``ssh_genkeytypes`` decide the
host keys.  "Delete server" stops and removes the machine.  PTR changes are
mirrored into the lab BIND's reverse zones, which is where the lab's receiver
and resolvers see them (as the world sees Hetzner's reverse DNS).

The server's IPv6 Primary IP is the lab's shared /64 (the lab has one); the
machine's own address in it is its lab address, which the server reports
over SSH like any server configured by cloud-init.

Machines are recorded in the lab state like the lab's own, so ``lab status``,
``lab ssh`` and ``lab down`` know them.
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
from pathlib import Path
from typing import Any

import yaml

from mailops.errors import MailopsError
from mailops.lab import core, dns, image, machine
from mailops.lab.config import LabConfig, Machine

FIRST_NUMBER, LAST_NUMBER = 20, 40
SUITES = {"debian-12": "bookworm", "debian-13": "trixie"}
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


class LabMachines:
    """Machine backend of the hcloud emulator: lab machines vps20..vps40."""

    def __init__(self, cfg: LabConfig | None = None):
        self.cfg = cfg or LabConfig()
        self._claimed: set[int] = set()  # numbers allocated but maybe not yet in the lab state
        self._lock = threading.Lock()

    # --- backend interface ---------------------------------------------------

    def allocate(self, name: str, image_name: str, ipv4: bool, ipv6: bool) -> tuple[str | None, str | None, Any]:
        suite = SUITES.get(image_name)
        path = image.image_path(self.cfg, "base", suite) if suite else None
        if path is None or not path.is_dir():
            raise ValueError(f"image {image_name!r} has no base image in this lab"
                             + (f" ({path}); build it with mailops lab up --suite {suite}" if suite else ""))
        with self._lock:
            taken = set(core.load_state(self.cfg).get("machines", {})) | {f"vps{n}" for n in self._claimed}
            number = next((n for n in range(FIRST_NUMBER, LAST_NUMBER + 1) if f"vps{n}" not in taken), None)
            if number is None:
                raise ValueError(f"the lab has no free machine number in vps{FIRST_NUMBER}..vps{LAST_NUMBER}")
            self._claimed.add(number)
        lab = self.cfg.vps(number)
        m = Machine(lab.name, "vps", lab.ipv4, lab.ipv6, name)  # hostname = server name, as on Hetzner
        return lab.ipv4 if ipv4 else None, self.cfg.ipv6_network if ipv6 else None, (m, path, number, suite)

    def boot(self, handle: Any, ssh_public_keys: list[str], user_data: str | None) -> None:
        m, path, number, suite = handle
        try:
            root = machine.prepare_root(self.cfg, m, path, "\n".join(ssh_public_keys))
            cloud_init(root, user_data)
            running = machine.start(self.cfg, m, root)
            with core._lock(self.cfg):
                state = core.load_state(self.cfg)
                state.setdefault("machines", {})[m.name] = {**running.to_dict(), "suite": suite}
                core.save_state(self.cfg, state)
                core._record_host_keys(self.cfg, state)
        finally:
            with self._lock:
                self._claimed.discard(number)

    def remove(self, handle: Any) -> None:
        m = handle[0]
        with core._lock(self.cfg):
            state = core.load_state(self.cfg)
            current = state.get("machines", {}).pop(m.name, None)
            if current is not None:
                core._remove_machine(self.cfg, current)
            core.save_state(self.cfg, state)
            core._record_host_keys(self.cfg, state)

    def ptr_changed(self, address: str, hostname: str | None) -> None:
        ip = ipaddress.ip_address(address)
        network = self.cfg.ipv4_network if ip.version == 4 else self.cfg.ipv6_network
        if ip not in ipaddress.ip_network(network):
            return
        owner = dns.ptr_name(address)
        zone = dns.reverse_zone_for(network)
        if hostname:
            dns.update(core.dns_config(self.cfg), zone, replace=[dns.Record(owner, "PTR", hostname.rstrip(".") + ".")])
        else:
            dns.update(core.dns_config(self.cfg), zone, delete=[(owner, "PTR")])


def cloud_init(root: Path, user_data: str | None) -> None:
    """What cloud-init does with a cloud-config's SSH host key settings, done on the machine root."""
    config: dict = {}
    if user_data and user_data.startswith("#cloud-config"):
        try:
            config = yaml.safe_load(user_data) or {}
        except yaml.YAMLError as exc:
            raise MailopsError(f"cloud-init: user_data is not valid YAML ({exc})") from None
    keys = config.get("ssh_keys") or {}
    sshd = root / "etc/ssh"
    if config.get("ssh_deletekeys", True) and keys:
        for old in sshd.glob("ssh_host_*_key*"):
            old.unlink()
    for keytype in HOST_KEY_TYPES:
        private, public = keys.get(f"{keytype}_private"), keys.get(f"{keytype}_public")
        if private and public:
            target = sshd / f"ssh_host_{keytype}_key"
            target.write_text(private if private.endswith("\n") else private + "\n")
            target.chmod(0o600)
            target.with_suffix(".pub").write_text(public.strip() + "\n")
    for keytype in config.get("ssh_genkeytypes", HOST_KEY_TYPES):
        target = sshd / f"ssh_host_{keytype}_key"
        if keytype in HOST_KEY_TYPES and not target.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", keytype, "-N", "", "-f", str(target)], check=True,
                           capture_output=True, timeout=60)

"""Servers at a cloud provider: create one for a new mail host, find it again, delete it.

The interface (:class:`ServerProvider`) is what ``provision new-vps --create``
and ``provision destroy`` need; ``hcloud`` (Hetzner Cloud, through the official
library) is the one implementation.  Provider settings are not a second
inventory section: a server provider is a reverse DNS provider of type hcloud
in ``mailops_reverse_dns_providers`` (the same project token creates the server
and sets its PTRs), so a host made this way names it as its
``mailops_reverse_dns_provider``.

The server's SSH host key is made here, before the server exists, and given to
the provider in cloud-init ``user_data`` (``ssh_keys:``), so mailops knows the
key before first contact and never trusts on first use.  The trade-off: the
private host key passes through the provider's API and metadata service (which
already holds the server's disk).  A server found again whose key was never
recorded (a run stopped between create and record) goes through the usual
first contact: ``--expect-fingerprint`` or a confirmation.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mailops.errors import MailopsError

# Label every server mailops creates carries; find and delete only touch servers with it.
MANAGED_LABEL = ("managed-by", "mailops")


@dataclass(frozen=True)
class HostKeyPair:
    """An ed25519 SSH host key made for a server before it exists (OpenSSH formats)."""
    private: str
    public: str  # "ssh-ed25519 AAAA... comment"

    @classmethod
    def generate(cls, comment: str) -> HostKeyPair:
        with tempfile.TemporaryDirectory(prefix="mailops-hostkey-") as tmp:  # 0700, removed at once
            path = Path(tmp) / "key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                           check=True, capture_output=True, timeout=30)
            return cls(path.read_text(), path.with_suffix(".pub").read_text().strip())

    def cloud_config(self) -> str:
        """cloud-init user_data installing this key as the server's only host key."""
        indented = "".join(f"    {line}\n" for line in self.private.strip().splitlines())
        return ("#cloud-config\n"
                "# the SSH host key mailops recorded before the server existed\n"
                "ssh_deletekeys: true\n"
                "ssh_genkeytypes: []\n"
                "ssh_keys:\n"
                "  ed25519_private: |\n" + indented +
                f"  ed25519_public: {self.public}\n")


@dataclass(frozen=True)
class ServerSpec:
    name: str
    server_type: str = "cx22"
    location: str = "fsn1"
    image: str = "debian-13"
    ssh_public_key: str = ""
    host_key: HostKeyPair | None = None
    ipv4: bool = True
    ipv6: bool = True
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Server:
    id: int
    name: str
    status: str
    ipv4: str | None
    ipv6_network: str | None  # the server's IPv6 /64
    server_type: str
    location: str
    image: str | None
    managed: bool  # carries MANAGED_LABEL

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ServerProvider(Protocol):
    name: str

    def find(self, name: str) -> Server | None: ...

    def create(self, spec: ServerSpec) -> Server: ...

    def delete(self, server: Server) -> None: ...


def server_provider(inv, name: str) -> ServerProvider:
    """The server provider ``name`` of the inventory (a reverse DNS provider of type hcloud)."""
    cfg = inv.reverse_dns_providers.get(name)
    hcloud_names = sorted(n for n, p in inv.reverse_dns_providers.items() if p.type == "hcloud")
    if cfg is None and name == "hcloud" and len(hcloud_names) == 1:
        name, cfg = hcloud_names[0], inv.reverse_dns_providers[hcloud_names[0]]
    if cfg is None or cfg.type != "hcloud":
        have = ", ".join(hcloud_names) or "none"
        raise MailopsError(f"{inv.path}: --provider {name}: no hcloud provider of that name in "
                           f"mailops_reverse_dns_providers (hcloud providers: {have}); add one with type: hcloud "
                           "and api_token: its project token creates the server and sets its PTRs")
    from mailops.cloud.hcloud import HcloudServers
    try:
        token = inv.secret(cfg.api_token)
    except MailopsError as exc:
        raise MailopsError(f"{inv.path}: mailops_reverse_dns_providers.{name}.api_token: {exc}") from None
    return HcloudServers(name, token, cfg.api_base_url)

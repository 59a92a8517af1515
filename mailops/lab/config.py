"""Lab layout: addresses, names and directories, in one place.

Every address is derived from the two lab networks so that a different range
(``MAILOPS_LAB_IPV4`` / ``MAILOPS_LAB_IPV6``) moves the whole lab consistently.
The defaults are documentation ranges (RFC 5737 TEST-NET-2, RFC 3849) that this
kind of machine does not use for anything else.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/mailops/lab"
DEFAULT_CACHE_DIR = "/var/cache/mailops"

# Forward zones the lab DNS serves.  lab.test holds the "provider" names of the
# machines; shop.test and news.test are the sending domains of the lab
# inventory; inbox.test is the receiving host's mailbox domain.
LAB_ZONE = "lab.test"
SENDING_ZONES = ("shop.test", "news.test")
MAILBOX_DOMAIN = "inbox.test"
DNSBL_ZONE = "dnsbl.test"

# Debian suites the lab builds images of (Debian's archive serves both).
# The roles support both; new VPSes get trixie (13), what a provider's fresh
# Debian VPS runs today.
SUITES = ("trixie", "bookworm")
DEFAULT_SUITE = "trixie"
# The receiving host is not a machine under test: it stays on the suite its
# Dovecot configuration (mailbox.py, 2.3 syntax) is written for.
RECEIVER_SUITE = "bookworm"

RECEIVER_NAME = "mx"
RECEIVER_FQDN = f"mx.{MAILBOX_DOMAIN}"


@dataclass(frozen=True)
class Machine:
    """A lab machine: a name, its role, and its addresses on the lab network."""

    name: str
    role: str  # "vps" or "receiver"
    ipv4: str
    ipv6: str
    fqdn: str


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise ValueError(f"lab suite {suite!r} is not one of {', '.join(SUITES)}")
    return suite


def parse_vps_suites(text: str) -> dict[int, str]:
    """"8=bookworm,9=trixie" -> {8: "bookworm", 9: "trixie"} (VPS number = suite)."""
    result = {}
    for part in filter(None, (p.strip() for p in text.replace(" ", ",").split(","))):
        number, sep, suite = part.partition("=")
        if not sep or not number.strip().removeprefix("vps").isdigit():
            raise ValueError(f"VPS suite {part!r} must look like 8=bookworm (VPS number = suite)")
        result[int(number.strip().removeprefix("vps"))] = check_suite(suite.strip())
    return result


@dataclass
class LabConfig:
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("MAILOPS_LAB_DIR", DEFAULT_STATE_DIR)))
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("MAILOPS_CACHE_DIR", DEFAULT_CACHE_DIR)))
    ipv4_network: str = field(default_factory=lambda: os.environ.get("MAILOPS_LAB_IPV4", "198.51.100.0/24"))
    ipv6_network: str = field(default_factory=lambda: os.environ.get("MAILOPS_LAB_IPV6", "2001:db8:51::/64"))
    bridge: str = "mo-lab0"
    # the suite of every VPS unless vps_suites names another for a VPS number
    # (MAILOPS_LAB_SUITE, MAILOPS_LAB_VPS_SUITES="8=bookworm,9=bookworm")
    suite: str = field(default_factory=lambda: os.environ.get("MAILOPS_LAB_SUITE", DEFAULT_SUITE))
    vps_suites: dict[int, str] = field(default_factory=lambda: parse_vps_suites(
        os.environ.get("MAILOPS_LAB_VPS_SUITES", "")))
    mirror: str = field(default_factory=lambda: os.environ.get("MAILOPS_LAB_MIRROR", "http://deb.debian.org/debian"))
    proxy_port: int = 3142
    # TCP ports of host services lab machines may reach on the gateway
    # (DNS, apt proxy, and room for the Cloudflare emulator and ACME CA).
    gateway_tcp_ports: tuple[int, ...] = (53, 3142, 8787, 14000, 15000)
    gateway_udp_ports: tuple[int, ...] = (53,)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.cache_dir = Path(self.cache_dir)
        v4 = ipaddress.ip_network(self.ipv4_network, strict=True)
        v6 = ipaddress.ip_network(self.ipv6_network, strict=True)
        if v4.version != 4 or v4.prefixlen > 26:
            raise ValueError(f"lab IPv4 network {self.ipv4_network} must be an IPv4 network of /26 or larger")
        if v6.version != 6 or v6.prefixlen > 120:
            raise ValueError(f"lab IPv6 network {self.ipv6_network} must be an IPv6 network of /120 or larger")
        self._v4 = v4
        self._v6 = v6
        for suite in (self.suite, *self.vps_suites.values()):
            check_suite(suite)

    def suite_for(self, machine: "Machine") -> str:
        """The suite a new copy of this machine is made from."""
        if machine.role == "receiver":
            return RECEIVER_SUITE
        return self.vps_suites.get(int(machine.name.removeprefix("vps")), self.suite)

    # -- addresses -------------------------------------------------------
    def _host(self, index: int) -> tuple[str, str]:
        # IPv6 host parts reuse the decimal digits of the IPv4 part (::11 for
        # .11) so that addresses are easy to read side by side.
        v6 = self._v6.network_address + int(str(index), 16)
        return str(self._v4.network_address + index), str(v6)

    @property
    def gateway_ipv4(self) -> str:
        return self._host(1)[0]

    @property
    def gateway_ipv6(self) -> str:
        return self._host(1)[1]

    @property
    def ipv4_prefixlen(self) -> int:
        return self._v4.prefixlen

    @property
    def ipv6_prefixlen(self) -> int:
        return self._v6.prefixlen

    @property
    def receiver(self) -> Machine:
        v4, v6 = self._host(2)
        return Machine(RECEIVER_NAME, "receiver", v4, v6, RECEIVER_FQDN)

    def vps(self, number: int) -> Machine:
        if not 1 <= number <= 40:
            raise ValueError("lab VPS numbers run from 1 to 40")
        v4, v6 = self._host(10 + number)
        name = f"vps{number}"
        return Machine(name, "vps", v4, v6, f"{name}.{LAB_ZONE}")

    # -- paths -----------------------------------------------------------
    @property
    def machines_dir(self) -> Path:
        return self.state_dir / "machines"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    @property
    def apt_cache_dir(self) -> Path:
        return self.cache_dir / "apt-cacher-ng"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.gateway_ipv4}:{self.proxy_port}"

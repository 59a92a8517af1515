"""The lab DNS server's data: its configuration, records, and the names it serves
(reverse zones, PTR and DNSBL owner names).  See dns.py for the whole picture."""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from mailops.errors import MailopsError, PrerequisiteMissing

TSIG_ALGORITHM = "hmac-sha256"
MARKER = "// mailops.lab.dns generated configuration - do not edit, rerun write_config"

SOA_TTL = 60
NS_TTL = 300
SOA_REFRESH = 300
SOA_RETRY = 60
SOA_EXPIRE = 86400
SOA_NEGATIVE_TTL = 30  # SOA minimum: negative answers are cached for 30 s only

CONF_NAME = "named.conf"
KEY_FILE = "tsig.key"
SECRET_FILE = "tsig.secret"
LOG_NAME = "named.log"
PID_NAME = "named.pid"
MANIFEST_NAME = "zones.json"
LOG_ROTATE_BYTES = 5 * 1024 * 1024

DNSBL_DEFAULT_CODE = "127.0.0.2"
# RFC 5782 section 5: a DNSxL MUST list 127.0.0.2 (and ::FFFF:7F00:2) and MUST NOT list 127.0.0.1.
DNSBL_TEST_ADDRESSES = ("127.0.0.2", "::ffff:7f00:2")


# --------------------------------------------------------------------------- data


@dataclass
class Record:
    """One resource record. ``name`` is relative to the zone (``"@"`` is the apex) or absolute
    (ends with a dot). ``value`` is the RDATA in zone-file syntax; TXT values that are not
    already quoted are quoted and split into 255-byte strings automatically."""

    name: str
    type: str
    value: str
    ttl: int = 300


@dataclass
class DNSServerConfig:
    state_dir: Path
    listen_v4: list[str]
    listen_v6: list[str]
    port: int = 53
    tsig_key_name: str = "mailops-lab."
    zones: dict[str, list[Record]] = field(default_factory=dict)
    nameserver_name: str = "ns1.lab.test."
    dnsbl_zone: str | None = "dnsbl.test."

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.listen_v4 = list(self.listen_v4)
        self.listen_v6 = list(self.listen_v6)


# --------------------------------------------------------------------------- names


def abs_name(text: str, what: str) -> dns.name.Name:
    try:
        name = dns.name.from_text(text)
    except dns.exception.DNSException as e:
        raise MailopsError(f"invalid {what} {text!r}: {e}") from None
    return name


def reverse_zone_for(network: str) -> str:
    """Reverse zone of a network: "198.51.100.0/24" -> "100.51.198.in-addr.arpa.",
    "2001:db8:51::/64" -> "0.0.0.0.1.5.0.0.8.b.d.0.1.0.0.2.ip6.arpa." (16 nibbles).
    The prefix must fall on an octet (IPv4) or nibble (IPv6) boundary; host bits are ignored."""
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError as e:
        raise MailopsError(f"invalid network {network!r}: {e}") from None
    step = 8 if net.version == 4 else 4
    if net.prefixlen == 0 or net.prefixlen % step:
        raise MailopsError(
            f"cannot make a reverse zone for {network}: the prefix length must be a non-zero "
            f"multiple of {step} for IPv{net.version} (classless RFC 2317 delegation is not supported)"
        )
    labels = dns.reversename.from_address(str(net.network_address)).labels
    keep = net.prefixlen // step
    suffix = 2  # in-addr.arpa / ip6.arpa, plus the root label below
    full = len(labels) - 1 - suffix  # labels of the address part
    return dns.name.Name(labels[full - keep :]).to_text()


def ptr_name(address: str) -> str:
    """PTR owner name for an address: "198.51.100.10" -> "10.100.51.198.in-addr.arpa."."""
    try:
        ipaddress.ip_address(address)
        return dns.reversename.from_address(address).to_text()
    except (ValueError, dns.exception.DNSException) as e:
        raise MailopsError(f"invalid IP address {address!r}: {e}") from None


def dnsbl_name(address: str, zone: str) -> str:
    """DNSBL query name for an address in a DNSBL zone: reversed octets (IPv4, RFC 5782) or
    reversed nibbles (IPv6), e.g. ("192.0.2.99", "dnsbl.test.") -> "99.2.0.192.dnsbl.test."."""
    rev = dns.name.from_text(ptr_name(address))
    base = abs_name(zone, "DNSBL zone")
    return dns.name.Name(rev.labels[:-3] + base.labels).to_text()


def all_zones(cfg: DNSServerConfig) -> list[str]:
    """Every zone the server serves (absolute, lower case): cfg.zones plus the DNSBL zone."""
    return list(zone_plan(cfg).keys())


def conf_path(cfg: DNSServerConfig) -> Path:
    return cfg.state_dir / CONF_NAME


def server_address(cfg: DNSServerConfig) -> str:
    """The first listen address (IPv4 first), where start() probes and update() sends."""
    addrs = list(cfg.listen_v4) + list(cfg.listen_v6)
    if not addrs:
        raise MailopsError("DNS server config has no listen address (listen_v4 and listen_v6 are empty)")
    return addrs[0]


# --------------------------------------------------------------------------- records


def _quote_txt(value: str) -> str:
    v = value.strip()
    if v.startswith('"'):
        return value
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    out = []
    for chunk in chunks:
        text = chunk.decode("utf-8", errors="surrogateescape")
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'"{text}"')
    return " ".join(out)


def to_rdata(zone: dns.name.Name, rtype: str, value: str) -> dns.rdata.Rdata:
    try:
        rdtype = dns.rdatatype.from_text(rtype.upper())
    except dns.exception.DNSException:
        raise MailopsError(f"unknown record type {rtype!r} in zone {zone}") from None
    if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
        value = _quote_txt(value)
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=zone, relativize=False)
    except (dns.exception.DNSException, ValueError) as e:
        raise MailopsError(f"invalid {rtype.upper()} value {value!r} in zone {zone}: {e}") from None


def owner_name(zone: dns.name.Name, name: str) -> dns.name.Name:
    try:
        owner = dns.name.from_text(name, origin=zone)
    except dns.exception.DNSException as e:
        raise MailopsError(f"invalid record name {name!r} in zone {zone}: {e}") from None
    if not owner.is_subdomain(zone):
        raise MailopsError(f"record name {owner} is outside zone {zone}")
    return owner


def as_record(item) -> Record:
    if isinstance(item, Record):
        return item
    if isinstance(item, (tuple, list)) and 3 <= len(item) <= 4:
        return Record(*item)
    raise MailopsError(f"expected a Record or (name, type, value[, ttl]), got {item!r}")


# --------------------------------------------------------------------------- planning


def zone_plan(cfg: DNSServerConfig) -> dict[str, list[Record]]:
    """Normalised zone -> records, including the DNSBL zone and the nameserver's addresses."""
    plan: dict[str, list[Record]] = {}
    for zone, records in cfg.zones.items():
        z = abs_name(zone if zone.endswith(".") else zone + ".", "zone name").to_text().lower()
        if z in plan:
            raise MailopsError(f"zone {z} is configured twice")
        plan[z] = [as_record(r) for r in records]
    if cfg.dnsbl_zone:
        z = abs_name(cfg.dnsbl_zone if cfg.dnsbl_zone.endswith(".") else cfg.dnsbl_zone + ".",
                      "DNSBL zone").to_text().lower()
        records = plan.setdefault(z, [])
        for addr in DNSBL_TEST_ADDRESSES:
            owner = dnsbl_name(addr, z)
            records.append(Record(owner, "A", DNSBL_DEFAULT_CODE))
            records.append(Record(owner, "TXT", f"RFC 5782 test entry {addr}"))
    if not plan:
        raise MailopsError("DNS server config has no zones")
    ns = abs_name(cfg.nameserver_name, "nameserver name")
    holders = [z for z in plan if ns.is_subdomain(dns.name.from_text(z))]
    if holders:
        home = max(holders, key=lambda z: len(dns.name.from_text(z)))
        zn = dns.name.from_text(home)
        existing = {(owner_name(zn, r.name), r.type.upper()) for r in plan[home]}
        for rtype, addrs in (("A", cfg.listen_v4), ("AAAA", cfg.listen_v6)):
            if (ns, rtype) in existing:
                continue
            for a in addrs:
                plan[home].append(Record(ns.to_text(), rtype, a, NS_TTL))
    return plan


def find_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise PrerequisiteMissing(f"{name} not found: install BIND 9 (Debian: apt-get install bind9 bind9-utils)")
    return path

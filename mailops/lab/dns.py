"""The lab's authoritative DNS server: a BIND 9 ``named`` run as a plain process.

The lab gateway serves the lab's forward zones, the reverse zones of the lab
subnets and a DNSBL zone.  Every zone accepts TSIG-signed RFC 2136 updates and
TSIG-signed AXFR with one lab key.  The server is authoritative-only
(``recursion no``): lab machines may use it as their resolver, and it answers
its own zones (also for queries with RD=1) and REFUSES everything else.  It
never recurses or forwards.

Everything ``named`` reads or writes lives in ``DNSServerConfig.state_dir``:

    named.conf            generated configuration (first line is MARKER)
    tsig.key  tsig.secret the lab TSIG key (BIND key clause / bare base64), 0600
    db.<zone>             zone files; named writes db.<zone>.jnl journals beside them
    named.log             named's stdout/stderr (named runs with -g)
    named.pid named.lock session.key managed-keys.bind*   named's own files
    zones.json            what write_config last wrote (to detect dynamic changes)

Typical use::

    cfg = DNSServerConfig(state_dir=Path("/var/lib/mailops/lab/dns"),
                          listen_v4=["198.51.100.1"], listen_v6=["2001:db8:51::1"],
                          zones={"lab.test.": [Record("mx1", "A", "198.51.100.10")],
                                 reverse_zone_for("198.51.100.0/24"):
                                     [Record(ptr_name("198.51.100.10"), "PTR", "mx1.lab.test.")]})
    write_config(cfg)
    pid = start(cfg)
    update(cfg, "lab.test.", add=[Record("www", "A", "198.51.100.20")])
    stop(pid, state_dir=cfg.state_dir)

This module is a library: it never imports click and reports every failure as a
one-line ``MailopsError``.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.tsig
import dns.update

from mailops.errors import MailopsError, PrerequisiteMissing

__all__ = [
    "DNSServerConfig",
    "Record",
    "TSIG_ALGORITHM",
    "all_zones",
    "clear_dnsbl_listing",
    "conf_path",
    "dnsbl_name",
    "ptr_name",
    "reverse_zone_for",
    "running_pid",
    "server_address",
    "set_dnsbl_listing",
    "start",
    "stop",
    "tsig_keyring",
    "tsig_secret",
    "update",
    "write_config",
]

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

# Popen objects of the nameds this process started, so stop() can reap them.
_PROCS: dict[int, subprocess.Popen] = {}


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


def _abs_name(text: str, what: str) -> dns.name.Name:
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
    base = _abs_name(zone, "DNSBL zone")
    return dns.name.Name(rev.labels[:-3] + base.labels).to_text()


def all_zones(cfg: DNSServerConfig) -> list[str]:
    """Every zone the server serves (absolute, lower case): cfg.zones plus the DNSBL zone."""
    return list(_zone_plan(cfg).keys())


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


def _rdata(zone: dns.name.Name, rtype: str, value: str) -> dns.rdata.Rdata:
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


def _owner(zone: dns.name.Name, name: str) -> dns.name.Name:
    try:
        owner = dns.name.from_text(name, origin=zone)
    except dns.exception.DNSException as e:
        raise MailopsError(f"invalid record name {name!r} in zone {zone}: {e}") from None
    if not owner.is_subdomain(zone):
        raise MailopsError(f"record name {owner} is outside zone {zone}")
    return owner


def _as_record(item) -> Record:
    if isinstance(item, Record):
        return item
    if isinstance(item, (tuple, list)) and 3 <= len(item) <= 4:
        return Record(*item)
    raise MailopsError(f"expected a Record or (name, type, value[, ttl]), got {item!r}")


# --------------------------------------------------------------------------- planning


def _zone_plan(cfg: DNSServerConfig) -> dict[str, list[Record]]:
    """Normalised zone -> records, including the DNSBL zone and the nameserver's addresses."""
    plan: dict[str, list[Record]] = {}
    for zone, records in cfg.zones.items():
        z = _abs_name(zone if zone.endswith(".") else zone + ".", "zone name").to_text().lower()
        if z in plan:
            raise MailopsError(f"zone {z} is configured twice")
        plan[z] = [_as_record(r) for r in records]
    if cfg.dnsbl_zone:
        z = _abs_name(cfg.dnsbl_zone if cfg.dnsbl_zone.endswith(".") else cfg.dnsbl_zone + ".",
                      "DNSBL zone").to_text().lower()
        records = plan.setdefault(z, [])
        for addr in DNSBL_TEST_ADDRESSES:
            owner = dnsbl_name(addr, z)
            records.append(Record(owner, "A", DNSBL_DEFAULT_CODE))
            records.append(Record(owner, "TXT", f"RFC 5782 test entry {addr}"))
    if not plan:
        raise MailopsError("DNS server config has no zones")
    ns = _abs_name(cfg.nameserver_name, "nameserver name")
    holders = [z for z in plan if ns.is_subdomain(dns.name.from_text(z))]
    if holders:
        home = max(holders, key=lambda z: len(dns.name.from_text(z)))
        zn = dns.name.from_text(home)
        existing = {(_owner(zn, r.name), r.type.upper()) for r in plan[home]}
        for rtype, addrs in (("A", cfg.listen_v4), ("AAAA", cfg.listen_v6)):
            if (ns, rtype) in existing:
                continue
            for a in addrs:
                plan[home].append(Record(ns.to_text(), rtype, a, NS_TTL))
    return plan


def _zone_file(cfg: DNSServerConfig, zone: str) -> Path:
    return cfg.state_dir / ("db." + (zone.rstrip(".") or "root"))


def _zone_text(cfg: DNSServerConfig, zone: str, records: list[Record]) -> str:
    """Zone file text with the literal placeholder {SERIAL} for the SOA serial."""
    zn = dns.name.from_text(zone)
    ns = _abs_name(cfg.nameserver_name, "nameserver name")
    rname = dns.name.Name(("hostmaster",) + (ns.parent().labels if len(ns) > 2 else zn.labels))
    lines = [
        f"; zone {zone} - generated by mailops.lab.dns; dynamic updates are kept in the .jnl journal",
        f"$ORIGIN {zone}",
        f"$TTL {NS_TTL}",
        f"@\t{SOA_TTL}\tIN\tSOA\t{ns} {rname} {{SERIAL}} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {SOA_NEGATIVE_TTL}",
        f"@\t{NS_TTL}\tIN\tNS\t{ns}",
    ]
    seen = set()
    for r in records:
        owner = _owner(zn, r.name)
        rd = _rdata(zn, r.type, r.value)
        if rd.rdtype in (dns.rdatatype.SOA,) and owner == zn:
            raise MailopsError(f"zone {zone}: the SOA record is generated, do not configure one")
        if not isinstance(r.ttl, int) or not 0 <= r.ttl <= 2**31 - 1:
            raise MailopsError(f"invalid TTL {r.ttl!r} for {owner} {r.type} in zone {zone}")
        text = rd.to_text()
        key = (owner, rd.rdtype, text)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{owner}\t{r.ttl}\tIN\t{dns.rdatatype.to_text(rd.rdtype)}\t{text}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, data: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _key_clause(name: str, secret: str) -> str:
    return f'key "{name}" {{\n\talgorithm {TSIG_ALGORITHM};\n\tsecret "{secret}";\n}};\n'


def _ensure_tsig(cfg: DNSServerConfig) -> str:
    secret_path = cfg.state_dir / SECRET_FILE
    key_path = cfg.state_dir / KEY_FILE
    secret = None
    if secret_path.exists():
        secret = secret_path.read_text().strip()
        try:
            if len(base64.b64decode(secret, validate=True)) < 16:
                raise ValueError("shorter than 16 bytes")
        except (binascii.Error, ValueError) as e:
            raise MailopsError(
                f"{secret_path} does not hold a usable base64 TSIG secret ({e}); delete it to generate a new key"
            ) from None
    if secret is None:
        secret = base64.b64encode(os.urandom(32)).decode()
        _write_atomic(secret_path, secret + "\n", 0o600)
    os.chmod(secret_path, 0o600)
    name = _abs_name(cfg.tsig_key_name, "TSIG key name").to_text()
    clause = _key_clause(name, secret)
    if not key_path.exists() or key_path.read_text() != clause:
        _write_atomic(key_path, clause, 0o600)
    os.chmod(key_path, 0o600)
    return secret


def _fmt_list(addrs: Sequence[str], version: int) -> str:
    for a in addrs:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            raise MailopsError(f"invalid listen address {a!r}") from None
        if ip.version != version:
            raise MailopsError(f"listen address {a} is not IPv{version} (listen_v{version})")
    return " ".join(f"{a};" for a in addrs) if addrs else "none;"


def _named_conf(cfg: DNSServerConfig, zones: Iterable[str]) -> str:
    d = str(cfg.state_dir)
    key = _abs_name(cfg.tsig_key_name, "TSIG key name").to_text()
    if not isinstance(cfg.port, int) or not 0 < cfg.port < 65536:
        raise MailopsError(f"invalid DNS port {cfg.port!r}")
    v4 = _fmt_list(cfg.listen_v4, 4)
    v6 = _fmt_list(cfg.listen_v6, 6)
    out = [
        MARKER,
        f'include "{d}/{KEY_FILE}";',
        "",
        "options {",
        f'\tdirectory "{d}";',
        f'\tpid-file "{d}/{PID_NAME}";',
        f'\tlock-file "{d}/named.lock";',
        f'\tsession-keyfile "{d}/session.key";',
        f'\tmanaged-keys-directory "{d}";',
        f'\tbindkeys-file "{d}/bind.keys";',
        f'\tdump-file "{d}/named_dump.db";',
        f'\tstatistics-file "{d}/named.stats";',
        f'\tmemstatistics-file "{d}/named.memstats";',
        f'\trecursing-file "{d}/named.recursing";',
        f'\tsecroots-file "{d}/named.secroots";',
        f"\tlisten-on port {cfg.port} {{ {v4} }};",
        f"\tlisten-on-v6 port {cfg.port} {{ {v6} }};",
        "\trecursion no;",
        "\tallow-recursion { none; };",
        "\tallow-query { any; };",
        "\tallow-query-cache { none; };",
        "\tallow-transfer { none; };",
        "\tallow-update { none; };",
        "\tdnssec-validation no;",
        "\tnotify no;",
        "\tversion none;",
        "};",
        "",
        "controls { };",
        "",
    ]
    for z in zones:
        out += [
            f'zone "{z}" IN {{',
            "\ttype primary;",
            f'\tfile "{_zone_file(cfg, z)}";',
            f'\tallow-update {{ key "{key}"; }};',
            f'\tallow-transfer {{ key "{key}"; }};',
            "\tnotify no;",
            "};",
            "",
        ]
    return "\n".join(out)


def _tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise PrerequisiteMissing(f"{name} not found: install BIND 9 (Debian: apt-get install bind9 bind9-utils)")
    return path


def _load_manifest(cfg: DNSServerConfig) -> dict:
    try:
        return json.loads((cfg.state_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def write_config(cfg: DNSServerConfig, *, reset_zones: bool = False) -> None:
    """Write tsig.key/tsig.secret (generated once, kept afterwards), named.conf and the zone files,
    then validate everything with ``named-checkconf -z -j``.

    Idempotent: a zone whose file already exists is left alone when it has dynamic changes
    (a journal exists or named rewrote the file); a zone without dynamic changes is rewritten
    (with a higher serial) if its configured records changed.  ``reset_zones=True`` rewrites every
    zone from the config and deletes its journal; the server must be stopped for that."""
    checkconf = _tool("named-checkconf")
    plan = _zone_plan(cfg)
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cfg.state_dir, 0o750)
    except OSError as e:
        raise MailopsError(f"cannot create DNS state directory {cfg.state_dir}: {e.strerror}") from None
    if reset_zones:
        pid = running_pid(cfg)
        if pid:
            raise MailopsError(f"named (pid {pid}) is serving {cfg.state_dir}: stop it before reset_zones=True")
    texts = {z: _zone_text(cfg, z, recs) for z, recs in plan.items()}  # validates every record first
    _ensure_tsig(cfg)
    manifest = _load_manifest(cfg)
    zones_m = manifest.get("zones", {})
    new_m = {}
    for z, template in texts.items():
        path = _zone_file(cfg, z)
        jnl = path.with_name(path.name + ".jnl")
        prev = zones_m.get(z, {})
        tsha = _sha(template)
        if path.exists() and not reset_zones:
            dynamic = jnl.exists() or _sha(path.read_bytes()) != prev.get("file_sha")
            if dynamic or prev.get("template_sha") == tsha:
                new_m[z] = prev | {"dynamic": dynamic}
                continue
        serial = max(int(time.time()), int(prev.get("serial", 0)) + 1) % 2**32
        text = template.replace("{SERIAL}", str(serial))
        _write_atomic(path, text, 0o644)
        if jnl.exists():
            jnl.unlink()
        new_m[z] = {"serial": serial, "template_sha": tsha, "file_sha": _sha(text), "dynamic": False}
    conf = _named_conf(cfg, plan.keys())
    tmp_conf = cfg.state_dir / f".{CONF_NAME}.check"
    _write_atomic(tmp_conf, conf, 0o644)
    try:
        res = subprocess.run(
            [checkconf, "-z", "-j", str(tmp_conf)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        tmp_conf.unlink(missing_ok=True)
        raise MailopsError(f"named-checkconf timed out checking {conf_path(cfg)}") from None
    if res.returncode != 0:
        tmp_conf.unlink(missing_ok=True)
        lines = [ln.strip() for ln in (res.stdout + "\n" + res.stderr).splitlines() if ln.strip()]
        bad = [ln for ln in lines if not re.search(r": loaded serial \d+$", ln)] or lines or ["(no output)"]
        hint = " (fix the zone file or rerun with reset_zones=True)" if str(cfg.state_dir / "db.") in bad[0] else ""
        raise MailopsError(f"named-checkconf rejected the lab DNS config in {cfg.state_dir}: {bad[0]}{hint}")
    os.replace(tmp_conf, conf_path(cfg))
    _write_atomic(cfg.state_dir / MANIFEST_NAME, json.dumps({"zones": new_m}, indent=1, sort_keys=True) + "\n", 0o644)


# --------------------------------------------------------------------------- TSIG


def tsig_secret(cfg: DNSServerConfig) -> str:
    path = cfg.state_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MailopsError(f"no lab TSIG secret at {path}: run write_config first") from None


def tsig_keyring(cfg: DNSServerConfig) -> dict:
    """dnspython keyring {dns.name.Name: dns.tsig.Key} holding the lab key."""
    name = _abs_name(cfg.tsig_key_name, "TSIG key name")
    return {name: dns.tsig.Key(name, tsig_secret(cfg), TSIG_ALGORITHM)}


# --------------------------------------------------------------------------- processes


def _read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    proc = _PROCS.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        _PROCS.pop(pid, None)
        return False
    state = _proc_state(pid)
    if state is None:
        return False
    if state in ("Z", "X"):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _conf_of(cmdline: list[str]) -> str | None:
    if not cmdline or os.path.basename(cmdline[0]) != "named":
        return None
    for i, a in enumerate(cmdline):
        if a == "-c" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if a.startswith("-c") and len(a) > 2:
            return a[2:]
    return None


def _is_ours(pid: int, state_dir: Path | None) -> tuple[bool, str]:
    cmdline = _read_cmdline(pid) or []
    conf = _conf_of(cmdline)
    desc = " ".join(cmdline) or "?"
    if conf is None:
        return False, desc
    if state_dir is not None:
        return os.path.realpath(conf) == os.path.realpath(Path(state_dir) / CONF_NAME), desc
    try:
        with open(conf) as f:
            return f.readline().rstrip("\n") == MARKER, desc
    except OSError:
        return False, desc


def running_pid(cfg: DNSServerConfig) -> int | None:
    """PID of the named serving cfg.state_dir (from its pid file, verified via /proc), or None."""
    try:
        pid = int((cfg.state_dir / PID_NAME).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if _alive(pid) and _is_ours(pid, cfg.state_dir)[0]:
        return pid
    return None


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
    named = _tool("named")
    conf = conf_path(cfg)
    if not conf.exists():
        raise MailopsError(f"{conf} does not exist: run write_config first")
    pid = running_pid(cfg)
    if pid:
        raise MailopsError(f"named for {cfg.state_dir} is already running (pid {pid})")
    zones = all_zones(cfg)
    addr = server_address(cfg)
    for a in list(cfg.listen_v4) + list(cfg.listen_v6):
        _probe_port(a, cfg.port)

    log = cfg.state_dir / LOG_NAME
    try:
        if log.exists() and log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(LOG_NAME + ".1"))
        logf = open(log, "ab")
        offset = logf.tell()
        proc = subprocess.Popen(
            [named, "-g", "-c", str(conf)],
            cwd=cfg.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        raise MailopsError(f"cannot run {named}: {e.strerror}") from None
    finally:
        try:
            logf.close()
        except NameError:
            pass
    _PROCS[proc.pid] = proc

    def new_lines() -> list[str]:
        with open(log, "rb") as f:
            f.seek(offset)
            return _log_lines(f.read().decode(errors="replace"))

    def fail(reason: str) -> MailopsError:
        if proc.poll() is None:
            try:
                stop(proc.pid, timeout=5.0, state_dir=cfg.state_dir)
            except MailopsError:
                pass
        return MailopsError(f"named failed to start ({log}): {reason}")

    deadline = time.monotonic() + timeout
    pending = list(zones)
    while True:
        exited = proc.poll() is not None
        lines = new_lines()
        problem = _startup_problem(lines, cfg, exited)
        if exited:
            _PROCS.pop(proc.pid, None)
            raise fail(f"exited with status {proc.returncode}: {problem}")
        if problem:
            raise fail(problem)
        if "running" in lines:
            missing = _missing_listeners(lines, cfg)
            if missing:
                raise fail(
                    f"not listening on {', '.join(missing)} port {cfg.port} "
                    "(named only binds addresses configured on a network interface)"
                )
            pending = [z for z in pending if not _soa_ok(addr, cfg.port, z)]
            if not pending:
                return proc.pid
        if time.monotonic() > deadline:
            what = f"no authoritative SOA answer for {pending[0]} from {addr}#{cfg.port}" if "running" in lines \
                else "did not finish starting"
            raise fail(f"{what} within {timeout:g}s; last log line: {lines[-1] if lines else 'none'}")
        time.sleep(0.05)


def stop(pid: int, timeout: float = 10.0, *, state_dir: Path | None = None) -> None:
    """Stop a named started by start(): SIGTERM, wait up to timeout, then SIGKILL.
    No error if it is already gone. Refuses (MailopsError) to signal a process that is not a
    mailops lab named: its cmdline must be ``named ... -c <conf>`` where <conf> is
    state_dir/named.conf (if state_dir is given) or a file generated by write_config."""
    if not _alive(pid):
        return
    ours, desc = _is_ours(pid, Path(state_dir) if state_dir is not None else None)
    if not ours:
        if not _alive(pid):
            return
        raise MailopsError(f"refusing to stop pid {pid}: it is not a mailops lab named ({desc})")
    proc = _PROCS.get(pid)

    def wait(limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if proc is not None:
                try:
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                _PROCS.pop(pid, None)
                return True
            if not _alive(pid):
                return True
            time.sleep(0.05)
        return not _alive(pid)

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _alive(pid)
        return
    if wait(timeout):
        return
    if _is_ours(pid, Path(state_dir) if state_dir is not None else None)[0]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not wait(5.0):
        raise MailopsError(f"named (pid {pid}) did not exit after SIGTERM and SIGKILL")


# --------------------------------------------------------------------------- updates


def update(
    cfg: DNSServerConfig,
    zone: str,
    *,
    add: Iterable = (),
    delete: Iterable = (),
    replace: Iterable = (),
    server: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Send one TSIG-signed RFC 2136 update for zone (over TCP to the first listen address).

    add/replace: Records (or (name, type, value[, ttl]) tuples); replace swaps the whole RRset of
    each (name, type) for the given records.  delete: a Record with a value deletes that RR, with
    an empty value its RRset; a (name, type) tuple deletes the RRset; a bare name deletes all
    RRsets at the name.  Deletes are applied first, then replaces, then adds.
    Raises MailopsError if the server does not answer NOERROR."""
    zn = _abs_name(zone if zone.endswith(".") else zone + ".", "zone name")
    keyring = tsig_keyring(cfg)
    keyname = next(iter(keyring))
    msg = dns.update.UpdateMessage(zn, keyring=keyring, keyname=keyname, keyalgorithm=TSIG_ALGORITHM)
    for item in delete:
        if isinstance(item, str):
            msg.delete(_owner(zn, item))
        elif isinstance(item, Record) and item.value:
            msg.delete(_owner(zn, item.name), _rdata(zn, item.type, item.value))
        else:
            name, rtype = (item.name, item.type) if isinstance(item, Record) else tuple(item)[:2]
            if rtype.upper() == "ANY":
                msg.delete(_owner(zn, name))
            else:
                msg.delete(_owner(zn, name), rtype.upper())
    groups: dict[tuple, list[Record]] = {}
    for item in replace:
        r = _as_record(item)
        groups.setdefault((_owner(zn, r.name), r.type.upper()), []).append(r)
    for (owner, rtype), recs in groups.items():
        msg.delete(owner, rtype)
        for r in recs:
            msg.add(owner, r.ttl, _rdata(zn, r.type, r.value))
    for item in add:
        r = _as_record(item)
        msg.add(_owner(zn, r.name), r.ttl, _rdata(zn, r.type, r.value))
    where = server or server_address(cfg)
    try:
        resp = dns.query.tcp(msg, where, port=cfg.port, timeout=timeout)
    except dns.tsig.PeerError as e:
        raise MailopsError(f"DNS update of {zn} at {where}#{cfg.port} rejected the TSIG key: {e}") from None
    except (dns.exception.DNSException, OSError) as e:
        raise MailopsError(f"DNS update of {zn} at {where}#{cfg.port} failed: {e or type(e).__name__}") from None
    rcode = resp.rcode()
    if rcode != dns.rcode.NOERROR:
        raise MailopsError(f"DNS update of {zn} at {where}#{cfg.port} failed: {dns.rcode.to_text(rcode)}")


def _dnsbl_zone(cfg: DNSServerConfig) -> str:
    if not cfg.dnsbl_zone:
        raise MailopsError("the lab DNS server has no DNSBL zone (dnsbl_zone is None)")
    return cfg.dnsbl_zone if cfg.dnsbl_zone.endswith(".") else cfg.dnsbl_zone + "."


def set_dnsbl_listing(
    cfg: DNSServerConfig, address: str, code: str = DNSBL_DEFAULT_CODE, reason: str | None = None
) -> str:
    """List address in the DNSBL zone (A code + TXT reason); returns the listing's owner name."""
    zone = _dnsbl_zone(cfg)
    try:
        ok = ipaddress.IPv4Address(code) in ipaddress.IPv4Network("127.0.0.0/8")
    except ValueError:
        ok = False
    if not ok:
        raise MailopsError(f"invalid DNSBL return code {code!r}: must be an IPv4 address in 127.0.0.0/8")
    owner = dnsbl_name(address, zone)
    text = reason if reason is not None else f"{address} is listed in the mailops lab DNSBL"
    update(cfg, zone, replace=[Record(owner, "A", code, 60), Record(owner, "TXT", text, 60)])
    return owner


def clear_dnsbl_listing(cfg: DNSServerConfig, address: str) -> None:
    """Remove address from the DNSBL zone (no error if it was not listed)."""
    zone = _dnsbl_zone(cfg)
    update(cfg, zone, delete=[dnsbl_name(address, zone)])

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

The code is in four modules: dns_data.py (config, records, names), dns_files.py
(zone files, named.conf, TSIG key, write_config), dns_server.py (the named process,
run by the lab supervisor) and this one (updates, DNSBL listings), which also
offers the names of the other three: import ``mailops.lab.dns``.

This module is a library: it never imports click and reports every failure as a
one-line ``MailopsError``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import dns.exception
import dns.query
import dns.rcode
import dns.tsig
import dns.update

from mailops.errors import MailopsError
from mailops.lab.dns_data import (DNSBL_DEFAULT_CODE, SECRET_FILE, TSIG_ALGORITHM, DNSServerConfig, Record, abs_name,
                                  all_zones, as_record, conf_path, dnsbl_name, owner_name, ptr_name, reverse_zone_for,
                                  server_address, to_rdata)
from mailops.lab.dns_files import tsig_keyring, tsig_secret, write_config
from mailops.lab.dns_server import running_pid, start, stop

__all__ = [
    "DNSServerConfig",
    "Record",
    "SECRET_FILE",
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
    zn = abs_name(zone if zone.endswith(".") else zone + ".", "zone name")
    keyring = tsig_keyring(cfg)
    keyname = next(iter(keyring))
    msg = dns.update.UpdateMessage(zn, keyring=keyring, keyname=keyname, keyalgorithm=TSIG_ALGORITHM)
    for item in delete:
        if isinstance(item, str):
            msg.delete(owner_name(zn, item))
        elif isinstance(item, Record) and item.value:
            msg.delete(owner_name(zn, item.name), to_rdata(zn, item.type, item.value))
        else:
            name, rtype = (item.name, item.type) if isinstance(item, Record) else tuple(item)[:2]
            if rtype.upper() == "ANY":
                msg.delete(owner_name(zn, name))
            else:
                msg.delete(owner_name(zn, name), rtype.upper())
    groups: dict[tuple, list[Record]] = {}
    for item in replace:
        r = as_record(item)
        groups.setdefault((owner_name(zn, r.name), r.type.upper()), []).append(r)
    for (owner, rtype), recs in groups.items():
        msg.delete(owner, rtype)
        for r in recs:
            msg.add(owner, r.ttl, to_rdata(zn, r.type, r.value))
    for item in add:
        r = as_record(item)
        msg.add(owner_name(zn, r.name), r.ttl, to_rdata(zn, r.type, r.value))
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

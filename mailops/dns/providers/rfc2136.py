"""RFC 2136 dynamic update with dnspython: TSIG, state by AXFR, one UPDATE per zone.

Ownership convention: the zone carries a TXT RRset at ``_mailops-owner.<zone>``
(``_mailops-owner-<id>.<zone>`` when the inventory sets ``mailops_dns_owner: <id>``, so
several inventories can share a zone)
with one string per record mailops owns, ``"<TYPE> <name> <sha>"`` where name
is relative to the zone (``@`` for the apex) and sha is the first 16 hex
digits of SHA-256 of the record's canonical value.  Records and the registry
change in the same UPDATE message, so they never disagree.  A record someone
edits by hand no longer matches its entry and so is no longer mailops'.
"""

from __future__ import annotations

import hashlib
import threading

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.xfr
import dns.zone

from mailops.dns.providers.base import Existing, ZoneChanges
from mailops.dns.query import txt_text
from mailops.dns.records import Record, in_zone, normalize_name, quote_txt, relative_name
from mailops.errors import MailopsError

REGISTRY_LABEL = "_mailops-owner"


def registry_label(owner: str | None = None) -> str:
    """``_mailops-owner`` for the default owner, ``_mailops-owner-<id>`` for mailops_dns_owner: <id>."""
    return REGISTRY_LABEL if not owner else f"{REGISTRY_LABEL}-{owner}"
REGISTRY_TTL = 300
# Stay well below the 64 KiB TCP message limit; larger change sets are split.
_MAX_MESSAGE_BYTES = 48_000


def registry_entry(zone: str, record: Record) -> str:
    sha = hashlib.sha256(record.value.encode()).hexdigest()[:16]
    return f"{record.type} {relative_name(record.name, zone)} {sha}"


def _to_record(name: dns.name.Name, ttl: int, rdata) -> Record:
    rtype = dns.rdatatype.to_text(rdata.rdtype)
    if rdata.rdtype == dns.rdatatype.TXT:
        value = txt_text(rdata)
    elif rdata.rdtype == dns.rdatatype.MX:
        value = f"{rdata.preference} {rdata.exchange.to_text()}"
    else:
        value = rdata.to_text()
    return Record.make(name.to_text(), rtype, value, ttl)


def _wire_rdata(record: Record):
    text = quote_txt(record.value) if record.type == "TXT" else record.value
    return dns.rdata.from_text(dns.rdataclass.IN, record.type, text)


class _Rfc2136Base:
    def __init__(self, name: str, *, server: str, port: int, key_name: str, algorithm: str, secret: str,
                 zones: list[str] | None = None, timeout: float = 10.0, owner: str | None = None):
        self.name = name
        self.registry_label = registry_label(owner)
        self.server, self.port, self.timeout = server, port, timeout
        self.zones = [normalize_name(z) for z in zones] if zones else None
        self._keyname = dns.name.from_text(key_name)
        try:
            self._keyring = {self._keyname: dns.tsig.Key(self._keyname, secret, algorithm)}
        except Exception:  # noqa: BLE001 - bad base64; never echo the secret
            raise MailopsError(f"rfc2136 provider {name!r}: the TSIG secret is not valid base64; "
                               "put the key's secret (as printed by tsig-keygen) in tsig_secret") from None
        self._zone_cache: dict[str, str | None] = {}
        self.requests = 0
        self._count_lock = threading.Lock()  # zones are listed and applied from several threads

    def _count(self) -> None:
        with self._count_lock:
            self.requests += 1

    def _where(self) -> str:
        return f"{self.server}#{self.port}"

    def _query(self, qname: str, rtype: str) -> dns.message.Message:
        q = dns.message.make_query(qname, rtype)
        q.use_tsig(self._keyring, keyname=self._keyname)
        return self._tcp(q, "check server and port")

    def _tcp(self, msg: dns.message.Message, on_failure: str, what: str | None = None) -> dns.message.Message:
        """Send one TSIG-signed message over TCP; failures become one-line errors."""
        self._count()
        try:
            return dns.query.tcp(msg, self.server, port=self.port, timeout=self.timeout)
        except dns.tsig.PeerError as e:
            raise MailopsError(f"rfc2136 provider {self.name!r}: {self._where()} rejected the TSIG key ({e}); "
                               "check tsig_key_name, tsig_algorithm and tsig_secret") from None
        except (dns.exception.DNSException, OSError) as e:
            raise MailopsError(f"rfc2136 provider {self.name!r}: {what or 'no answer from ' + self._where()} "
                               f"({e or type(e).__name__}); {on_failure}") from None

    def zone_for(self, name: str) -> str | None:
        name = normalize_name(name)
        if self.zones is not None:
            matches = [z for z in self.zones if in_zone(name, z)]
            return max(matches, key=len) if matches else None
        if name not in self._zone_cache:
            # The server's SOA for the name (answer or authority section) names its zone.
            resp = self._query(name, "SOA")
            zone = None
            if resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                for rrset in resp.answer + resp.authority:
                    if rrset.rdtype == dns.rdatatype.SOA:
                        zone = normalize_name(rrset.name.to_text())
            self._zone_cache[name] = zone
        return self._zone_cache[name]

    def nameservers(self, zone: str) -> list[str]:
        return [self.server]

    def _send(self, zone: str, msg: dns.update.UpdateMessage) -> None:
        resp = self._tcp(msg, "nothing in that message was applied",
                         what=f"update of {zone} at {self._where()} failed")
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = {dns.rcode.REFUSED: "the server does not allow this key to update the zone",
                    dns.rcode.NOTAUTH: "the server is not authoritative for the zone or refused the key",
                    dns.rcode.NOTZONE: "a name is outside the zone"}.get(rcode, "see the server's log")
            raise MailopsError(f"rfc2136 provider {self.name!r}: update of {zone} at {self._where()} answered "
                               f"{dns.rcode.to_text(rcode)} ({hint}); nothing in that message was applied")

    def _new_message(self, zone: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(zone + ".", keyring=self._keyring, keyname=self._keyname)


class Rfc2136Provider(_Rfc2136Base):
    kind = "rfc2136"
    rrset_ttl = True
    ownership = f"TXT registry at {REGISTRY_LABEL}.<zone>"

    def _axfr(self, zone: str) -> dns.zone.Zone:
        self._count()
        try:
            z = dns.zone.Zone(zone + ".", relativize=False)
            dns.query.inbound_xfr(self.server, z, port=self.port, timeout=self.timeout,
                                  query=self._xfr_query(zone))
            return z
        except dns.tsig.PeerError as e:
            raise MailopsError(f"rfc2136 provider {self.name!r}: {self._where()} rejected the TSIG key for the "
                               f"transfer of {zone} ({e}); check the key") from None
        except dns.xfr.TransferError as e:
            raise MailopsError(f"rfc2136 provider {self.name!r}: zone transfer of {zone} from {self._where()} "
                               f"refused ({e}); allow AXFR for the TSIG key (allow-transfer {{ key ...; }})") from None
        except (dns.exception.DNSException, OSError) as e:
            raise MailopsError(f"rfc2136 provider {self.name!r}: zone transfer of {zone} from {self._where()} "
                               f"failed ({e or type(e).__name__})") from None

    def _xfr_query(self, zone: str) -> dns.message.QueryMessage:
        q = dns.message.make_query(zone + ".", dns.rdatatype.AXFR)
        q.use_tsig(self._keyring, keyname=self._keyname)
        return q

    def list_records(self, zone: str) -> list[Existing]:
        z = self._axfr(zone)
        registry_name = dns.name.from_text(f"{self.registry_label}.{zone}.")
        owned: set[str] = set()
        others: dict[str, str] = {}  # registry entry -> the other inventory's registry label
        records: list[Record] = []
        for name, ttl, rdata in z.iterate_rdatas():
            absname = name.derelativize(z.origin)
            first = absname.labels[0].decode(errors="replace") if absname.labels else ""
            if rdata.rdtype == dns.rdatatype.TXT and first.startswith(REGISTRY_LABEL) \
                    and absname.parent() == z.origin:
                entry = txt_text(rdata)
                if absname == registry_name:
                    owned.add(entry)
                else:
                    others[entry] = first
                continue
            records.append(_to_record(absname, ttl, rdata))
        out = []
        for r in sorted(set(records)):
            entry = registry_entry(zone, r)
            out.append(Existing(r, entry in owned, None, None if entry in owned else others.get(entry)))
        return out

    def apply(self, zone: str, changes: ZoneChanges) -> None:
        """One UPDATE message (several only for very large change sets, address records first)."""
        groups: list[list[tuple]] = []  # each: ops for one record change, kept in one message
        registry = f"{self.registry_label}.{zone}."
        for rec in changes.creates:
            groups.append([("add", rec), ("reg+", rec)])
        for old, new in changes.updates:
            ops = []
            if old.record != new:
                ops += [("del", old.record), ("add", new)]
            if old.owned:
                ops.append(("reg-", old.record))
            ops.append(("reg+", new))
            groups.append(ops)
        for old in changes.deletes:
            groups.append([("del", old.record)] + ([("reg-", old.record)] if old.owned else []))

        msg, size = self._new_message(zone), 0
        for ops in groups:
            cost = sum(len(r.value) + len(r.name) + 40 for _, r in ops)
            if size and size + cost > _MAX_MESSAGE_BYTES:
                self._send(zone, msg)
                msg, size = self._new_message(zone), 0
            for op, rec in ops:
                if op == "add":
                    msg.add(rec.name + ".", rec.ttl, _wire_rdata(rec))
                elif op == "del":
                    msg.delete(rec.name + ".", _wire_rdata(rec))
                elif op == "reg+":
                    msg.add(registry, REGISTRY_TTL, dns.rdata.from_text(
                        "IN", "TXT", quote_txt(registry_entry(zone, rec))))
                else:
                    msg.delete(registry, dns.rdata.from_text("IN", "TXT", quote_txt(registry_entry(zone, rec))))
            size += cost
        if size:
            self._send(zone, msg)


class Rfc2136ReverseProvider(_Rfc2136Base):
    """PTR records in a reverse zone the server accepts updates for (a VPS provider's or your own).

    The PTR of a sending address belongs to whoever runs the address: it is
    replaced, whatever it was (the provider's default name, typically)."""
    kind = "rfc2136"

    def get_ptr(self, address: str) -> str | None:
        from dns.reversename import from_address
        resp = self._query(from_address(address).to_text(), "PTR")
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.PTR:
                return normalize_name(rrset[0].target.to_text())
        return None

    def set_ptr(self, address: str, hostname: str) -> None:
        from dns.reversename import from_address
        owner = normalize_name(from_address(address).to_text())
        zone = self.zone_for(owner)
        if zone is None:
            raise MailopsError(f"rfc2136 provider {self.name!r}: {self._where()} serves no reverse zone holding "
                               f"{address}; list the zone under zones: or point server: at its primary")
        msg = self._new_message(zone)
        msg.replace(owner + ".", 300, dns.rdata.from_text("IN", "PTR", normalize_name(hostname) + "."))
        self._send(zone, msg)

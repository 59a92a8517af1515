"""BindMirror: keeps a BIND zone equal to the Cloudflare emulator's records (its on_change).

The lab's emulator daemon mirrors every committed change into the lab BIND, so
records published through the Cloudflare API resolve in the lab like real ones."""

from __future__ import annotations

import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
import dns.zone

from mailops.dns.query import txt_text
from mailops.dns.records import Record, split_txt
from mailops.lab.cfemu_records import AUTO_TTL_SECONDS


class BindMirror:
    """on_change for CloudflareEmulator: make a BIND zone hold exactly the emulator's records.

    On each change it reads the zone with a TSIG-signed AXFR, computes the RRsets the
    records imply (TXT joined from raw or quoted content and re-split into <= 255-byte
    strings, MX from priority + content, ttl 1 -> 300) and sends one RFC 2136 UPDATE that
    replaces the RRsets that differ and deletes those no longer present.  The apex SOA and
    NS belong to the lab server and are never touched."""

    def __init__(self, server: str, port: int, keyname: str, secret: str, algorithm: str = "hmac-sha256",
                 timeout: float = 5.0):
        self.server, self.port, self.timeout = server, port, timeout
        self.keyname = dns.name.from_text(keyname)
        self.algorithm = algorithm
        self.keyring = {self.keyname: dns.tsig.Key(self.keyname, secret, algorithm)}
        self.updates_sent = 0

    def __call__(self, zone_name: str, records: list[dict]) -> None:
        origin = dns.name.from_text(zone_name)
        have, want = self._current(origin), self.rrsets_for(zone_name, records)
        msg = dns.update.UpdateMessage(origin, keyring=self.keyring, keyname=self.keyname,
                                       keyalgorithm=self.algorithm)
        for name, rtype in sorted(have.keys() - want.keys()):
            msg.delete(dns.name.from_text(name), rtype)
        for (name, rtype), (ttl, values) in sorted(want.items()):
            if have.get((name, rtype)) != (ttl, values):
                msg.replace(dns.name.from_text(name), ttl, *(_rdata(rtype, v) for v in sorted(values)))
        if not msg.update:
            return
        resp = dns.query.tcp(msg, self.server, port=self.port, timeout=self.timeout)
        if resp.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"DNS update of {zone_name} at {self.server}#{self.port}: "
                               f"{dns.rcode.to_text(resp.rcode())}")
        self.updates_sent += 1

    @staticmethod
    def rrsets_for(zone_name: str, records: list[dict]) -> dict[tuple[str, str], tuple[int, frozenset]]:
        """{(owner, type): (ttl, canonical values)} that the emulator's records imply."""
        apex = zone_name.rstrip(".").lower()
        sets: dict[tuple[str, str], tuple[int, set]] = {}
        for r in records:
            if r["name"] == apex and r["type"] == "NS":
                continue  # the apex NS set is the DNS server's own
            value = f"{r['priority']} {r['content']}" if r["type"] == "MX" else r["content"]
            ttl = AUTO_TTL_SECONDS if r["ttl"] == 1 else int(r["ttl"])
            old_ttl, values = sets.setdefault((r["name"], r["type"]), (ttl, set()))
            sets[(r["name"], r["type"])] = (min(old_ttl, ttl), values)  # one TTL per RRset
            values.add(Record.make(r["name"], r["type"], value).value)
        return {k: (ttl, frozenset(v)) for k, (ttl, v) in sets.items()}

    def _current(self, origin: dns.name.Name) -> dict:
        xfr = dns.query.xfr(self.server, origin, port=self.port, keyring=self.keyring, keyname=self.keyname,
                            keyalgorithm=self.algorithm, lifetime=self.timeout, relativize=False)
        zone = dns.zone.from_xfr(xfr, relativize=False)
        out = {}
        for name, node in zone.nodes.items():
            owner = name.to_text(omit_final_dot=True).lower()
            for rds in node.rdatasets:
                rtype = dns.rdatatype.to_text(rds.rdtype)
                if name == origin and rtype in ("SOA", "NS"):
                    continue
                if rtype == "TXT":  # join the strings' bytes (to_text would escape UTF-8 as \DDD)
                    values = frozenset(txt_text(rd) for rd in rds)
                else:
                    values = frozenset(Record.make(owner, rtype, rd.to_text()).value for rd in rds)
                out[(owner, rtype)] = (rds.ttl, values)
        return out


def _rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    if rtype == "TXT":
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode() for s in split_txt(value)])
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, value)

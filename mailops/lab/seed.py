"""Seed the lab BIND with an inventory's records, straight through RFC 2136.

A lab-only stand-in until `mailops dns sync` exists (it plans, owns and
verifies records through provider APIs): the records a sending domain needs
(host A/AAAA, MX, SPF, DKIM, DMARC) and the PTR of every sending address."""

from __future__ import annotations

from mailops.lab import core, dns as labdns
from mailops.lab.config import LabConfig


def publish_inventory_records(cfg: LabConfig, inv, keystore=None) -> None:
    dcfg = core.dns_config(cfg)
    # Address records first: BIND (rightly) refuses an MX whose target has no address.
    for h in inv.hosts:
        zone = h.fqdn.split(".", 1)[1] + "."
        addr = [(h.fqdn + ".", "A", str(h.ipv4), 60)]
        if h.ipv6:
            addr.append((h.fqdn + ".", "AAAA", str(h.ipv6), 60))
        labdns.update(dcfg, zone, replace=addr)
        for ip, net in ((str(h.ipv4), cfg.ipv4_network), (str(h.ipv6) if h.ipv6 else None, cfg.ipv6_network)):
            if ip:
                labdns.update(dcfg, labdns.reverse_zone_for(net),
                              replace=[(labdns.ptr_name(ip), "PTR", h.fqdn + ".", 60)])
    for domain, settings in inv.domains.items():
        hosts = inv.hosts_for(domain)
        spf = ["v=spf1"]
        for h in hosts:
            spf.append(f"ip4:{h.ipv4}")
            if h.ipv6:
                spf.append(f"ip6:{h.ipv6}")
        spf.append(settings.spf.all)
        recs = [("@", "TXT", " ".join(spf), 60), ("@", "MX", f"10 {hosts[0].fqdn}.", 60)]
        dmarc = f"v=DMARC1; p={settings.dmarc.policy}"
        if settings.dmarc.rua:
            dmarc += "; rua=" + ",".join(str(u) for u in settings.dmarc.rua)
        recs.append(("_dmarc", "TXT", dmarc, 60))
        if keystore is not None:
            for key in keystore.published(domain):
                recs.append((f"{key.selector}._domainkey", "TXT", key.dns_value, 60))
        labdns.update(dcfg, f"{domain}.", replace=recs)


def publish_key(cfg: LabConfig, domain: str, selector: str, value: str) -> None:
    labdns.update(core.dns_config(cfg), f"{domain}.", replace=[(f"{selector}._domainkey", "TXT", value, 60)])

"""The return-path (bounce) domain of each sending domain: its MX and SPF records.

With ``mailops_return_path`` set, mail from ``shop.test`` leaves with an envelope sender at
``bounces.shop.test`` (or the domain's ``return_path``; several domains may share one).
That domain needs:

* **MX** -> the sending domain's mail hosts (``10 <host>.``, as :mod:`kinds.mx` does for the
  domain): asynchronous bounces, complaints and reports are delivered there, and receivers
  that check the envelope sender's domain (Postfix ``reject_unknown_sender_domain``, most
  large providers) accept a domain that has an MX.
* **SPF** authorising the same addresses as the sending domain's own record
  (:func:`kinds.spf.authorised`, one place), ending in ``-all``: SPF is evaluated for the
  envelope sender's domain, so this record is what makes SPF pass (and, relaxed, align with
  the header From's organisational domain for DMARC); nothing else may send as it.

No A/AAAA: a receiver looks up the return-path domain's MX to send a bounce there, and
falls back to an A/AAAA only when there is no MX (RFC 5321 5.1); with the MX published an
address record would only make the name look like a host, which nothing connects to (the
MX targets are the mail hosts, whose own A/AAAA `dns sync` already publishes).  A shared
return-path domain gets one set of records: the MX and SPF of every domain that uses it.
"""

from __future__ import annotations

from mailops.dns.kinds import mx, spf
from mailops.dns.records import Record

ALL = "-all"


def domains(inv) -> dict[str, list[str]]:
    """Return-path domain -> the sending domains that use it (empty when the return path is off)."""
    return inv.return_path_domains() if getattr(inv, "return_path", None) is not None else {}


def hosts(inv, return_domain: str) -> list:
    """The mail hosts of every sending domain using ``return_domain``, in inventory order."""
    names = {h.name for d in domains(inv).get(return_domain, []) for h in inv.hosts_for(d)}
    return [h for h in inv.hosts if h.name in names]


def spf_value(inv, return_domain: str) -> str:
    """``v=spf1`` with the union of what the sending domains' records authorise, then ``-all``."""
    ips4: list[str] = []
    ips6: list[str] = []
    includes: list[str] = []
    for domain in domains(inv).get(return_domain, []):
        four, six, inc = spf.authorised(inv, domain)
        ips4 += four
        ips6 += six
        includes += inc
    return spf.record(list(dict.fromkeys(ips4)), list(dict.fromkeys(ips6)), list(dict.fromkeys(includes)), ALL)


def records(inv, return_domain: str, ttl: int) -> list[Record]:
    return [Record.make(return_domain, "MX", mx.value(h.fqdn), ttl) for h in hosts(inv, return_domain)] + \
        [Record.make(return_domain, "TXT", spf_value(inv, return_domain), ttl)]

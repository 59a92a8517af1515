"""DMARC (RFC 7489): the ``_dmarc.<domain>`` TXT record.

:func:`value` builds it from the inventory's dmarc settings, :data:`PARKED` is
the parked domains' reject-everything record, :func:`parse_dmarc` reads a
published one.
"""

from __future__ import annotations

import re

from mailops.dns.records import Record

PARKED = "v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s"
STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}


def record_name(domain: str) -> str:
    return f"_dmarc.{domain}"


def dmarc_record(policy: str, *, subdomain_policy: str | None = None, pct: int = 100,
                 rua: list[str] = (), ruf: list[str] = (), adkim: str = "r", aspf: str = "r") -> str:
    parts = ["v=DMARC1", f"p={policy}"]
    if subdomain_policy:
        parts.append(f"sp={subdomain_policy}")
    if pct != 100:
        parts.append(f"pct={pct}")
    if rua:
        parts.append("rua=" + ",".join(rua))
    if ruf:
        parts.append("ruf=" + ",".join(ruf))
    if adkim != "r":
        parts.append(f"adkim={adkim}")
    if aspf != "r":
        parts.append(f"aspf={aspf}")
    return "; ".join(parts)


def value(inv, domain: str) -> str:
    d = inv.domains[domain].dmarc
    return dmarc_record(d.policy, subdomain_policy=d.subdomain_policy, pct=d.pct, rua=list(d.rua),
                        ruf=list(d.ruf), adkim=d.adkim, aspf=d.aspf)


def records(inv, domain: str, ttl: int) -> list[Record]:
    return [Record.make(record_name(domain), "TXT", value(inv, domain), ttl)]


def dmarc_records(values) -> list[str]:
    """The published values that are DMARC records (receivers ignore all when there are several)."""
    return sorted(v for v in values if re.match(r"\s*v\s*=\s*DMARC1\s*(;|$)", v))


TAGS = {
    "v": None, "p": r"none|quarantine|reject", "sp": r"none|quarantine|reject", "np": r"none|quarantine|reject",
    "adkim": r"[rs]", "aspf": r"[rs]", "pct": r"\d{1,2}|100", "ri": r"\d+", "fo": r"[01ds](:[01ds])*",
    "rf": r"afrf(:[a-z0-9-]+)*|[a-z0-9-]+(:[a-z0-9-]+)*",
    "rua": r"(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?(\s*,\s*(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?)*",
    "ruf": r"(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?(\s*,\s*(mailto|https?):[^,!\s]+(![0-9]+[kmgt]?)?)*",
}


def parse_dmarc(record: str) -> tuple[dict[str, str], list[str]]:
    """Tags and the syntax problems (RFC 7489 6.3/6.4)."""
    tags, problems = {}, []
    parts = [p.strip() for p in record.split(";") if p.strip()]
    for part in parts:
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or key not in TAGS:
            problems.append(f"unknown tag {part!r}")
        elif key in tags:
            problems.append(f"tag {key}= appears twice")
        elif TAGS[key] and not re.fullmatch(TAGS[key], value, re.I):
            problems.append(f"invalid {key}={value}")
        else:
            tags[key] = value
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        problems.append("v=DMARC1 must come first")
    if "p" not in tags:
        problems.append("p= is required")
    return tags, problems


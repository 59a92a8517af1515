"""SMTP TLS reporting (RFC 8460): the ``_smtp._tls.<domain>`` TXT record."""

from __future__ import annotations

import re

from mailops.dns.records import Record


def record_name(domain: str) -> str:
    return f"_smtp._tls.{domain}"


def value(rua: list[str]) -> str:
    return "v=TLSRPTv1; rua=" + ",".join(rua)


def records(inv, domain: str, ttl: int) -> list[Record]:
    settings = inv.domains[domain].tls_rpt
    return [] if settings is None else [Record.make(record_name(domain), "TXT", value(settings.rua), ttl)]


def tls_rpt_records(values) -> list[str]:
    return sorted(v for v in values if re.match(r"v=TLSRPTv1\s*(;|$)", v))


def report_addresses(record: str) -> set[str]:
    """The rua= addresses of a published record, lower case."""
    rua = re.search(r"rua=([^;]*)", record)
    return {u.strip().lower() for u in (rua.group(1) if rua else "").split(",")}

"""MTA-STS (RFC 8461): the ``_mta-sts.<domain>`` TXT record, the policy file it
announces (served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``) and
the ``mta-sts.<domain>`` address records of the host serving it.

The policy and its id come from the inventory (:func:`policy`, :func:`policy_id`);
:func:`fetch_mta_sts_policy` and :func:`parse_mta_sts_policy` read a served one.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl

from mailops.dns.records import Record, normalize_name

MTA_STS_PATH = "/.well-known/mta-sts.txt"
HTTPS_TIMEOUT = 5.0
_ID = re.compile(r"(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(;|$)")


def record_name(domain: str) -> str:
    return f"_mta-sts.{domain}"


def policy_host(domain: str) -> str:
    return f"mta-sts.{domain}"


def mta_sts_policy(mode: str, mx_hosts: list[str], max_age: int) -> str:
    """The policy file served at https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.2)."""
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {h}" for h in mx_hosts] + [f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(policy: str) -> str:
    # Derived from the policy text: it changes exactly when the policy does, so senders refetch.
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def policy_for(inv, domain: str) -> str:
    """The domain's intended policy: its mode and max_age, its mail hosts as mx: lines."""
    settings = inv.domains[domain].mta_sts
    return mta_sts_policy(settings.mode, [h.fqdn for h in inv.hosts_for(domain)], settings.max_age)


def records(inv, domain: str, ttl: int) -> list[Record]:
    """The TXT record announcing the policy and the address of its host (the domain's first mail host)."""
    if inv.domains[domain].mta_sts.mode == "none":
        return []
    first = inv.hosts_for(domain)[0]
    out = [Record.make(record_name(domain), "TXT", f"v=STSv1; id={mta_sts_id(policy_for(inv, domain))}", ttl),
           Record.make(policy_host(domain), "A", str(first.ipv4), ttl)]
    if first.ipv6:
        out.append(Record.make(policy_host(domain), "AAAA", str(first.ipv6), ttl))
    return out


def announcements(values) -> list[str]:
    """The published ``v=STSv1`` TXT values."""
    return sorted(v for v in values if v.startswith("v=STSv1"))


def announced_ids(records_: list[str]) -> list[str]:
    return [m.group(1) for v in records_ for m in [_ID.search(v)] if m]


def mx_pattern_matches(pattern: str, host: str) -> bool:
    pattern, host = normalize_name(pattern), normalize_name(host)
    if pattern.startswith("*."):
        return host.split(".", 1)[-1] == pattern[2:] and "." in host  # one label only (RFC 8461 4.1)
    return pattern == host


class PolicyFetchError(Exception):
    pass


def fetch_mta_sts_policy(host: str, address: str, *, ca_bundle: str | None = None, port: int = 443,
                         timeout: float = HTTPS_TIMEOUT) -> str:
    """GET https://<host>/.well-known/mta-sts.txt from ``address`` (SNI and Host: ``host``), no redirects."""
    context = ssl.create_default_context()  # the system CAs...
    if ca_bundle:
        context.load_verify_locations(ca_bundle)  # ...plus a private CA (the lab's)
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    where = f"https://{host}{MTA_STS_PATH} at {address}"
    try:
        conn.sock = context.wrap_socket(socket.create_connection((address, port), timeout=timeout),
                                        server_hostname=host)
        conn.request("GET", MTA_STS_PATH, headers={"Host": host, "User-Agent": "mailops-verify"})
        response = conn.getresponse()
        body = response.read(65536)
    except ssl.SSLCertVerificationError as e:
        raise PolicyFetchError(f"{where}: certificate not trusted ({e.verify_message})") from None
    except (OSError, http.client.HTTPException) as e:
        raise PolicyFetchError(f"{where}: {e or type(e).__name__}") from None
    finally:
        conn.close()
    if 300 <= response.status < 400:
        raise PolicyFetchError(f"{where}: redirect ({response.status} to {response.getheader('Location')}); "
                               "RFC 8461 3.3 forbids following it")
    if response.status != 200:
        raise PolicyFetchError(f"{where}: HTTP {response.status}")
    return body.decode("utf-8", "replace")


def parse_mta_sts_policy(text: str) -> tuple[dict, list[str]]:
    """RFC 8461 3.2 key: value lines -> ({version, mode, mx: [...], max_age}, problems)."""
    policy: dict = {"mx": []}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            key, value = key.strip(), value.strip()
            if key == "mx":
                policy["mx"].append(value)
            else:
                policy.setdefault(key, value)
    problems = []
    if policy.get("version") != "STSv1":
        problems.append("version: STSv1 missing")
    if policy.get("mode") not in ("enforce", "testing", "none"):
        problems.append(f"invalid mode {policy.get('mode')!r}")
    if not re.fullmatch(r"\d{1,10}", policy.get("max_age", "")) or int(policy["max_age"]) > 31557600:
        problems.append("max_age missing or invalid")
    if not policy["mx"] and policy.get("mode") != "none":
        problems.append("no mx: line")
    return policy, problems

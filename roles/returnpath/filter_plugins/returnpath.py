"""Filters of the mailops ``returnpath`` role (run on the controller).

* ``returnpath_key_problems(ref, base_dir)``: what is wrong with the return-path key
  reference ({env: VAR} or {file: PATH}, resolved exactly as the sasl role resolves
  passwords: that role's resolver is loaded, not copied) and with the keys in it (hex, one
  per line, newest first, at least 16 bytes each).  Messages name the reference, never the
  key, so the task reporting them needs no ``no_log``.
* ``returnpath_key(ref, base_dir)``: the key file's text (the task writing it has no_log).
* ``returnpath_layout(domains, host, subdomain)``: from mailops_domains, what one mail host
  does: ``sending_domains`` (its sending domains -> their return-path domain),
  ``return_domains`` (every return-path domain of the fleet -> its sending domains; any host
  may receive any domain's bounces, as the key is the fleet's), ``accept`` (postmaster@ and
  abuse@ of its sending domains, and the DMARC rua/ruf and TLS-RPT rua mailto: addresses
  whose domain is a mailops domain) and ``relay_domains`` (the domains port 25 receives for).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

try:  # inside Ansible
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - unit tests without Ansible
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

MIN_KEY_BYTES = 16      # mailops.returnpath.address.MIN_KEY_BYTES
FIELD = "mailops_return_path.key"


def _sasl_resolver():
    """sasl_passwd._resolve, the one place that reads {env:}/{file:} secret references."""
    path = Path(__file__).resolve().parents[2] / "sasl" / "filter_plugins" / "sasl_passwd.py"
    spec = importlib.util.spec_from_file_location("mailops_sasl_passwd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._resolve


def _resolve(ref, base_dir):
    value, problem = _sasl_resolver()(ref, base_dir)
    if problem:
        # the resolver speaks of a password; here the reference is the return-path key
        return None, FIELD + problem[len("password"):] if problem.startswith("password") else f"{FIELD}: {problem}"
    return value, None


def returnpath_key_problems(ref, base_dir=None) -> list[str]:
    value, problem = _resolve(ref, base_dir)
    if problem:
        return [problem]
    lines = [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        return [f"{FIELD}: no key in the secret; write one hex key per line (e.g. openssl rand -hex 32)"]
    for number, line in enumerate(lines, start=1):
        try:
            key = bytes.fromhex(line)
        except ValueError:
            return [f"{FIELD}: key {number} is not hex; write one hex key per line (e.g. openssl rand -hex 32)"]
        if len(key) < MIN_KEY_BYTES:
            return [f"{FIELD}: key {number} has {len(key)} bytes; use at least {MIN_KEY_BYTES} (openssl rand -hex 32)"]
    return []


def returnpath_key(ref, base_dir=None) -> str:
    problems = returnpath_key_problems(ref, base_dir)
    if problems:
        raise AnsibleFilterError("; ".join(problems))
    value, _ = _resolve(ref, base_dir)
    lines = [line.strip().lower() for line in value.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    return "\n".join(lines) + "\n"


def _mailto(values) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    out = []
    for value in values:
        text = str(value).strip()
        if not text.lower().startswith("mailto:"):
            continue
        addr = text[len("mailto:"):].split("!", 1)[0].strip().lower()
        if "@" in addr:
            out.append(addr)
    return out


def returnpath_layout(domains, host, subdomain="bounces") -> dict:
    domains = domains or {}
    if not isinstance(domains, dict):
        raise AnsibleFilterError("mailops_domains must be a mapping of domain names")
    sending, returns, accept = {}, {}, set()
    for name in sorted(domains):
        settings = domains[name] or {}
        domain = str(name).strip().rstrip(".").lower()
        rp = str(settings.get("return_path") or (f"{subdomain}.{domain}" if subdomain else domain)).strip().lower()
        returns.setdefault(rp, [])
        if domain not in returns[rp]:
            returns[rp].append(domain)
        hosts = settings.get("hosts")
        if hosts is None or host in hosts:
            sending[domain] = rp
            accept.update({f"postmaster@{domain}", f"abuse@{domain}"})
    names = {str(n).strip().rstrip(".").lower() for n in domains}
    for settings in domains.values():
        settings = settings or {}
        dmarc = settings.get("dmarc") or {}
        tls_rpt = settings.get("tls_rpt") or {}
        for addr in _mailto(dmarc.get("rua")) + _mailto(dmarc.get("ruf")) + _mailto(tls_rpt.get("rua")):
            if addr.rpartition("@")[2] in names:
                accept.add(addr)
    relay = sorted(set(sending) | set(returns) | {a.rpartition("@")[2] for a in accept})
    return {"sending_domains": sending, "return_domains": {k: sorted(v) for k, v in sorted(returns.items())},
            "accept": sorted(accept), "relay_domains": relay}


class FilterModule:
    def filters(self):
        return {
            "returnpath_key": returnpath_key,
            "returnpath_key_problems": returnpath_key_problems,
            "returnpath_layout": returnpath_layout,
        }

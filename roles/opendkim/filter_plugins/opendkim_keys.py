"""Filters of the mailops ``opendkim`` role (run on the controller).

* ``opendkim_key_problems(keys, keystore)``: what is wrong with key store
  entries (unsafe selector or path, unknown algorithm/state, key file missing).
* ``opendkim_signing_keys(keys)``: the keys that sign: for each (domain,
  algorithm) the newest ACTIVE key (by ``activated``, then ``created``).
  Pending keys are installed but never sign; retired keys are not installed.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
ALGORITHMS = ("rsa", "ed25519")
STATES = ("pending", "active", "retired")


def _when(value) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def opendkim_key_problems(keys, keystore="") -> list[str]:
    problems = []
    seen = set()
    for key in keys or []:
        if not isinstance(key, dict):
            problems.append("key store entry is not a mapping")
            continue
        domain, selector = key.get("domain"), key.get("selector")
        where = f"key {selector}._domainkey.{domain}"
        if not isinstance(domain, str) or not _DOMAIN.match(domain):
            problems.append(f"{where}: domain must be a lower-case domain name")
        if not isinstance(selector, str) or not all(_LABEL.match(p) for p in selector.split(".")):
            problems.append(f"{where}: selector must be lower-case DNS labels (letters, digits, hyphens)")
        if key.get("algorithm") not in ALGORITHMS:
            problems.append(f"{where}: algorithm must be one of {', '.join(ALGORITHMS)}")
        if key.get("state") not in STATES:
            problems.append(f"{where}: state must be one of {', '.join(STATES)}")
        if (domain, selector) in seen:
            problems.append(f"{where}: listed twice")
        seen.add((domain, selector))
        rel = key.get("private_key")
        if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            problems.append(f"{where}: private_key must be a path inside the key store")
        elif keystore and not (Path(keystore).expanduser() / rel).is_file():
            problems.append(f"{where}: private key file {Path(keystore).expanduser() / rel} is missing")
    return problems


def opendkim_signing_keys(keys) -> list[dict]:
    newest: dict[tuple, dict] = {}
    for key in keys or []:
        if key.get("state") != "active":
            continue
        group = (key["domain"], key.get("algorithm"))
        rank = (_when(key.get("activated")), _when(key.get("created")), key["selector"])
        if group not in newest or rank > newest[group][0]:
            newest[group] = (rank, key)
    return [key for _, (_, key) in sorted(newest.items(), key=lambda kv: (kv[0][0], kv[0][1] != "rsa"))]


class FilterModule:
    def filters(self):
        return {
            "opendkim_key_problems": opendkim_key_problems,
            "opendkim_signing_keys": opendkim_signing_keys,
        }

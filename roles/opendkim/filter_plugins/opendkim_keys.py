"""Filters of the mailops ``opendkim`` role (run on the controller).

* ``opendkim_key_problems(keys, keystore)``: what is wrong with key store
  entries (unsafe selector or path, unknown algorithm/state, key file missing).
* ``opendkim_signing_keys(keys)``: the keys that sign, by the rule the key
  store uses (:func:`mailops.dkim.signing.signing_keys`: for each domain and
  algorithm the newest active key).  Pending keys are installed but never
  sign; retired keys are not installed.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

# The controller runs Ansible from the venv mailops is installed in.
from mailops.dkim.signing import ALGORITHMS, STATES, signing_keys

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


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
    return signing_keys(keys)


class FilterModule:
    def filters(self):
        return {
            "opendkim_key_problems": opendkim_key_problems,
            "opendkim_signing_keys": opendkim_signing_keys,
        }

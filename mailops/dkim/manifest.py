"""The key store's manifest, ``keys.json``: its entries (:class:`DkimKey`), their times, and
the validation that turns a damaged manifest into one line naming the file, entry and field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailops.dkim.signing import ALGORITHMS, STATES
from mailops.dns.kinds.dkim import parse_tags, record_name
from mailops.errors import MailopsError
from mailops.inventory.files import UnsafeFile, read_regular_file

MANIFEST = "keys.json"
# a FIFO or device is refused and a file is read only this far: 200 domains' keys take well under 1 MiB
MAX_MANIFEST_BYTES = 16 << 20
VERSION = 1
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 4096
FIELDS = ("domain", "selector", "algorithm", "bits", "state", "created", "activated", "retired",
          "private_key", "dns_value")
SELECTOR_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DOMAIN_RE = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")


# --------------------------------------------------------------------------- time


def utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC, microsecond=0)
    return now.astimezone(UTC).replace(microsecond=0)


def format_time(when: datetime) -> str:
    """ISO 8601 in UTC with a Z: ``2026-11-22T10:46:00Z``."""
    return utc_now(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """ValueError for what is not an ISO 8601 time, also one whose UTC equivalent is outside years 1-9999."""
    when = datetime.fromisoformat(text)
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        raise ValueError(f"{text} is outside the years 1-9999 in UTC") from None


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DkimKey:
    """One manifest entry.  Holds no private key material (only its relative path)."""

    domain: str
    selector: str
    algorithm: str
    bits: int | None
    state: str
    created: str
    activated: str | None
    retired: str | None
    private_key: str
    dns_value: str

    @property
    def record_name(self) -> str:
        """The TXT owner name: ``<selector>._domainkey.<domain>``."""
        return record_name(self.domain, self.selector)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


def parse_manifest(where: Path) -> list[DkimKey]:
    """The entries of keys.json ([] when there is none); MailopsError naming the file, entry and field."""
    try:
        text = read_regular_file(where, MAX_MANIFEST_BYTES).decode("utf-8")
    except FileNotFoundError:
        return []
    except UnsafeFile as exc:
        raise MailopsError(f"{where} {exc}; restore the DKIM key manifest from a backup") from None
    except OSError as exc:
        raise MailopsError(f"{where}: cannot read the DKIM key manifest ({exc.strerror or exc}); "
                           "check its permissions") from None
    except UnicodeDecodeError as exc:
        raise MailopsError(f"{where}: not UTF-8 (byte {exc.start}); restore it from a backup") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MailopsError(f"{where}: not valid JSON ({exc}); restore it from a backup") from None
    except RecursionError:
        raise MailopsError(f"{where}: not a key manifest (JSON nested too deeply); restore it from a backup") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("keys"), list):
        raise MailopsError(f"{where}: expected {{\"version\": 1, \"keys\": [...]}}; "
                           "restore it from a backup or upgrade mailops")
    keys: list[DkimKey] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(data["keys"]):
        keys.append(_entry(where, i, entry))
        ident = (keys[-1].domain, keys[-1].selector)
        if ident in seen:
            raise MailopsError(f"{where}: keys[{i}].selector: {ident[1]} appears twice for {ident[0]}; "
                               "remove the duplicate entry")
        seen.add(ident)
    return keys

def _entry(manifest: Path, i: int, entry: Any) -> DkimKey:
    where = f"{manifest}: keys[{i}]"
    fix = "fix the entry or restore keys.json from a backup"
    if not isinstance(entry, dict):
        raise MailopsError(f"{where}: expected an object; {fix}")
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        raise MailopsError(f"{where}: missing field {missing[0]}; {fix}")
    extra = sorted(set(entry) - set(FIELDS))
    if extra:
        raise MailopsError(f"{where}: unknown field {extra[0]}; remove it")

    def bad(name: str, want: str) -> MailopsError:
        shown = repr(entry[name]) if name != "dns_value" else "(value)"
        return MailopsError(f"{where}.{name}: {shown} is not {want}; {fix}")

    if not isinstance(entry["domain"], str) or not DOMAIN_RE.fullmatch(entry["domain"]):
        raise bad("domain", "a lowercase domain name")
    if not isinstance(entry["selector"], str) or not SELECTOR_RE.fullmatch(entry["selector"]):
        raise bad("selector", "a DKIM selector")
    if entry["algorithm"] not in ALGORITHMS:
        raise bad("algorithm", "rsa or ed25519")
    if entry["state"] not in STATES:
        raise bad("state", "pending, active or retired")
    bits = entry["bits"]
    if entry["algorithm"] == "rsa":
        if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise bad("bits", "a number from 2048 to 4096")
    elif bits is not None:
        raise bad("bits", "null (ed25519 keys have no size)")
    for name in ("created", "activated", "retired"):
        value = entry[name]
        if value is None and name != "created":
            continue
        try:
            if not isinstance(value, str):
                raise ValueError
            parse_time(value)
        except ValueError:
            raise bad(name, "an ISO 8601 time" + (" or null" if name != "created" else "")) from None
    if entry["state"] == "active" and entry["activated"] is None:
        raise bad("activated", "set (an active key needs its activation time)")
    if entry["state"] == "retired" and entry["retired"] is None:
        raise bad("retired", "set (a retired key needs its retirement time)")
    rel = entry["private_key"]
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise bad("private_key", "a path inside the store, like shop.test/mo-20261122.key")
    value = entry["dns_value"]
    if not isinstance(value, str) or not parse_tags(value).get("p"):
        raise bad("dns_value", "a DKIM record with p=")
    return DkimKey(**{name: entry[name] for name in FIELDS})

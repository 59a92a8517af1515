"""Which DKIM keys sign: the one rule, shared by the key store and the opendkim role.

For each (domain, algorithm) the newest ACTIVE key signs (by ``activated``, then
``created``, then selector).  Activating a key retires the active key of its
algorithm, so there is normally one; a hand-edited manifest with two still
signs once per algorithm, with the newest.  Pending keys are installed but
never sign; retired keys are only published.

Standard library only: the role's filter plugin imports this on the Ansible
controller and gives it keys.json entries (dicts); the store gives DkimKeys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

ALGORITHMS = ("rsa", "ed25519")
STATES = ("pending", "active", "retired")
K = TypeVar("K")
_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def _field(key: Any, name: str) -> Any:
    return key.get(name) if isinstance(key, Mapping) else getattr(key, name, None)


def _when(value: Any) -> datetime:
    if not value:
        return _NEVER
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return _NEVER
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def signing_keys(keys: Iterable[K] | None) -> list[K]:
    """The keys that sign, by domain, RSA before Ed25519 (keys.json dicts or DkimKey objects)."""
    newest: dict[tuple, tuple[tuple, K]] = {}
    for key in keys or []:
        if _field(key, "state") != "active":
            continue
        group = (_field(key, "domain"), _field(key, "algorithm"))
        rank = (_when(_field(key, "activated")), _when(_field(key, "created")), _field(key, "selector") or "")
        if group not in newest or rank > newest[group][0]:
            newest[group] = (rank, key)
    return [key for _, (_, key) in sorted(newest.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] != "rsa"))]

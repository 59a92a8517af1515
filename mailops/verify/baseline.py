"""Watching over time: what changed since a previous ``mailops verify --json`` run.

A check is known by (group, subject, name); a change is a new status, a check that
appeared, or one that is gone.  Details alone (a delivery time, a TTL seen) are not
changes, so a daily run alerts on what an operator must look at, as Mail-in-a-Box's
status check mails only what changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mailops.errors import MailopsError
from mailops.verify.result import STATUSES

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Change:
    key: Key
    before: str | None  # None: the check is new
    after: str | None   # None: the check is gone
    detail: str         # what is seen now (or was seen last, for a gone check)

    @property
    def worse(self) -> bool:
        rank = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3}
        return (self.after == "fail" and self.before != "fail") or (
            self.before is not None and self.after is not None and rank[self.after] > rank[self.before])

    def to_dict(self) -> dict:
        group, subject, name = self.key
        return {"group": group, "subject": subject, "name": name, "before": self.before, "after": self.after,
                "detail": self.detail}


def load_baseline(path: Path) -> dict[Key, dict]:
    """The rows of a previous ``verify --json`` output, by key; a clear error for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MailopsError(f"--baseline {path}: no such file; write one with mailops verify --json > {path}") from None
    except OSError as exc:
        raise MailopsError(f"--baseline {path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise MailopsError(f"--baseline {path}: not JSON ({exc}); give the output of mailops verify --json") from None
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise MailopsError(f"--baseline {path}: no results list; give the output of mailops verify --json")
    out: dict[Key, dict] = {}
    for i, row in enumerate(rows):
        try:
            key = (str(row["group"]), str(row["subject"]), str(row["name"]))
            status = row["status"]
        except (TypeError, KeyError) as exc:
            raise MailopsError(f"--baseline {path}: results[{i}] lacks {exc}; give the output of "
                               "mailops verify --json") from None
        if status not in STATUSES:
            raise MailopsError(f"--baseline {path}: results[{i}].status {status!r} is not one of "
                               f"{', '.join(STATUSES)}")
        out[key] = {"status": status, "detail": str(row.get("detail", ""))}
    return out


def compare(previous: dict[Key, dict], current: list, *, groups: tuple[str, ...] | None = None) -> list[Change]:
    """Changes from ``previous`` (load_baseline) to ``current`` (CheckResults), sorted worst first.
    Checks of groups this run did not run are not reported gone."""
    now = {(r.group, r.subject, r.name): r for r in current}
    changes = [Change(key, previous.get(key, {}).get("status"), r.status, r.detail)
               for key, r in now.items() if previous.get(key, {}).get("status") != r.status]
    changes += [Change(key, row["status"], None, row["detail"]) for key, row in previous.items()
                if key not in now and (groups is None or key[0] in groups)]
    return sorted(changes, key=lambda c: (not c.worse, c.key))


def save_state(path: Path, report_dict: dict) -> None:
    """Write the report as the next run's baseline, atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(report_dict, f, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise MailopsError(f"--state {path}: cannot write ({exc.strerror}); choose a writable path") from None

"""One check's outcome. Every check module returns a list of these; nothing prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail", "inconclusive"]
STATUSES: tuple[str, ...] = ("pass", "warn", "fail", "inconclusive")


@dataclass(frozen=True)
class CheckResult:
    group: str     # "dns" | "server" | "security" | "send"
    subject: str   # the domain or host the check is about
    name: str      # short stable id, e.g. "spf.authorises-ipv6"
    status: Status
    detail: str    # what was seen, one line
    fix: str = ""  # one line saying how to fix it (set for fail and warn)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.status in ("fail", "warn") and not self.fix:
            raise ValueError(f"{self.name}: a {self.status} needs a fix hint")

    def to_dict(self) -> dict:
        return asdict(self)


def passed(group: str, subject: str, name: str, detail: str) -> CheckResult:
    return CheckResult(group, subject, name, "pass", detail)


def failed(group: str, subject: str, name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(group, subject, name, "fail", detail, fix)


def warned(group: str, subject: str, name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(group, subject, name, "warn", detail, fix)


def inconclusive(group: str, subject: str, name: str, detail: str) -> CheckResult:
    return CheckResult(group, subject, name, "inconclusive", detail)

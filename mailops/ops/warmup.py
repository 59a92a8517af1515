"""`mailops warmup status`: today's warm-up allowance of each mail host, what its
policy service accepted today, and what the logs say was sent today."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timezone
from pathlib import Path

from mailops.errors import MailopsError
from mailops.inventory import Inventory, load
from mailops.ops import logs
from mailops.ops.remote import Remote

# The policy service on the host answers its counters read-only (roles: policyd).
POLICYD_STATUS = "mailops-policyd --status"


def status(inventory: Inventory | str | Path, host: str | None = None, today: date | None = None) -> dict:
    from mailops.ratelimits import warmup_allowance

    inv = inventory if isinstance(inventory, Inventory) else load(inventory)
    warmup = inv.rate_limits.warmup
    if warmup is None:
        raise MailopsError(f"{inv.path}: no warm-up schedule; set mailops_rate_limits.warmup "
                           "(start and schedule of day/volume)")
    now = datetime.now(timezone.utc)
    today = today or now.date()
    day, allowance = warmup_allowance(warmup, today)
    midnight = datetime.combine(today, time(0), tzinfo=timezone.utc)
    hosts = inv.select_hosts(host)
    out = {"date": today.isoformat(), "start": warmup.start.isoformat(), "day": day, "allowance": allowance,
           "schedule": [{"day": s.day, "volume": s.volume} for s in warmup.schedule], "hosts": {}}
    for h in hosts:
        stats = logs.collect([h], since=midnight, now=now)
        report = stats.report()
        with Remote(h) as remote:
            code, text, err = remote.run_with_stderr(POLICYD_STATUS)
        policy = None
        if code == 0:
            try:
                policy = json.loads(text).get("warmup")
            except ValueError:
                policy = None
        accepted = policy.get("accepted_today") if policy else None
        out["hosts"][h.name] = {
            "sent_today": report["totals"].get("sent", 0),
            "deferred_today": report["totals"].get("deferred", 0),
            "bounced_today": report["totals"].get("bounced", 0),
            "accepted_today": accepted,
            "remaining": None if allowance is None or accepted is None else max(0, allowance - accepted),
            "enforced": policy is not None,
        }
    return out

"""Filters of the mailops ``postfix`` role: per-destination rate limits (run on the controller).

* ``postfix_rate_limit_transports(destinations, initial_concurrency=2)``:
  ``mailops_rate_limits.destinations`` (domain -> {concurrency, delay,
  messages_per_minute}) as a list sorted by domain of
  ``{domain, transport, concurrency, initial_concurrency, rate_delay}``.
  ``transport`` is ``rl_`` + the domain with ``.`` -> ``_`` and ``-`` -> ``__``
  (a valid Postfix parameter prefix; distinct domains keep distinct names).
  ``rate_delay`` is whole seconds: ``delay`` rounded up (Postfix counts whole
  seconds), at least 60/messages_per_minute rounded up.
* ``postfix_rate_limit_main_cf(transports, transport_map, failed_cohort_limit)``:
  the main.cf settings: ``transport_maps`` and each transport's
  ``_destination_concurrency_limit``, ``_initial_destination_concurrency``,
  ``_destination_rate_delay`` (and, with a delay, a failed-cohort limit so
  one failed connection does not mark the destination dead). Empty without
  destinations.
* ``postfix_rate_limit_services(transports)``: their master.cf services, plain
  ``smtp`` clients logging as ``postfix/<transport>/smtp``; they inherit every
  smtp_* setting of main.cf (bind addresses, TLS, EHLO name).

mailops/ratelimits.py has the same naming and delay rules (tests compare them).
"""

from __future__ import annotations

import math
import re

from ansible.errors import AnsibleFilterError

_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_UNITS = {"s": 1, "m": 60, "h": 3600}


def transport_name(domain: str) -> str:
    return "rl_" + domain.replace("-", "__").replace(".", "_")


def rate_delay_seconds(delay, messages_per_minute=None) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(delay).strip())
    if not match:
        raise AnsibleFilterError(f"rate limit delay {delay!r} is not 0 or a number with ms, s, m or h")
    number, unit = int(match.group(1)), match.group(2) or "s"
    seconds = math.ceil(number / 1000) if unit == "ms" else number * _UNITS[unit]
    if messages_per_minute:
        seconds = max(seconds, math.ceil(60 / int(messages_per_minute)))
    return seconds


def postfix_rate_limit_transports(destinations, initial_concurrency=2) -> list[dict]:
    result = []
    for domain, limit in sorted((destinations or {}).items()):
        name = str(domain).strip().lower().rstrip(".")
        if not _DOMAIN.match(name):
            raise AnsibleFilterError(f"rate limit destination {domain!r} is not a domain name")
        if not isinstance(limit, dict):
            raise AnsibleFilterError(f"rate limit of {name} must be a mapping (concurrency, delay)")
        try:
            concurrency = int(limit.get("concurrency"))
        except (TypeError, ValueError):
            raise AnsibleFilterError(f"rate limit of {name}: concurrency must be a whole number") from None
        if not 1 <= concurrency <= 100:
            raise AnsibleFilterError(f"rate limit of {name}: concurrency must be 1-100")
        result.append({
            "domain": name,
            "transport": transport_name(name),
            "concurrency": concurrency,
            "initial_concurrency": max(1, min(concurrency, int(initial_concurrency))),
            "rate_delay": rate_delay_seconds(limit.get("delay", 0), limit.get("messages_per_minute")),
        })
    names = [t["transport"] for t in result]
    if len(set(names)) != len(names):
        raise AnsibleFilterError("two rate limit destinations give the same transport name; list each domain once")
    return result


def postfix_rate_limit_main_cf(transports, transport_map="texthash:/etc/postfix/transport",
                               failed_cohort_limit=10) -> dict:
    if not transports:
        return {}
    settings = {"transport_maps": transport_map}
    for t in transports:
        name = t["transport"]
        settings[f"{name}_destination_concurrency_limit"] = t["concurrency"]
        settings[f"{name}_initial_destination_concurrency"] = t["initial_concurrency"]
        settings[f"{name}_destination_rate_delay"] = f"{t['rate_delay']}s"
        if t["rate_delay"] > 0:
            settings[f"{name}_destination_concurrency_failed_cohort_limit"] = int(failed_cohort_limit)
    return settings


def postfix_rate_limit_services(transports) -> list[dict]:
    return [{"service": t["transport"], "type": "unix", "chroot": "y", "command": "smtp",
             "options": {"syslog_name": f"postfix/{t['transport']}"}} for t in transports or []]


class FilterModule:
    def filters(self):
        return {
            "postfix_rate_limit_transports": postfix_rate_limit_transports,
            "postfix_rate_limit_main_cf": postfix_rate_limit_main_cf,
            "postfix_rate_limit_services": postfix_rate_limit_services,
        }

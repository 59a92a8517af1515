"""Sending limits as mailops computes them on the controller.

The policy service on a mail host (role ``policyd``, a stdlib-only script)
enforces the same rules with its own copy of this logic; tests run both over
the same cases so the two cannot drift apart.

* :func:`parse_window` / :func:`format_window`: the window of a per-user limit
  (``10s``, ``5m``, ``1h``, ``1d`` or whole seconds, 1 s to 7 days).
* :func:`per_user_limit`: ``(messages, window_seconds)`` of a per-user limit,
  written as ``messages_per_hour: N`` or ``messages: N, window: D``.
* :func:`warmup_allowance`: the warm-up day and daily allowance for a date.

Warm-up rules (``mailops_rate_limits.warmup``, UTC days, day 1 = ``start``):

* each step's ``volume`` applies from its ``day`` up to the day before the
  next step; the LAST step applies on its own day only, and from the day
  after it the warm-up is over: no warm-up limit any more (to hold a volume
  for longer, add a later step with the same volume);
* before ``start`` (and on days before the first step's day) the first step's
  volume applies: a new IP is never unlimited before its warm-up has run;
* the allowance counts recipients of accepted submitted messages (a message
  to three recipients uses three).

:func:`warmup_allowance` returns ``(day, allowance)``: ``day`` is the warm-up
day number while the schedule runs (1 .. the last step's day) and ``None``
before the start or after the end; ``allowance`` is ``None`` when there is no
limit (no warm-up, or it is over).
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = 7 * 86400
_WINDOW = re.compile(r"(\d+)\s*([smhd])")


def parse_window(value: Any) -> int:
    """Seconds of a window: ``10s``, ``5m``, ``1h``, ``1d`` or a whole number of seconds."""
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _WINDOW.fullmatch(value.strip())):
        seconds = int(match.group(1)) * WINDOW_UNITS[match.group(2)]
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    else:
        seconds = None
    if seconds is None:
        shown = repr(value) if isinstance(value, str) else str(value)
        raise ValueError(f"{shown} is not a window; write a number with s, m, h or d, e.g. 10s, 15m, 1h, 1d")
    if not 1 <= seconds <= MAX_WINDOW:
        raise ValueError(f"a window of {seconds} s is out of range; use 1s to 7d")
    return seconds


def format_window(seconds: int) -> str:
    """``3600`` -> ``1h``, ``600`` -> ``10m``, ``90`` -> ``90s`` (the largest exact unit)."""
    for unit in ("d", "h", "m"):
        if seconds % WINDOW_UNITS[unit] == 0:
            return f"{seconds // WINDOW_UNITS[unit]}{unit}"
    return f"{seconds}s"


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def per_user_limit(limit: Any) -> tuple[int, int] | None:
    """``(messages, window_seconds)`` of a PerUserLimit (model or mapping); None for no limit."""
    if limit is None:
        return None
    per_hour = _get(limit, "messages_per_hour")
    if per_hour is not None:
        return int(per_hour), 3600
    messages = _get(limit, "messages")
    if messages is None:
        return None
    window = _get(limit, "window")
    return int(messages), 3600 if window is None else parse_window(window)


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def warmup_allowance(warmup: Any, today: date) -> tuple[int | None, int | None]:
    """``(day, allowance)`` of a Warmup (model or mapping) on ``today`` (a UTC date).

    See the module docstring for the rules; ``warmup=None`` gives ``(None, None)``.
    """
    if warmup is None:
        return None, None
    steps = sorted(((int(_get(s, "day")), int(_get(s, "volume"))) for s in _get(warmup, "schedule") or []))
    if not steps:
        return None, None
    day = (today - _as_date(_get(warmup, "start"))).days + 1
    if day < 1:
        return None, steps[0][1]
    if day > steps[-1][0]:
        return None, None
    allowance = steps[0][1]
    for step_day, volume in steps:
        if step_day <= day:
            allowance = volume
    return day, allowance


def rate_delay_seconds(delay: Any, messages_per_minute: int | None = None) -> int:
    """Postfix ``_destination_rate_delay`` in whole seconds for a destination limit.

    ``delay`` is ``0`` or a number with ms/s/m/h; ``messages_per_minute`` adds
    a floor of 60/N seconds. Postfix counts whole seconds, so both round up:
    above 60 messages per minute the cap is 60 per minute (one per second).
    """
    text = str(delay).strip()
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    if not match:
        raise ValueError(f"{text!r} is not a delay; write 0 or a number with ms, s, m or h")
    number, unit = int(match.group(1)), match.group(2) or "s"
    seconds = math.ceil(number / 1000) if unit == "ms" else number * WINDOW_UNITS[unit]
    if messages_per_minute:
        seconds = max(seconds, math.ceil(60 / int(messages_per_minute)))
    return seconds


def transport_name(domain: str) -> str:
    """The Postfix transport of a rate-limited destination: ``gmail.com`` -> ``rl_gmail_com``.

    Letters, digits and underscores only (a valid parameter prefix): ``.``
    becomes ``_`` and ``-`` becomes ``__``, which keeps names distinct
    (a label never starts or ends with a hyphen).
    """
    return "rl_" + domain.lower().rstrip(".").replace("-", "__").replace(".", "_")

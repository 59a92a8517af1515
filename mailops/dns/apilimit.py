"""Client-side rate limiting for DNS provider APIs (not mail sending: that is mailops.ratelimits).

A :class:`RateLimiter` holds one or more ``(requests, seconds)`` limits and
blocks :meth:`RateLimiter.acquire` until one more request keeps every limit:
never more than ``requests`` in any ``seconds``-long sliding window.  It is
thread-safe: ``dns plan``/``sync`` list and apply zones from many threads.

Providers share one limiter per API user (:func:`shared`), since a provider's
documented limit counts every request of the user, not of one client object.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Hashable

# Cloudflare's documented limits: 1200 requests per 5 minutes per user (or account token)
# and 200 per second per IP (developers.cloudflare.com/fundamentals/api/reference/limits/).
CLOUDFLARE_LIMITS: tuple[tuple[int, float], ...] = ((1200, 300.0), (200, 1.0))
# Route 53's documented limit: five API requests per second per AWS account
# (docs.aws.amazon.com/Route53/latest/DeveloperGuide/DNSLimitations.html, "Limits on API requests").
ROUTE53_LIMITS: tuple[tuple[int, float], ...] = ((5, 1.0),)


class RateLimiter:
    def __init__(self, limits: tuple[tuple[int, float], ...] | list[tuple[int, float]], *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if not limits or any(n < 1 or w <= 0 for n, w in limits):
            raise ValueError(f"rate limits must be (requests >= 1, seconds > 0) pairs, got {limits!r}")
        self.limits = tuple((int(n), float(w)) for n, w in limits)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        # Grant times, oldest first; only the last max(n) matter for any limit.
        self._granted: deque[float] = deque(maxlen=max(n for n, _ in self.limits))
        self.waited = 0.0  # seconds spent waiting, all threads together

    def _wait_needed(self, now: float) -> float:
        wait = 0.0
        for n, window in self.limits:
            if len(self._granted) >= n:
                # The n-th most recent grant must have left the window before one more is allowed.
                wait = max(wait, self._granted[-n] + window - now)
        return wait

    def acquire(self) -> float:
        """Block until one more request keeps every limit; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._granted.append(now)
                    self.waited += waited
                    return waited
            self._sleep(wait)  # outside the lock: other threads may be granted meanwhile, so check again
            waited += wait


_shared: dict[Hashable, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared(key: Hashable, limits) -> RateLimiter:
    """The process's one limiter for ``key`` (e.g. the API's URL and a hash of the token)."""
    with _shared_lock:
        if key not in _shared:
            _shared[key] = RateLimiter(limits)
        return _shared[key]


def peak(times: list[float], window: float) -> int:
    """The most of ``times`` (seconds, any order) inside any ``window``-long sliding window
    (half-open [t, t + window)), for showing that a run kept a limit."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best

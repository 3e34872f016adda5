"""A token bucket: `rate` requests a second on average, bursts of up to `burst` at once.

Shared by the HTTP handlers of one server or router; guarded by its own lock, so any thread may ask.
"""
from __future__ import annotations

import math
import threading
import time

from .errors import RateLimited


class RateLimiter:
    """Admit a request when a token is left; refill `rate` tokens a second up to `burst`."""

    def __init__(self, rate: float, burst: int | None = None, clock=time.monotonic):
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate_limit must be a positive number of requests per second, got {rate!r}")
        self.rate = float(rate)
        self.burst = max(int(burst if burst is not None else math.ceil(rate)), 1)
        self._clock = clock
        self._tokens, self._at = float(self.burst), clock()
        self._lock = threading.Lock()
        self.rejected = 0

    def try_acquire(self) -> float:
        """0.0 when admitted; else the seconds until a token is due (the reply's Retry-After)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            self.rejected += 1
            return (1 - self._tokens) / self.rate

    def admit(self) -> None:
        """Take a token or raise RateLimited (HTTP 429 with Retry-After)."""
        wait = self.try_acquire()
        if wait:
            raise RateLimited(f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded; "
                              f"retry in {wait:.3f} s", retry_after=wait)

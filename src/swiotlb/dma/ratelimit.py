"""The kernel's message rate limiting (``___ratelimit``) and WARN_ONCE, on an injected clock.

``dev_warn_ratelimited`` keeps one state per call site: at most ``burst`` messages per
``interval``; the first call after an interval that suppressed messages first prints
"<func>: N callbacks suppressed" (spec §4.5: 10 messages per 5 s). The clock is a callable
returning nanoseconds, so simulations are deterministic.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

Clock = Callable[[], int]

DEFAULT_RATELIMIT_INTERVAL_NS = 5_000_000_000
DEFAULT_RATELIMIT_BURST = 10


class RateLimit:
    """One ``struct ratelimit_state`` (one call site)."""

    __slots__ = ("func", "interval", "burst", "begin", "printed", "missed", "_clock", "_lock")

    def __init__(
        self,
        func: str,
        clock: Clock,
        *,
        interval_ns: int = DEFAULT_RATELIMIT_INTERVAL_NS,
        burst: int = DEFAULT_RATELIMIT_BURST,
    ) -> None:
        self.func = func
        self.interval = interval_ns
        self.burst = burst
        self.begin: int | None = None
        self.printed = 0
        self.missed = 0
        self._clock = clock
        self._lock = threading.Lock()

    def allow(self, logger: logging.Logger) -> bool:
        """True if the next message may be printed; logs the suppression summary when due."""
        with self._lock:
            now = self._clock()
            if self.begin is None:
                self.begin = now
            if now > self.begin + self.interval:
                if self.missed:
                    logger.warning("%s: %d callbacks suppressed", self.func, self.missed)
                    self.missed = 0
                self.begin = now
                self.printed = 0
            if self.printed < self.burst:
                self.printed += 1
                return True
            self.missed += 1
            return False


class WarnOnce:
    """``WARN_ONCE``/``dev_WARN_ONCE``: each call site prints once per machine."""

    __slots__ = ("_seen", "_lock")

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first(self, site: str) -> bool:
        """True the first time ``site`` is seen."""
        with self._lock:
            if site in self._seen:
                return False
            self._seen.add(site)
            return True

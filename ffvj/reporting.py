"""What a running show counts and reports while it keeps going: thread-safe counts and a rate-limited log.

During a show, bad input is clamped or dropped, counted and logged, and the picture goes on. Every
part does that the same way::

    counts = Counts("packets", "bad_args")      # the keys it may count, all starting at 0
    counts.add("bad_args")                       # from any thread
    counts["bad_args"], counts.snapshot()        # one value, or all of them at once

    warn = RateLimitedLog(log, interval=2.0)
    warn.warning("bad:l0.zoom", "ignored %s", x) # at most once per interval per key, with how often
"""

from __future__ import annotations

import logging
import math
import threading
import time


class Counts:
    """Named counters that several threads add to (``+=`` on a shared int is not atomic)."""

    def __init__(self, *keys: str) -> None:
        self._values = dict.fromkeys(keys, 0)
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        """Add ``n`` to ``key`` (KeyError for a key not declared: a typo must not count silently)."""
        with self._lock:
            self._values[key] += n

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._values[key]

    def snapshot(self) -> dict[str, int]:
        """Every count, read at one moment."""
        with self._lock:
            return dict(self._values)


MAX_KEYS = 1024  # distinct problems remembered; past that the memory starts over (bounded, whatever arrives)


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval`` seconds, with how often it happened."""

    def __init__(self, logger: logging.Logger, interval: float = 2.0):
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if key not in self._count and len(self._count) >= MAX_KEYS:  # keys made of client input
                self._last.clear()
                self._count.clear()
            self._count[key] = self._count.get(key, 0) + 1
            if now - self._last.get(key, -math.inf) < self.interval:
                return
            self._last[key] = now
            count, self._count[key] = self._count[key], 0
        self.logger.warning(msg + (f" ({count}× since last report)" if count > 1 else ""), *args)

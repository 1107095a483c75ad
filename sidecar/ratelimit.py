"""Log rate limiting: at most one line per key and period, shared by the daemon and the client.

A leaf module (standard library only), so the client may import it without pulling in
any of the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LogLimiter:
    """At most one line per key and period; the next line carries how many were held back."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """The count held back since the last admitted line, or None to stay quiet now."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

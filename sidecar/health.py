"""The daemon's own counters (`Health`), bumped on the event loop and read at each scrape."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

DROP_REASONS = ("internal_error", "http_busy", "http_timeout")
"""Why events the daemon received were not processed (`drift_sidecar_events_dropped_total`):
an unexpected error while processing them (a defect, logged with its traceback), or a
`POST /v1/events` body refused with 503 (in-flight bodies at http.max_inflight_body_bytes) or
408 (not received within http.body_timeout_s), counted once per body as its events are never
read. The socket never drops: a full queue pauses its readers instead."""
CHECK_BUCKETS = np.array([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])


@dataclass
class Health:
    """The daemon's own counters; plain integers, bumped on the event loop."""

    received: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    connections_refused: int = 0
    http_connections_shed: Counter[str] = field(default_factory=Counter)
    queue_depth: int = 0
    queue_bytes: int = 0
    reloads: Counter[str] = field(default_factory=Counter)
    check_counts: dict[str, np.ndarray] = field(default_factory=dict)
    check_sums: dict[str, float] = field(default_factory=dict)
    check_errors: Counter[str] = field(default_factory=Counter)
    snapshots: Counter[str] = field(default_factory=Counter)
    baseline_writes: Counter[str] = field(default_factory=Counter)
    last_reload_ok: bool = True
    """False from a refused reload until one is applied (the old config keeps running)."""
    capture_failures: Counter[str] = field(default_factory=Counter)
    frame_errors: Counter[str] = field(default_factory=Counter)
    """Arrow IPC streams cut short, by reason (`sidecar.frames.FRAME_ERRORS`)."""

    def observe_check(self, model: str, seconds: float) -> None:
        counts = self.check_counts.setdefault(model, np.zeros(len(CHECK_BUCKETS) + 1, np.int64))
        counts[int(np.searchsorted(CHECK_BUCKETS, seconds, side="left"))] += 1
        self.check_sums[model] = self.check_sums.get(model, 0.0) + seconds


__all__ = ["CHECK_BUCKETS", "DROP_REASONS", "Health"]

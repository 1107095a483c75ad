"""Routes decoded events to their model's tracker; counts and logs what it refuses."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import structlog

from sidecar.config import (
    BaselineSpec,
    Config,
    FeatureSpec,
    ModelSpec,
    PredictionSpec,
)
from sidecar.events import Decoded, Event, Rejection
from sidecar.metrics import Health
from sidecar.ratelimit import LogLimiter
from sidecar.tracker import CaptureData, ModelTracker

log = structlog.get_logger("sidecar.pipeline")
_model = attrgetter("model")
_kind = attrgetter("kind")
_features = attrgetter("features")


class RateLimitedLog:
    """One log line per reason per period, carrying how many were suppressed meanwhile."""

    def __init__(self, period_s: float = 10.0) -> None:
        self._limiter = LogLimiter(period_s)

    def warn(self, reason: str, detail: str, **kw: Any) -> None:
        suppressed = self._limiter.admit(reason)
        if suppressed is not None:
            log.warning("event_rejected", reason=reason, detail=detail[:300],
                        suppressed_since_last=suppressed, **kw)


class Pipeline:
    """The one place events enter model state; runs on the event loop only."""

    def __init__(
        self,
        config: Config,
        health: Health,
        on_capture: Callable[[ModelTracker, CaptureData], None] | None = None,
        on_stats: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.on_capture = on_capture
        self.on_stats = on_stats
        self.trackers: dict[str, ModelTracker] = {}
        self.rejection_log = RateLimitedLog()
        for spec in config.models:
            self.trackers[spec.name] = ModelTracker(
                spec, config.drift_for(spec), on_capture=on_capture
            )

    def reject(self, reason: str, detail: str, n: int = 1) -> None:
        self.health.rejected[reason] += n
        self.rejection_log.warn(reason, detail)

    def handle(self, decoded: Decoded, transport: str, now: float | None = None) -> int:
        """Fold decoded events into trackers; returns how many were accepted."""
        now = time.time() if now is None else now
        h = self.health
        h.received[transport] += len(decoded.events) + len(decoded.rejections)
        for r in decoded.rejections:
            self.reject(r.reason, r.detail)
        events = decoded.events
        max_feats = self.config.socket.max_features_per_event
        # C-level passes over the batch; the per-event Python loops below are the rare paths.
        widest = max(map(len, filter(None, map(_features, events))), default=0)
        if widest > max_feats:
            kept = []
            for ev in events:
                if ev.features is not None and len(ev.features) > max_feats:
                    self.reject("too_many_features",
                                f"{len(ev.features)} features > {max_feats}")
                else:
                    kept.append(ev)
            events = kept
        models = set(map(_model, events))
        by_model: dict[str, list[Event]]
        if len(models) == 1:
            by_model = {models.pop(): events}
        else:
            by_model = defaultdict(list)
            for ev in events:
                by_model[ev.model].append(ev)
        accepted = 0
        for model, batch in by_model.items():
            events = batch
            tracker = self.trackers.get(model) or self._auto_register(model, events[0])
            if tracker is None:
                self.reject("unknown_model", f"model {model[:100]!r} is not configured",
                            len(events))
                continue
            if "stats" in set(map(_kind, events)):
                events = self._stats(model, events, now)
            if events:
                rejected: list[Rejection] = tracker.ingest(events, now)
                for r in rejected:
                    self.reject(r.reason, r.detail)
                accepted += len(events) - len(rejected)
        return accepted

    def _stats(self, model: str, events: list[Event], now: float) -> list[Event]:
        if self.on_stats is not None:
            for ev in events:
                if ev.kind == "stats" and ev.model_memory_bytes is not None:
                    self.on_stats(model, ev.model_memory_bytes, now)
        return [ev for ev in events if ev.kind != "stats"]

    def _auto_register(self, model: str, first: Event) -> ModelTracker | None:
        auto = self.config.auto_register
        n_auto = sum(1 for t in self.trackers.values() if t.auto_registered)
        if not auto.enabled or n_auto >= auto.max_models or first.kind == "stats":
            return None
        feats = sorted((first.features or {}).items())[: auto.max_features]
        features = [
            FeatureSpec(name=k, type="categorical" if isinstance(v, str) else "numeric")
            for k, v in feats
        ]
        pred = None
        if first.prediction is not None:
            pred = PredictionSpec(
                type="categorical" if isinstance(first.prediction, str) else "numeric"
            )
        spec = ModelSpec(
            name=model,
            version=first.version or "",
            baseline=BaselineSpec(capture=auto.capture),
            features=features,
            prediction=pred,
        )
        tracker = ModelTracker(
            spec, self.config.drift, auto_registered=True, on_capture=self.on_capture
        )
        self.trackers[model] = tracker
        log.info("model_auto_registered", model=model, features=[f.name for f in features],
                 capture=auto.capture)
        return tracker

"""Routes decoded events to their model's tracker; counts and logs what it refuses."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import structlog

from sidecar.capture import CaptureData
from sidecar.config import (
    RESERVED_FEATURE_NAMES,
    BaselineSpec,
    Config,
    FeatureSpec,
    ModelSpec,
    PredictionSpec,
    label_fits,
)
from sidecar.events import Decoded, Event, Rejection
from sidecar.health import Health
from sidecar.labels import LabelBook
from sidecar.ratelimit import LogLimiter
from sidecar.tracker import ModelTracker

log = structlog.get_logger("sidecar.pipeline")
_model = attrgetter("model")
_kind = attrgetter("kind")
_features = attrgetter("features")


class RateLimitedLog:
    """One log line per key per period, carrying how many were suppressed meanwhile."""

    def __init__(self, period_s: float = 10.0) -> None:
        self._limiter = LogLimiter(period_s)

    def warn(self, reason: str, detail: str, **kw: Any) -> None:
        """An `event_rejected` line, at most one per reason per period."""
        self.event("event_rejected", reason, reason=reason, detail=detail[:300], **kw)

    def event(self, event: str, key: str, level: str = "warning", **fields: Any) -> None:
        """A log line named `event`, at most one per (`event`, `key`) per period."""
        suppressed = self._limiter.admit(f"{event}:{key}")
        if suppressed is not None:
            getattr(log, level)(event, suppressed_since_last=suppressed, **fields)


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
        self.labels = LabelBook(config.labels)
        for spec in config.models:
            self.trackers[spec.name] = ModelTracker(
                spec,
                config.drift_for(spec),
                on_capture=on_capture,
                max_label_bytes=config.limits.max_label_bytes,
                max_stages=config.limits.max_stages,
            )

    def reject(
        self, reason: str, detail: str, n: int = 1, errors: list[Rejection] | None = None
    ) -> None:
        self.health.rejected[reason] += n
        self.rejection_log.warn(reason, detail)
        if errors is not None:
            errors.extend([Rejection(reason, detail)] * n)

    def handle(
        self,
        decoded: Decoded,
        transport: str,
        now: float | None = None,
        errors: list[Rejection] | None = None,
    ) -> int:
        """Fold decoded events into trackers; returns how many were accepted. Every
        rejection, the decoder's and the routing's, is also appended to `errors` if given."""
        now = time.time() if now is None else now
        h = self.health
        h.received[transport] += len(decoded.events) + len(decoded.rejections)
        for r in decoded.rejections:
            self.reject(r.reason, r.detail, errors=errors)
        events = decoded.events
        max_feats = self.config.socket.max_features_per_event
        # C-level passes over the batch; the per-event Python loops below are the rare paths.
        widest = max(map(len, filter(None, map(_features, events))), default=0)
        if widest > max_feats:
            kept = []
            for ev in events:
                if ev.features is not None and len(ev.features) > max_feats:
                    self.reject(
                        "too_many_features",
                        f"{len(ev.features)} features > {max_feats}",
                        errors=errors,
                    )
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
            tracker = self.trackers.get(model)
            if tracker is None:
                refusal = self._unregistered(model, events[0])
                if isinstance(refusal, Rejection):
                    self.reject(refusal.reason, refusal.detail, len(events), errors)
                    continue
                tracker = refusal
            kinds = set(map(_kind, events))
            labels: list[Event] = []
            if kinds != {"prediction"}:
                if "stats" in kinds:
                    events = self._stats(model, events, now)
                if "label" in kinds:
                    labels = [ev for ev in events if ev.kind == "label"]
                    events = [ev for ev in events if ev.kind != "label"]
            if events:
                unknown_before = tracker.unknown_features
                rejected: list[Rejection] = tracker.ingest(events, now)
                for r in rejected:
                    self.reject(r.reason, r.detail, errors=errors)
                accepted += len(events) - len(rejected)
                if tracker.unknown_features != unknown_before:
                    self._log_unknown_features(tracker, events)
                self.labels.take_folded(tracker, now)
            if labels:  # after the batch's predictions, which they may be the labels of
                refused = self.labels.score(tracker, labels, now)
                for r in refused:
                    self.reject(r.reason, r.detail, errors=errors)
                accepted += len(labels) - len(refused)
        return accepted

    def _unregistered(self, model: str, first: Event) -> ModelTracker | Rejection:
        """A tracker for a model not (yet) known, or why its events are refused."""
        limit = self.config.limits.max_label_bytes
        if not label_fits(model, limit):
            return Rejection(
                "label_too_long",
                f"model name of {len(model.encode())} bytes > "
                f"limits.max_label_bytes {limit}: {model[:100]!r}...",
            )
        auto = self.config.auto_register
        if not auto.enabled:
            return Rejection(
                "unknown_model",
                f"model {model[:100]!r} is not configured (auto_register.enabled is false)",
            )
        if first.kind != "prediction":
            return Rejection(
                "unknown_model",
                f"model {model[:100]!r} is not configured; a {first.kind} event does not "
                "auto-register it",
            )
        n_auto = sum(1 for t in self.trackers.values() if t.auto_registered)
        if n_auto >= auto.max_models:
            self.rejection_log.event(
                "auto_register_cap_reached",
                "",
                model=model[:100],
                max_models=auto.max_models,
                detail="the model is not registered: auto_register.max_models is reached",
            )
            return Rejection(
                "unknown_model",
                f"model {model[:100]!r} is not configured and "
                f"the auto-registration cap is reached "
                f"(auto_register.max_models {auto.max_models})",
            )
        return self._auto_register(model, first)

    def dropped(self, n: int, transport: str, exc: Exception, **fields: Any) -> None:
        """A defect cost `n` events (or lines, said in `fields`): count them as dropped
        (`internal_error`) and log it with its traceback, rate-limited per transport; the
        caller keeps serving."""
        self.health.dropped["internal_error"] += n
        self.rejection_log.event(
            "events_dropped",
            f"internal_error:{transport}",
            level="error",
            reason="internal_error",
            count=n,
            transport=transport,
            error=repr(exc),
            exc_info=exc,
            **fields,
        )

    def _log_unknown_features(self, tracker: ModelTracker, events: list[Event]) -> None:
        self.log_unknown_features(tracker, {k for ev in events if ev.features for k in ev.features})

    def log_unknown_features(self, tracker: ModelTracker, names: set[str]) -> None:
        """Name the features among `names` a model does not know (a typo in the client,
        usually), at most once per model per period; they are counted in
        drift_sidecar_unknown_features."""
        unknown = sorted(names - set(tracker.feature_names))
        self.rejection_log.event(
            "unknown_features",
            tracker.name,
            model=tracker.name,
            features=[n[:100] for n in unknown[:10]],
            distinct=len(unknown),
            detail="feature names the model does not have, ignored; a typo in the client?",
        )

    def _stats(self, model: str, events: list[Event], now: float) -> list[Event]:
        if self.on_stats is not None:
            for ev in events:
                if ev.kind == "stats" and ev.model_memory_bytes is not None:
                    self.on_stats(model, ev.model_memory_bytes, now)
        return [ev for ev in events if ev.kind != "stats"]

    def _auto_register(self, model: str, first: Event) -> ModelTracker:
        auto = self.config.auto_register
        limit = self.config.limits.max_label_bytes
        # The names a config may not use (reserved baseline columns, over-long labels) are
        # not taken from an event either: they stay unknown features, counted and logged.
        usable = {
            k: v
            for k, v in (first.features or {}).items()
            if label_fits(k, limit) and k not in RESERVED_FEATURE_NAMES
        }
        skipped = sorted((first.features or {}).keys() - usable.keys())
        feats = sorted(usable.items())[: auto.max_features]
        features = [
            FeatureSpec(name=k, type="categorical" if isinstance(v, str) else "numeric")
            for k, v in feats
        ]
        pred = None
        if first.prediction is not None:
            pred = PredictionSpec(
                type="categorical" if isinstance(first.prediction, str) else "numeric"
            )
        version = first.version or ""
        spec = ModelSpec(
            name=model,
            version=version if label_fits(version, limit) else "",
            baseline=BaselineSpec(capture=auto.capture),
            features=features,
            prediction=pred,
        )
        tracker = ModelTracker(
            spec,
            self.config.drift,
            auto_registered=True,
            on_capture=self.on_capture,
            max_label_bytes=limit,
            max_stages=self.config.limits.max_stages,
        )
        self.trackers[model] = tracker
        log.info(
            "model_auto_registered",
            model=model,
            features=[f.name for f in features],
            capture=auto.capture,
            skipped_features=[k[:100] for k in skipped[:10]],
        )
        return tracker

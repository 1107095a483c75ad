"""Per-model state: the counters behind the guide's metrics, the rolling window, the capture.

A batch of decoded events becomes numpy arrays once; every counter is then updated with a
handful of vectorized calls, never one `observe()` per feature per event.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from operator import itemgetter

import numpy as np

from sidecar.capture import Capture, CaptureData
from sidecar.class_codes import ClassCodes
from sidecar.config import DriftSettings, EmbeddingSpec, ModelSpec
from sidecar.drift import ModelDriftResult, WindowData
from sidecar.embedding import EmbeddingOptions, embedding_matrix
from sidecar.embedding_window import EmbeddingWindow
from sidecar.event_arrays import (
    categorical_codes,
    confidences,
    floats,
    numeric_matrix,
    prediction_array,
)
from sidecar.events import MAX_ABS_VALUE, Event, Rejection
from sidecar.labels import NOTHING_FOLDED, Folded, ModelPerformance
from sidecar.numeric_counts import NumericCounts, sorted_transpose
from sidecar.stages import DEFAULT_MAX_STAGES, StageLatency
from sidecar.stats.bins import OTHER, sorted_bin_counts
from sidecar.stats.reference import TAIL_FACTOR, Baseline, CategoricalReference, NumericReference
from sidecar.vocab import Vocab, recode, vocab_to_ref, vocab_to_test
from sidecar.windows import RollingWindow, WindowSnapshot

LATENCY_BUCKETS = np.array([0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
"""The guide's buckets (0.01 .. 1 s) widened at both ends; 0.1 stays for the HighLatency rule."""
CONFIDENCE_BUCKETS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
FEATURE_BUCKETS = np.linspace(0.0, 1.0, 11)
HORIZON_WINDOWS = 3
"""Categorical columns are also tested over the last ~3 windows of events, from their
per-bin counters: a small share shift that one window cannot show, three can."""


def embedding_options(spec: EmbeddingSpec) -> EmbeddingOptions:
    """A model's `embedding:` settings as `sidecar.embedding` takes them."""
    return EmbeddingOptions(
        dim=spec.dim,
        device=spec.device,
        n_features=spec.features,
        max_device_mb=spec.max_device_mb,
        bandwidth_rows=spec.bandwidth_rows,
        seed=spec.seed,
    )


class ModelTracker:
    """Everything the sidecar keeps about one model; touched only from the event loop."""

    def __init__(
        self,
        spec: ModelSpec,
        drift: DriftSettings,
        *,
        auto_registered: bool = False,
        on_capture: Callable[[ModelTracker, CaptureData], None] | None = None,
        max_label_bytes: int = 128,
        max_stages: int = DEFAULT_MAX_STAGES,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.drift = drift
        self.auto_registered = auto_registered
        self.on_capture = on_capture
        numeric = [f for f in spec.features if f.type == "numeric"]
        categorical = [f for f in spec.features if f.type == "categorical"]
        self.numeric_names = tuple(f.name for f in numeric)
        self.categorical_names = tuple(f.name for f in categorical)
        self.feature_names = self.numeric_names + self.categorical_names
        self._known = frozenset(self.feature_names)
        self._num_get = itemgetter(*self.numeric_names) if self.numeric_names else None
        self.pred_kind = spec.prediction.type if spec.prediction else None
        cat_cap = TAIL_FACTOR * drift.max_categories
        lb = max_label_bytes
        self.cat_vocab = [Vocab(cat_cap, max_bytes=lb) for _ in categorical]
        self.pred_vocab = Vocab(cat_cap, max_bytes=lb) if self.pred_kind == "categorical" else None
        self.class_vocab = Vocab(spec.max_classes, max_bytes=lb)
        self._classes = ClassCodes(self.class_vocab)
        self.version_vocab = Vocab(8, [spec.version], max_bytes=lb)

        self.requests: Counter[tuple[int, str]] = Counter()
        self.latency_counts = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
        self.latency_sum = 0.0
        self.latency_exemplars: dict[int, tuple[str, float, float]] = {}
        self.stages = StageLatency(spec.stages, max_stages, LATENCY_BUCKETS, lb)
        self.conf_counts = np.zeros(
            (spec.max_classes + 1, len(CONFIDENCE_BUCKETS) + 1), dtype=np.int64
        )
        self.conf_sums = np.zeros(spec.max_classes + 1)
        self.pred_count = 0
        self.pred_sum = 0.0
        self.pred_negative = False
        """A negative prediction was seen: the sum is no longer a counter (see metrics)."""
        self.feature_buckets = [
            np.asarray(f.buckets, dtype=np.float64) if f.buckets else FEATURE_BUCKETS
            for f in numeric
        ]
        self.numeric_counts = NumericCounts(self.feature_buckets)
        self.feature_sums = np.zeros(len(numeric))
        self.feature_negative = np.array(
            [bool((b < 0).any()) for b in self.feature_buckets], dtype=bool
        )
        """Per numeric feature: a negative value (or bucket bound) was seen, so its sum is not
        a counter and OpenMetrics forbids exposing it."""
        self.missing = np.zeros(len(self.feature_names), dtype=np.int64)
        self.unknown_features = 0
        self.accepted = 0

        self.window = RollingWindow(
            drift.window_size,
            len(numeric),
            len(categorical),
            categorical_prediction=self.pred_kind == "categorical",
            max_age_s=drift.max_age_s,
        )
        self.embedding_dim = spec.embedding.dim if spec.embedding is not None else None
        self.embedding_window: EmbeddingWindow | None = None
        if self.embedding_dim is not None:
            self.embedding_window = EmbeddingWindow(
                drift.window_size, self.embedding_dim, drift.max_age_s
            )
        self.capture: Capture | None = None
        if spec.baseline.capture is not None:
            self.capture = Capture(spec.baseline.capture)
        self.baseline: Baseline | None = None
        """Set once loaded or captured."""
        self.binned_events = 0
        """Events counted into the per-bin counters since the baseline was installed."""
        self._horizon: deque[tuple[int, list[np.ndarray], np.ndarray | None]] = deque()
        self.cat_bins: list[np.ndarray] = []
        self.pred_bins: np.ndarray | None = None
        self.latest: ModelDriftResult | None = None
        """The last drift check's result."""
        self.performance = ModelPerformance(spec.max_classes)
        """Label and estimated-performance counters (sidecar.labels)."""
        self.folded: Folded = NOTHING_FOLDED
        """The last `ingest` call's accepted events, their predictions and (when the
        confidences needed them) class codes, for the label book (LabelBook.take_folded)."""

    @property
    def feature_counts(self) -> list[np.ndarray]:
        """Per numeric feature, its value histogram's counts."""
        return self.numeric_counts.histograms

    @property
    def num_bins(self) -> list[np.ndarray]:
        """Per numeric feature, its count in each baseline bin."""
        return self.numeric_counts.bins

    @num_bins.setter
    def num_bins(self, value: list[np.ndarray]) -> None:
        self.numeric_counts.set_bins(value)

    def set_label_limit(self, max_bytes: int) -> None:
        """limits.max_label_bytes for values not seen yet (a reload may change it)."""
        for vocab in (*self.cat_vocab, self.pred_vocab, self.class_vocab, self.version_vocab):
            if vocab is not None:
                vocab.max_bytes = max_bytes

    def class_codes(self, events: list[Event], preds: np.ndarray) -> np.ndarray:
        """`predicted_class` codes of accepted events (their `preds` from `ingest`)."""
        return self._classes.codes(events, preds, self.pred_vocab)

    # ---------------------------------------------------------------- ingest
    def ingest(self, events: list[Event], now: float) -> list[Rejection]:
        """Fold a batch of this model's events into every counter and the window."""
        self.folded = NOTHING_FOLDED
        feats = [ev.features for ev in events]
        num, bad, all_present = numeric_matrix(feats, self.numeric_names, self._num_get)
        preds, bad_pred = prediction_array(events, self.pred_vocab, self.pred_kind)
        bad |= bad_pred
        emb: np.ndarray | None = None
        bad_emb: dict[int, tuple[str, str]] = {}
        if self.embedding_dim is not None:
            emb, bad_emb = embedding_matrix([ev.embedding for ev in events], self.embedding_dim)
        rejections: list[Rejection] = []
        if bad or bad_emb:
            for i in sorted(bad | bad_emb.keys()):
                if i in bad:
                    reason = "wrong_type"
                    detail = "non-numeric string for a numeric feature"
                else:
                    reason, detail = bad_emb[i]
                rejections.append(Rejection(reason, f"event {events[i].id or i}: {detail}"))
            keep = [i for i in range(len(events)) if i not in bad and i not in bad_emb]
            events = [events[i] for i in keep]
            if not events:
                return rejections
            feats = [ev.features for ev in events]
            num, _, all_present = numeric_matrix(feats, self.numeric_names, self._num_get)
            preds, _ = prediction_array(events, self.pred_vocab, self.pred_kind)
            if emb is not None:
                emb = emb[keep]
        n = len(events)

        finite = np.isfinite(num)
        all_finite = bool(finite.all())
        if all_finite:
            n_finite = np.full(num.shape[1], n, dtype=np.int64)
        else:
            num[~finite] = np.nan
            n_finite = finite.sum(axis=0)
        # One sort per column serves the range check, the value histograms and the baseline
        # bins: each bucket count is then a search of a few edges in the sorted column,
        # instead of a search of every value in the edges (NaN sorts last).
        ordered = sorted_transpose(num)
        if ordered.size and _beyond_range(ordered, n_finite):
            # Only a numeric string ("1e308") gets here: numbers are checked by the decoder.
            huge = set(np.flatnonzero((np.abs(num) > MAX_ABS_VALUE).any(axis=1)).tolist())
            for i in sorted(huge):
                rejections.append(
                    Rejection(
                        "out_of_range",
                        f"event {events[i].id or i}: a feature beyond ±{MAX_ABS_VALUE:g}",
                    )
                )
            kept = [ev for i, ev in enumerate(events) if i not in huge]
            return rejections + (self.ingest(kept, now) if kept else [])
        self.accepted += n

        if feats:
            total = sum(map(len, filter(None, feats)))
            if not (all_present and not self.categorical_names and total == n * len(self._known)):
                known = sum(len(f.keys() & self._known) for f in feats if f)
                self.unknown_features += total - known

        cat = categorical_codes(feats, self.categorical_names, self.cat_vocab)
        self.missing[: len(self.numeric_names)] += n - n_finite
        if cat.shape[1]:
            self.missing[len(self.numeric_names) :] += (cat < 0).sum(axis=0)

        self._count_requests(events)
        self._count_latency(events, now)
        self.stages.count(events)
        conf = confidences(events)
        codes = self._count_confidence(events, preds, conf)
        self._count_predictions(preds)
        self.folded = (events, preds, codes)
        self.feature_sums += num.sum(axis=0) if all_finite else np.nansum(num, axis=0)
        if ordered.shape[1]:
            self.feature_negative |= ordered[:, 0] < 0  # sorted: the first is the least
        self.fold_rows(num, cat, preds, conf, emb, ordered=ordered, n_finite=n_finite, now=now)
        return rejections

    def fold_rows(
        self,
        num: np.ndarray,
        cat: np.ndarray,
        preds: np.ndarray,
        conf: np.ndarray,
        emb: np.ndarray | None,
        *,
        ordered: np.ndarray,
        n_finite: np.ndarray,
        now: float,
    ) -> None:
        """The last step of an ingest, whichever transport brought the rows (JSON events
        here, Arrow columns in sidecar.frame_ingest): rows go to a baseline capture while
        it lasts, the rest to the bin counters, the window and the embedding window."""
        n = num.shape[0]
        received = np.full(n, now)
        start = 0
        if self.capture is not None and not self.capture.done:
            start = self.capture.take(num, cat, preds, emb)
            if self.capture.done and self.on_capture is not None:
                self.on_capture(self, self._capture_data())
        if start == 0:
            # every row goes to both the value histograms and the bins: one search each
            self._count_bins(num, cat, preds, ordered, n_finite, with_features=True)
        else:  # the value histograms count every row; the bins, those after the capture
            self._count_features(ordered, n_finite)
        if start < n:
            if start:
                num, cat, preds, conf = num[start:], cat[start:], preds[start:], conf[start:]
                self._count_bins(num, cat, preds)
            self.window.append(num, cat, preds, conf, received[start:])
            if emb is not None and self.embedding_window is not None:
                rows = emb[start:]
                present = ~np.isnan(rows[:, 0]) if rows.shape[1] else np.zeros(0, bool)
                if present.all():
                    self.embedding_window.append(rows, received[start:])
                elif present.any():
                    self.embedding_window.append(rows[present], received[start:][present])

    def append_rows(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        predictions: np.ndarray,
        received: np.ndarray,
    ) -> None:
        """Fold rows already in this tracker's coding (vocabulary codes) into the per-bin
        counters and the window, as `ingest` does after decoding a batch; benchmarks
        replay streams through it."""
        self._count_bins(numeric, categorical, predictions)
        n = received.shape[0]
        self.window.append(numeric, categorical, predictions, np.full(n, np.nan), received)

    def _count_requests(self, events: list[Event]) -> None:
        vocab = self.version_vocab
        versions = {ev.version for ev in events}
        if len(versions) == 1:  # the common case: one version (or none) in the whole batch
            code = vocab.code(versions.pop() or self.spec.version)
            statuses = [ev.status for ev in events]
            errors = statuses.count("error")  # list.count: C-level, where Counter is not
            counts: dict[str, int] = {"success": len(statuses) - errors, "error": errors}
            if statuses.count("success") != counts["success"]:  # not decoded events
                counts = Counter(statuses)
            for status, c in counts.items():
                if c:
                    self.requests[(code, status)] += c
            return
        default = self.spec.version
        keys = [(ev.version or default, ev.status) for ev in events]
        for (version, status), c in Counter(keys).items():
            self.requests[(vocab.code(version), status)] += c

    def _count_latency(self, events: list[Event], now: float) -> None:
        lat = floats([ev.latency_s for ev in events])
        ok = np.isfinite(lat)
        if not ok.any():
            return
        self.add_latencies(lat[ok])
        if not any([ev.trace_id for ev in events]):
            return
        for ev in events:
            if ev.trace_id is not None and ev.latency_s is not None:
                b = int(np.searchsorted(LATENCY_BUCKETS, ev.latency_s, side="left"))
                ts = ev.ts if ev.ts is not None else now
                self.latency_exemplars[b] = (ev.trace_id.lower(), ev.latency_s, ts)

    def add_latencies(self, lat: np.ndarray) -> None:
        """Latencies (finite) into the request latency histogram."""
        idx = np.searchsorted(LATENCY_BUCKETS, lat, side="left")
        self.latency_counts += np.bincount(idx, minlength=len(LATENCY_BUCKETS) + 1)
        self.latency_sum += float(lat.sum())

    def _count_confidence(
        self, events: list[Event], preds: np.ndarray, conf: np.ndarray
    ) -> np.ndarray | None:
        """Counts the confidences by class; returns the events' class codes (-1 for those
        without a confidence: an event gives its class a code only where it is needed, as
        one by one), or None when no event has a confidence."""
        ok = np.isfinite(conf)
        if not ok.any():
            return None
        if ok.all():
            codes = self._classes.codes(events, preds, self.pred_vocab)
            self.add_confidences(codes, conf)
            return codes
        rows = np.flatnonzero(ok)
        some = self._classes.codes([events[i] for i in rows.tolist()], preds[rows], self.pred_vocab)
        self.add_confidences(some, conf[rows])
        codes = np.full(len(events), -1, dtype=np.int64)
        codes[rows] = some
        return codes

    def add_confidences(self, classes: np.ndarray, conf: np.ndarray) -> None:
        """Confidences (finite) into the histogram of their predicted classes."""
        nb = len(CONFIDENCE_BUCKETS) + 1
        idx = np.searchsorted(CONFIDENCE_BUCKETS, conf, side="left")
        flat = np.bincount(classes * nb + idx, minlength=self.conf_counts.size)
        self.conf_counts += flat.reshape(self.conf_counts.shape)
        self.conf_sums += np.bincount(classes, weights=conf, minlength=len(self.conf_sums))

    def _count_predictions(self, preds: np.ndarray) -> None:
        if preds.dtype.kind == "f":
            v = preds[np.isfinite(preds)]
            self.pred_count += int(v.size)
            self.pred_sum += float(v.sum())
            if v.size and not self.pred_negative:
                self.pred_negative = bool(v.min() < 0)

    def _count_features(self, ordered: np.ndarray, n_finite: np.ndarray) -> None:
        self.numeric_counts.count(ordered, n_finite, None, histograms=True)

    def _count_bins(
        self,
        num: np.ndarray,
        cat: np.ndarray,
        preds: np.ndarray,
        ordered: np.ndarray | None = None,
        n_finite: np.ndarray | None = None,
        *,
        with_features: bool = False,
    ) -> None:
        """Rows into the per-bin counters (with `with_features`, into the value histograms
        too, from the same search)."""
        b = self.baseline
        if b is None:
            if with_features and ordered is not None and n_finite is not None:
                self._count_features(ordered, n_finite)
            return
        self.binned_events += int(preds.shape[0])
        if ordered is None or n_finite is None:
            ordered = sorted_transpose(num)
            n_finite = (~np.isnan(num)).sum(axis=0)
        self.numeric_counts.count(ordered, n_finite, b.numeric, histograms=with_features)
        for j in range(cat.shape[1]):
            col = cat[:, j]
            col = col[col >= 0]
            if col.size:
                self.cat_bins[j] += np.bincount(col, minlength=self.cat_bins[j].size)
        if self.pred_bins is not None and b.prediction is not None:
            if self.pred_vocab is not None:
                p = preds[preds >= 0]
                self.pred_bins += np.bincount(p, minlength=self.pred_bins.size)
            else:
                p = preds[np.isfinite(preds)]
                pref = b.prediction
                if p.size and isinstance(pref, NumericReference):
                    # sorted, the few edges are searched in the values rather than each
                    # value in the edges (much the faster for a batch of any size)
                    self.pred_bins += sorted_bin_counts(np.sort(p), pref.edges)

    # --------------------------------------------------------------- baseline
    def _capture_data(self) -> CaptureData:
        assert self.capture is not None
        num = np.concatenate(self.capture.numeric) if self.capture.numeric else np.empty((0, 0))
        cat = np.concatenate(self.capture.categorical)
        pred = np.concatenate(self.capture.predictions)
        numeric = {name: num[:, j].copy() for j, name in enumerate(self.numeric_names)}
        categorical = {
            name: [None if c < 0 else self.cat_vocab[j].label(int(c)) for c in cat[:, j]]
            for j, name in enumerate(self.categorical_names)
        }
        prediction: np.ndarray | list[str | None] | None = None
        if self.pred_vocab is not None:
            prediction = [None if c < 0 else self.pred_vocab.label(int(c)) for c in pred]
        elif self.pred_kind == "numeric":
            prediction = pred
        embedding = None
        if self.embedding_dim is not None:
            embedding = (
                np.concatenate(self.capture.embeddings)
                if self.capture.embeddings
                else np.empty((0, self.embedding_dim), np.float32)
            )
        self.capture.numeric.clear()
        self.capture.categorical.clear()
        self.capture.predictions.clear()
        self.capture.embeddings.clear()
        return CaptureData(numeric, categorical, prediction, embedding)

    def install_baseline(self, baseline: Baseline, backfill: bool = False) -> None:
        """Start comparing against `baseline`; per-bin counters start from zero, or, with
        `backfill` (a capture just finished), from the window, which then holds exactly the
        events that followed the capture."""
        self.baseline = baseline
        # every category the reference counts gets a code first, so that live traffic
        # cannot push one past the vocabulary's cap (the tests compare them one by one)
        for vocab, ref in zip(self.cat_vocab, baseline.categorical, strict=True):
            for c in (*ref.categories, *ref.tail):
                vocab.code(c)
        if self.pred_vocab is not None and isinstance(baseline.prediction, CategoricalReference):
            for c in (*baseline.prediction.categories, *baseline.prediction.tail):
                self.pred_vocab.code(c)
        self.binned_events = 0
        self._horizon.clear()
        self.num_bins = [np.zeros(len(r.shares), dtype=np.int64) for r in baseline.numeric]
        self.cat_bins = [np.zeros(v.cap + 1, dtype=np.int64) for v in self.cat_vocab]
        self.pred_bins = None
        if baseline.prediction is not None:
            size = self.pred_vocab.cap + 1 if self.pred_vocab else len(baseline.prediction.shares)
            self.pred_bins = np.zeros(size, dtype=np.int64)
        if self.capture is not None and not self.capture.done:
            self.capture = None  # a file baseline (or restored capture) ends any capture
        if backfill:
            snap = self.window.snapshot()
            self._count_bins(snap.numeric, snap.categorical, snap.predictions)

    def category_bin_counts(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """Per categorical feature: live counts per reference category and `__other__`."""
        assert self.baseline is not None
        out = []
        for j, (name, vocab) in enumerate(zip(self.categorical_names, self.cat_vocab, strict=True)):
            ref = self.baseline.categorical[j]
            table = vocab_to_ref(vocab, ref)
            counts = np.bincount(table, weights=self.cat_bins[j], minlength=len(ref.shares))
            labels = [*ref.categories, OTHER]
            out.append((name, [(lab, int(c)) for lab, c in zip(labels, counts, strict=True)]))
        return out

    def prediction_bin_counts(self) -> list[tuple[str, int]]:
        assert self.baseline is not None and self.pred_bins is not None
        ref = self.baseline.prediction
        if self.pred_vocab is None or not isinstance(ref, CategoricalReference):
            return [(str(i), int(c)) for i, c in enumerate(self.pred_bins)]
        table = vocab_to_ref(self.pred_vocab, ref)
        counts = np.bincount(table, weights=self.pred_bins, minlength=len(ref.shares))
        labels = [*ref.categories, OTHER]
        return [(lab, int(c)) for lab, c in zip(labels, counts, strict=True)]

    def window_snapshot(self, now: float) -> WindowSnapshot:
        self.window.evict_older_than(now)
        if self.embedding_window is not None:
            self.embedding_window.evict_older_than(now)
        return self.window.snapshot()

    def _horizon_counts(self) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
        """Per-vocabulary-code counts of the categorical features and class predictions
        over the last HORIZON_WINDOWS windows of events (up to a tenth more), from the
        per-bin counters; None until that many events were counted, and with `max_age_s`
        (whose point is to forget old events).

        Called once per check: it keeps a few snapshots of the counters, one per tenth of
        the horizon, and the oldest one still needed gives the start."""
        categorical = bool(self.cat_bins) or self.pred_vocab is not None
        if self.drift.max_age_s is not None or not categorical or self.baseline is None:
            return None, None
        span = HORIZON_WINDOWS * self.window.capacity
        now = self.binned_events
        snaps = self._horizon
        if not snaps or now - snaps[-1][0] >= max(1, span // 10):
            pred = (
                self.pred_bins.copy()
                if (self.pred_vocab is not None and self.pred_bins is not None)
                else None
            )
            snaps.append((now, [c.copy() for c in self.cat_bins], pred))
        while len(snaps) >= 2 and snaps[1][0] <= now - span:
            snaps.popleft()
        start, cats, pred_start = snaps[0]
        if start > now - span:
            return None, None
        horizon = [c - s for c, s in zip(self.cat_bins, cats, strict=True)]
        pred_h = None
        if pred_start is not None and self.pred_bins is not None:
            pred_h = self.pred_bins - pred_start
        return horizon, pred_h

    def drift_window(self, snap: WindowSnapshot) -> WindowData:
        """The window in the baseline's coding, for `sidecar.drift.check_model`."""
        b = self.baseline
        assert b is not None, "drift_window needs a baseline"
        cat = snap.categorical.copy()
        cat_labels: list[tuple[str, ...]] = []
        cat_horizon: list[np.ndarray | None] = []
        horizon, pred_horizon = self._horizon_counts()
        for j, (vocab, ref) in enumerate(zip(self.cat_vocab, b.categorical, strict=True)):
            col = snap.categorical[:, j]
            table, labels = vocab_to_test(vocab, ref)
            cat[:, j] = np.where(col < 0, -1, table[np.maximum(col, 0)])
            cat_labels.append(labels)
            size = len(ref.categories) + 1 + len(labels)
            cat_horizon.append(None if horizon is None else recode(horizon[j], table, size))
        preds: np.ndarray | None = None
        pred_labels: tuple[str, ...] = ()
        pred_h: np.ndarray | None = None
        if b.prediction is not None:
            if self.pred_vocab is not None and isinstance(b.prediction, CategoricalReference):
                table, pred_labels = vocab_to_test(self.pred_vocab, b.prediction)
                col = snap.predictions
                preds = np.where(col < 0, -1, table[np.maximum(col, 0)]).astype(np.int32)
                if pred_horizon is not None:
                    size = len(b.prediction.categories) + 1 + len(pred_labels)
                    pred_h = recode(pred_horizon, table, size)
            else:
                preds = snap.predictions
        embeddings = None
        if b.embedding is not None and self.embedding_window is not None:
            embeddings = self.embedding_window.snapshot()
        return WindowData(
            numeric=snap.numeric,
            categorical=cat,
            predictions=preds,
            categorical_labels=tuple(cat_labels),
            prediction_labels=pred_labels,
            categorical_horizon=tuple(cat_horizon),
            prediction_horizon=pred_h,
            embeddings=embeddings,
        )


def _beyond_range(ordered: np.ndarray, n_finite: np.ndarray) -> bool:
    """Whether a sorted column (NaN last) holds a value beyond ±MAX_ABS_VALUE: its first and
    its last finite value tell."""
    low = ordered[:, 0]
    high = ordered[np.arange(ordered.shape[0]), np.maximum(n_finite - 1, 0)]
    return bool((low < -MAX_ABS_VALUE).any() or (high > MAX_ABS_VALUE).any())

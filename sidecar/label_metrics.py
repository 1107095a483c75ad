"""The label and performance series (docs/metrics.md, "Labels and performance").

Counters only, read from each tracker's `ModelPerformance` at scrape time: a fleet's
accuracy, precision, recall, MAE and RMSE over any range are PromQL ratios of their sums
(configs/prometheus/recording.yml). Confusion cells appear once counted (at most
(max_classes + 1)^2 per model, the class vocabulary's bound): every cell between classes
the model has seen, at 0 until counted, so that increase() sees a cell's first counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.labels import RESULTS, LabelBook
from sidecar.tracker import ModelTracker


class LabelCollector(Collector):
    def __init__(self, trackers: Callable[[], Iterable[ModelTracker]], book: LabelBook) -> None:
        self._trackers = trackers
        self._book = book

    def collect(self) -> Iterator[Metric]:
        m = ["model_name"]
        cells = ["model_name", "predicted_class", "actual_class"]
        events = CounterMetricFamily(
            "ml_label_events",
            "Label events, by result: joined, self_contained, unmatched, expired, rejected",
            labels=["model_name", "result"],
        )
        labeled = CounterMetricFamily(
            "ml_labeled_predictions", "Predictions scored against their label", labels=m
        )
        correct = CounterMetricFamily(
            "ml_labeled_correct", "Labeled predictions whose class was the label", labels=m
        )
        confusion = CounterMetricFamily(
            "ml_label_confusion", "Labeled predictions by predicted and actual class", labels=cells
        )
        abs_err = CounterMetricFamily(
            "ml_label_absolute_error", "Sum of |prediction - label| (regression)", labels=m
        )
        sq_err = CounterMetricFamily(
            "ml_label_squared_error", "Sum of (prediction - label)^2 (regression)", labels=m
        )
        expected = CounterMetricFamily(
            "ml_prediction_expected_confusion",
            "Sum over predictions of each class's (calibrated) probability, by predicted class",
            labels=cells,
        )
        exp_correct = CounterMetricFamily(
            "ml_prediction_expected_correct",
            "Sum over predictions of their predicted class's (calibrated) probability",
            labels=m,
        )
        estimated = CounterMetricFamily(
            "ml_prediction_estimated",
            "Predictions with probabilities, summed into the expected confusion",
            labels=m,
        )
        base_acc = GaugeMetricFamily(
            "ml_label_baseline_accuracy",
            "Accuracy on the baseline's labeled rows (its `label` column)",
            labels=m,
        )
        for t in self._trackers():
            p = t.performance
            for r in RESULTS:
                events.add_metric([t.name, r], p.results[r])
            labeled.add_metric([t.name], p.labeled)
            regression = t.spec.task == "regression" or (
                t.spec.task is None and t.pred_kind == "numeric"
            )
            if regression or p.abs_error:
                abs_err.add_metric([t.name], p.abs_error)
                sq_err.add_metric([t.name], p.sq_error)
            if not regression or p.correct:
                correct.add_metric([t.name], p.correct)
            label = t.class_vocab.label
            for i, j in _cells(p.confusion, 0 if regression else len(t.class_vocab.values)):
                confusion.add_metric([t.name, label(i), label(j)], p.confusion[i, j])
            for i, j in _cells(p.expected, 0 if regression else len(t.class_vocab.values)):
                expected.add_metric([t.name, label(i), label(j)], p.expected[i, j])
            if p.estimated or not regression:
                exp_correct.add_metric([t.name], p.expected_correct)
                estimated.add_metric([t.name], p.estimated)
            ref = t.baseline.performance if t.baseline is not None else None
            if ref is not None and ref.accuracy is not None:
                base_acc.add_metric([t.name], ref.accuracy)
        yield from (events, labeled, correct, confusion, abs_err, sq_err)
        yield from (expected, exp_correct, estimated, base_acc)
        store = self._book.store
        yield GaugeMetricFamily(
            "drift_sidecar_label_pending", "Predictions waiting for their label", value=len(store)
        )
        yield GaugeMetricFamily(
            "drift_sidecar_label_pending_bytes",
            "Memory of the store of predictions waiting for their label",
            value=store.nbytes(),
        )
        ev = CounterMetricFamily(
            "drift_sidecar_label_pending_dropped",
            "Waiting predictions dropped without a label: full (labels.max_pending) or "
            "expired (labels.ttl_s)",
            labels=["reason"],
        )
        ev.add_metric(["full"], store.evicted_full)
        ev.add_metric(["expired"], store.evicted_expired)
        yield ev


def _cells(matrix: np.ndarray, known: int) -> list[tuple[int, int]]:
    """Every cell among the first `known` classes (at 0 until counted, so that increase()
    sees a cell's first counts), and any other cell counted (`__other__`)."""
    rows = set(np.flatnonzero(matrix.any(axis=1)).tolist()) | set(range(known))
    cols = set(np.flatnonzero(matrix.any(axis=0)).tolist()) | set(range(known))
    return [(i, j) for i in sorted(rows) for j in sorted(cols)]

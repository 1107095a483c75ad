"""The collector's samples against the tracker's own counters, across baseline changes."""

from __future__ import annotations

import numpy as np
import pytest
from harness import Metrics, parse_metrics
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.config import DriftSettings, parse_config
from sidecar.events import Event
from sidecar.metrics import Health, SidecarCollector
from sidecar.stats.reference import build_baseline
from sidecar.tracker import ModelTracker

SPEC = parse_config(
    {
        "models": [
            {
                "name": "m",
                "version": "1",
                "baseline": {"capture": 10**9},
                "features": [
                    {"name": "a"},
                    {"name": "b", "buckets": [-1, 0, 1]},
                    {"name": "c", "type": "categorical"},
                ],
                "prediction": {"type": "numeric"},
            }
        ]
    }
).models[0]


def baseline(rng: np.random.Generator, scale: float) -> object:
    return build_baseline(
        "m",
        numeric={"a": rng.normal(size=500) * scale, "b": rng.normal(size=500) * scale},
        categorical={"c": ["x", "y"] * 250},
        prediction=rng.random(500),
        prediction_kind="numeric",
    )


class Scraper:
    """One collector for the whole test, as in the daemon: whatever it keeps between
    scrapes must follow the trackers."""

    def __init__(self, trackers: list[ModelTracker]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SidecarCollector(lambda: trackers, Health()))

    def __call__(self) -> Metrics:
        return parse_metrics(generate_latest(self.registry).decode())


def test_bin_series_follow_the_baseline_in_use():
    rng = np.random.default_rng(3)
    t = ModelTracker(SPEC, DriftSettings())
    events = [
        Event(model="m", features={"a": float(v), "b": float(-v), "c": "x"}, prediction=0.5)
        for v in rng.normal(size=200)
    ]
    t.ingest(events, now=0.0)
    scrape = Scraper([t])
    assert scrape().series("ml_feature_bin_upper_bound") == {}  # no baseline, no bins

    for scale in (1.0, 100.0):  # the second baseline replaces the first on the same tracker
        b = baseline(rng, scale)
        t.install_baseline(b)
        t.ingest(events, now=1.0)
        m = scrape()
        for j, ref in enumerate(b.numeric):
            labels = {"model_name": "m", "feature_name": ref.name}
            uppers = [
                m.value("ml_feature_bin_upper_bound", **labels, bin=str(i))
                for i in range(len(ref.shares))
            ]
            assert uppers == [*ref.edges.tolist(), float("inf")]
            shares = [
                m.value("ml_feature_bin_reference_ratio", **labels, bin=str(i))
                for i in range(len(ref.shares))
            ]
            assert shares == pytest.approx(np.asarray(ref.shares).tolist(), rel=1e-12)
            counts = [
                m.value("ml_feature_bin_events_total", **labels, bin=str(i))
                for i in range(len(ref.shares))
            ]
            assert counts == t.num_bins[j].tolist()
            assert sum(counts) == 200  # only the events since this baseline


def test_feature_histograms_and_missing_counts_equal_the_tracker():
    t = ModelTracker(SPEC, DriftSettings())
    t.ingest(
        [
            Event(model="m", features={"a": 0.05, "b": 0.5}),
            Event(model="m", features={"a": 0.95, "b": -5.0, "c": "y"}),
            Event(model="m", features={"b": float("nan")}),
        ],
        now=0.0,
    )
    m = Scraper([t])()
    a = {"model_name": "m", "feature_name": "a"}
    b = {"model_name": "m", "feature_name": "b"}
    assert m.value("ml_feature_value_bucket", **a, le="0.1") == 1
    assert m.value("ml_feature_value_bucket", **a, le="+Inf") == 2
    assert m.value("ml_feature_value_count", **a) == 2
    assert m.value("ml_feature_value_sum", **a) == 1.0
    assert m.value("ml_feature_value_bucket", **b, le="-1.0") == 1
    assert m.value("ml_feature_value_bucket", **b, le="1.0") == 2
    assert m.value("ml_feature_value_bucket", **b, le="+Inf") == 2
    # Negative bucket bounds: OpenMetrics allows no `_sum` then, and `_count` goes with it.
    assert m.value("ml_feature_value_sum", **b) is None
    assert m.value("ml_feature_value_count", **b) is None
    assert m.value("ml_feature_missing_total", **a) == 1
    assert m.value("ml_feature_missing_total", **b) == 1
    assert m.value("ml_feature_missing_total", model_name="m", feature_name="c") == 2

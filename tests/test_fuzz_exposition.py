"""Whatever events arrive, `/metrics` stays valid: hostile events go through the real
decoder, pipeline, captures and drift checks, and the exposition must parse in both formats
with prometheus_client's parsers, and as text with `promtool check metrics`.

This is the class "one event breaks /metrics": NaN and Infinity tokens, lone surrogates,
huge numbers, negative values, long and odd label values, features named like baseline
columns, stats events with absurd sizes.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hostile import class1_lines, good_event, hostile_event, render
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families
from promtools import METRICS_DOC, base_metric, documented_metrics, run_promtool

from sidecar.baseline import write_baseline
from sidecar.capture import CaptureData
from sidecar.config import parse_config
from sidecar.drift import DriftParams, check_model
from sidecar.events import REASONS, decode_lines
from sidecar.metrics import DROP_REASONS, Health, SidecarCollector
from sidecar.pipeline import Pipeline
from sidecar.tracker import ModelTracker

LABEL_LIMIT = 64
CONFIG = parse_config(
    {
        "models": [
            {
                "name": "fraud",
                "version": "1",
                "baseline": {"capture": 6},
                "features": [
                    {"name": "amount"},
                    {"name": "age", "buckets": [-10, 0, 10]},
                    {"name": "country", "type": "categorical"},
                ],
                "prediction": {"type": "numeric"},
                "max_classes": 4,
            },
            {
                "name": "churn",
                "version": "2",
                "baseline": {"capture": 6},
                "features": [{"name": "amount"}, {"name": "country", "type": "categorical"}],
                "prediction": {"type": "categorical"},
                "max_classes": 4,
            },
        ],
        "auto_register": {"enabled": True, "max_models": 3, "capture": 6, "max_features": 4},
        "drift": {"min_samples": 3, "window_size": 40, "max_categories": 3, "psi_bins": 4},
        "limits": {"max_label_bytes": LABEL_LIMIT},
    }
)
MODELS = ["fraud", "churn", "auto-a", "auto-b"]


class Sidecar:
    """The daemon's pipeline, collector, capture and drift check, in one process."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.health = Health()
        self.captures: list[tuple[ModelTracker, CaptureData]] = []
        self.pipeline = Pipeline(
            CONFIG, self.health, on_capture=lambda t, d: self.captures.append((t, d))
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            SidecarCollector(lambda: list(self.pipeline.trackers.values()), self.health)
        )

    def feed(self, lines: list[bytes], now: float) -> None:
        self.pipeline.handle(decode_lines(lines, 50), "socket", now=now)
        for t, data in self.captures:  # as the daemon finishes a capture
            d = t.drift
            baseline = write_baseline(
                self.state / f"{len(self.captures)}-{abs(hash(t.name))}.parquet",
                t.name,
                numeric=data.numeric,
                categorical=data.categorical,
                prediction=data.prediction,
                prediction_kind=t.pred_kind,
                psi_bins=d.psi_bins,
                max_categories=d.max_categories,
            )
            t.install_baseline(baseline, backfill=True)
        self.captures.clear()

    def check(self, now: float) -> None:
        for t in self.pipeline.trackers.values():
            if t.baseline is not None:
                d = t.drift
                params = DriftParams(
                    min_samples=d.min_samples,
                    psi_threshold=d.psi_threshold,
                    p_value=d.p_value,
                    correction=d.correction,
                )
                t.latest = check_model(
                    t.baseline, t.drift_window(t.window_snapshot(now)), params, now
                )


def assert_valid_exposition(registry: CollectorRegistry, promtool: bool = True) -> str:
    """Both formats parse; nothing that OpenMetrics or Prometheus would refuse is in them."""
    text = generate_latest(registry).decode("utf-8")
    om = om_exposition.generate_latest(registry).decode("utf-8")
    text_families = list(text_string_to_metric_families(text))
    om_families = list(om_parser.text_string_to_metric_families(om))
    assert text_families and om_families
    for family in om_families:
        for s in family.samples:
            if s.name.endswith(("_total", "_count", "_sum", "_bucket")):
                assert math.isfinite(s.value) and s.value >= 0, s
            if s.exemplar is not None:
                assert s.exemplar.timestamp is not None and math.isfinite(s.exemplar.timestamp), s
                assert math.isfinite(s.exemplar.value), s
            for value in s.labels.values():
                assert len(value.encode()) <= LABEL_LIMIT, s
    if promtool:
        result = run_promtool("check", "metrics", stdin=text)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), text[-2000:]
    return text


lines = st.one_of(
    hostile_event(MODELS).map(render),
    st.lists(hostile_event(MODELS), min_size=1, max_size=4).map(render),
    good_event(["fraud", "auto-a"], categorical=False).map(render),
    good_event(["churn", "auto-b"], categorical=True).map(render),
    st.lists(good_event(MODELS, categorical=False), min_size=1, max_size=8).map(render),
)


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.lists(lines, min_size=1, max_size=12), min_size=1, max_size=4))
def test_anything_accepted_scrapes_as_valid_text_and_openmetrics(chunks: list[list[bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = Sidecar(Path(tmp))
        now = 1.7e9
        for chunk in chunks:
            now += 1.0
            sidecar.feed(chunk, now)
            assert_valid_exposition(sidecar.registry, promtool=False)
        sidecar.check(now)
        assert_valid_exposition(sidecar.registry)


def test_class1_inputs_and_negative_values_scrape_as_valid_text_and_openmetrics(
    tmp_path: Path,
) -> None:
    sidecar = Sidecar(tmp_path)
    hostile = [line for line, _ in class1_lines("fraud", "auto-a")]
    good = [
        render(
            {
                "model": m,
                "features": {"amount": -1.0 - i, "age": -5.0, "country": "de", "x": -0.5, "c": "k"},
                "prediction": -0.5 * i if m != "churn" else "no",
                "latency_s": 0.01,
                "trace_id": "cd" * 16,
            }
        )
        for i in range(8)
        for m in ("fraud", "churn", "auto-a")
    ]
    sidecar.feed(hostile + good, 1.7e9)
    sidecar.check(1.7e9 + 1)
    text = assert_valid_exposition(sidecar.registry)
    trackers = sidecar.pipeline.trackers
    assert all(trackers[m].baseline is not None for m in ("fraud", "churn", "auto-a"))
    # The auto-registered model took neither a reserved name nor an empty one as a feature.
    assert set(trackers["auto-a"].feature_names) == {"x", "y", "c"}
    # Negative observations: buckets stay, the sum (and, for a histogram, the count) go.
    assert 'ml_feature_value_bucket{feature_name="amount",le="+Inf",model_name="fraud"}' in text
    assert 'ml_feature_value_sum{feature_name="amount",model_name="fraud"}' not in text
    assert 'ml_prediction_value_sum{model_name="fraud"}' not in text
    assert 'ml_prediction_value_count{model_name="fraud"}' in text


@pytest.mark.parametrize("size", [400_000])
def test_long_labels_are_bounded_in_the_scrape(tmp_path: Path, size: int) -> None:
    sidecar = Sidecar(tmp_path)
    long = "L" * size
    events = [
        {"model": long, "features": {"x": 1.0}},  # label_too_long
        {
            "model": "auto-a",
            "version": long,
            "features": {long: 1.0, "x": 2.0, "c": long},
            "prediction": long,
            "probabilities": {long: 0.9, "b": 0.1},
        },
        {
            "model": "churn",
            "version": long,
            "features": {"amount": 1.0, "country": long},
            "prediction": long,
            "probabilities": {long: 0.9},
        },
        {
            "model": "fraud",
            "features": {"amount": 1.0, "country": long[:100_000]},
            "probabilities": {long[:100_000]: 0.7, "x": 0.3},
        },
    ]
    for i in range(8):
        sidecar.feed([json.dumps(e).encode() for e in events], 1.7e9 + i)
    text = assert_valid_exposition(sidecar.registry)
    assert len(text) < 64_000, len(text)
    assert sidecar.health.rejected["label_too_long"] == 8
    assert "L" * (LABEL_LIMIT + 1) not in text
    assert "__other__" in text
    assert set(sidecar.pipeline.trackers["auto-a"].feature_names) == {"x", "c"}


def test_every_exposed_series_and_reason_is_documented(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path)
    hostile = [line for line, _ in class1_lines("fraud", "auto-a")]
    good = [
        render(
            {
                "model": m,
                "features": {"amount": 0.1 * i, "age": 5.0, "country": "de", "x": 0.5, "c": "k"},
                "prediction": 0.1 * i if m != "churn" else "no",
                "latency_s": 0.01,
                "trace_id": "cd" * 16,
                "confidence": 0.5,
            }
        )
        for i in range(8)
        for m in ("fraud", "churn", "auto-a")
    ]
    sidecar.feed(hostile + good, 1.7e9)
    sidecar.check(1.7e9 + 1)
    sidecar.health.observe_check("fraud", 0.01)
    sidecar.health.check_errors["fraud"] += 1
    known = documented_metrics()
    text = assert_valid_exposition(sidecar.registry, promtool=False)
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert len(names) > 50
    undocumented = {n for n in names if base_metric(n, known) is None}
    assert not undocumented
    doc = METRICS_DOC.read_text()
    for reason in (*REASONS, *DROP_REASONS, "idle_closed", "refused"):
        assert f"- `{reason}`: " in doc or f"`{reason}` (" in doc, reason

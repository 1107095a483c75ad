"""The cached-label renderer against prometheus_client's own encoders, in both formats.

The same registry is rendered twice, by `sidecar.exposition` (what /metrics serves) and by
prometheus_client's `generate_latest` (text and OpenMetrics), and both are parsed with
prometheus_client's parsers: the families, samples, labels, values and exemplars must be
the same. The state holds what breaks formatters: negative values, NaN, ±inf, exemplars,
and label values with quotes, backslashes, newlines and non-ASCII characters, in model,
feature, category and class names (an auto-registered model takes its names from events).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families
from promtools import run_promtool

from sidecar.config import BaselineSpec, DriftSettings, FeatureSpec, ModelSpec, PredictionSpec
from sidecar.drift import DriftParams, check_model
from sidecar.events import Event
from sidecar.exposition import CachedFamily, go_floats, render, render_now, restrict
from sidecar.metrics import Health, SidecarCollector
from sidecar.stats.reference import build_baseline
from sidecar.tracker import ModelTracker

ODD = ['q"uote', "back\\slash", "new\nline", "h\u00e9llo \u2603 \u4e2d", "tab\tand }{,="]


def spec(name: str, numeric: list[str], categorical: list[str], buckets: Any = None) -> ModelSpec:
    return ModelSpec(
        name=name,
        version='v"1\\\n',
        baseline=BaselineSpec(capture=None),
        features=[FeatureSpec(name=f, buckets=buckets) for f in numeric]
        + [FeatureSpec(name=f, type="categorical") for f in categorical],
        prediction=PredictionSpec(type="numeric"),
    )


def hostile_trackers(
    seed: int, values: Callable[[np.random.Generator, int], np.ndarray]
) -> list[ModelTracker]:
    """Two models: one with odd names everywhere, one plain; baselines and drift results."""
    rng = np.random.default_rng(seed)
    out = []
    for name, numeric, categorical, buckets in (
        ('model "' + ODD[3], [*ODD[:3], "plain"], [ODD[4]], [-1e9, -2.5, 0.0, 3.0, 1e7]),
        ("plain", ["a", "b"], ["c"], None),
    ):
        t = ModelTracker(spec(name, numeric, categorical, buckets), DriftSettings(window_size=400))
        n = 300
        num = {f: values(rng, n) for f in numeric}
        cats = {f: [ODD[i % len(ODD)] for i in range(n)] for f in categorical}
        t.install_baseline(
            build_baseline(
                name,
                numeric={f: values(rng, 500) for f in numeric},
                categorical={f: [ODD[i % 3] for i in range(500)] for f in categorical},
                prediction=rng.normal(size=500),
                prediction_kind="numeric",
            )
        )
        events = [
            Event(
                model=name,
                features={
                    **{f: float(num[f][i]) for f in numeric},
                    **{f: cats[f][i] for f in categorical},
                },
                prediction=float(rng.normal()) if i % 5 else ODD[i % len(ODD)],
                confidence=float(rng.random()),
                latency_s=float(rng.random()),
                trace_id=f"{i:032x}" if i % 7 == 0 else None,
                version=None if i % 3 else ODD[i % len(ODD)],
            )
            for i in range(n)
        ]
        t.ingest(events, now=time.time())
        window = t.drift_window(t.window_snapshot(time.time()))
        t.latest = check_model(t.baseline, window, DriftParams(min_samples=50))
        out.append(t)
    return out


def registry_of(trackers: list[ModelTracker]) -> CollectorRegistry:
    health = Health()
    health.received["socket"] = 12
    health.rejected['bad "reason"\n'] += 3
    health.observe_check("plain", 0.02)
    r = CollectorRegistry(auto_describe=False)
    r.register(SidecarCollector(lambda: trackers, health))
    return r


def parsed(text: str, openmetrics: bool) -> list[tuple[Any, ...]]:
    """Every family and sample, NaN made comparable, in a canonical order."""
    parse = (
        om_parser.text_string_to_metric_families
        if openmetrics
        else (text_string_to_metric_families)
    )
    out = []
    for fam in parse(text):
        samples = sorted(
            (
                s.name,
                tuple(sorted(s.labels.items())),
                _value(s.value),
                None
                if s.exemplar is None
                else (
                    tuple(sorted(s.exemplar.labels.items())),
                    s.exemplar.value,
                    s.exemplar.timestamp,
                ),
            )
            for s in fam.samples
        )
        out.append((fam.name, fam.type, fam.documentation, fam.unit, tuple(samples)))
    return sorted(out)


def _value(v: float) -> Any:
    return "NaN" if math.isnan(v) else v


def assert_same_exposition(registry: CollectorRegistry, families: list[Metric]) -> None:
    # the samples /metrics would serve, in each format, against prometheus_client's encoders
    ours_text = render_now(families, generate_latest, openmetrics=False).decode()
    ours_om = render_now(families, om_exposition.generate_latest, openmetrics=True).decode()
    theirs_text = generate_latest(registry).decode()
    theirs_om = om_exposition.generate_latest(registry).decode()
    assert parsed(ours_text, False) == parsed(theirs_text, False)
    assert parsed(ours_om, True) == parsed(theirs_om, True)
    assert ours_om.endswith("# EOF\n") and ours_om.count("# EOF") == 1


def normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=n) * 10


def hostile(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=n) * 10 - 3
    v[::11] = np.nan
    v[::13] = np.inf
    v[::17] = -np.inf
    v[::19] = 2.5e7  # Go writes these with an exponent, repr does not
    v[::23] = -0.0
    return v


@pytest.mark.parametrize("values", [normal, hostile])
def test_both_formats_parse_to_the_samples_prometheus_client_gives(values: Any) -> None:
    trackers = hostile_trackers(1, values)
    registry = registry_of(trackers)
    families = list(registry.collect())
    assert any(isinstance(f, CachedFamily) for f in families)
    assert_same_exposition(registry, families)
    # and the cached text is reused on the next scrape: the result is the same again
    assert_same_exposition(registry, list(registry.collect()))


def test_the_state_holds_what_breaks_formatters() -> None:
    """The differential test above is only as good as its state: check the state."""
    trackers = hostile_trackers(1, hostile)
    text = render_now(list(registry_of(trackers).collect()), generate_latest, False).decode()
    assert "NaN" in text and "+Inf" in text and re.search(r"\de\+0[6-9]\n", text)
    assert '\\"uote' in text and "back\\\\slash" in text and "new\\nline" in text
    assert "h\u00e9llo" in text
    assert any(
        v < 0
        for v in [
            float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines()
            if ln.startswith("ml_feature_bin_upper_bound")
        ]
    )
    om = render_now(
        list(registry_of(trackers).collect()), om_exposition.generate_latest, True
    ).decode()
    assert " # {trace_id=" in om  # exemplars


def test_promtool_finds_no_problem_in_the_rendered_text() -> None:
    trackers = hostile_trackers(2, hostile)
    text = render_now(list(registry_of(trackers).collect()), generate_latest, False).decode()
    result = run_promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    "names",
    [
        {"drift_sidecar_events_received_total"},
        {"ml_feature_value_bucket"},
        {"ml_feature_value_sum", "ml_feature_bin_events_total", "ml_feature_drift_psi"},
        {"ml_feature_bin_reference_ratio", "nothing_by_this_name"},
    ],
)
def test_name_filter_keeps_exactly_the_named_samples(names: set[str]) -> None:
    registry = registry_of(hostile_trackers(3, normal))
    families = restrict(list(registry.collect()), names)
    ours = parsed(render_now(families, generate_latest, False).decode(), False)
    full = parsed(generate_latest(registry).decode(), False)
    want = [
        (name, typ, doc, unit, tuple(s for s in samples if s[0] in names))
        for name, typ, doc, unit, samples in full
        if any(s[0] in names for s in samples)
    ]
    assert ours == want
    assert ours, "the filter kept nothing: the test names no sample"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.floats(), st.integers(-(2**53), 2**53).map(float)), max_size=50))
def test_go_floats_is_float_to_go_string(xs: list[float]) -> None:
    from prometheus_client.utils import floatToGoString

    assert go_floats(np.array(xs, dtype=np.float64)) == [floatToGoString(x) for x in xs]


def test_render_lets_the_loop_run_and_gives_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    import sidecar.exposition

    monkeypatch.setattr(sidecar.exposition, "YIELD_AFTER_S", 0.0)  # a turn after every piece
    registry = registry_of(hostile_trackers(4, hostile))
    families = list(registry.collect())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def scrape() -> bytes:
        task = asyncio.create_task(ticker())
        try:
            return await render(families, om_exposition.generate_latest, True)
        finally:
            task.cancel()

    body = asyncio.run(scrape())
    assert body == render_now(families, om_exposition.generate_latest, True)
    n_pieces = sum(
        1 for _ in sidecar.exposition.pieces(families, om_exposition.generate_latest, True)
    )
    assert ticks >= n_pieces - 1 > 10


def test_a_histogram_can_leave_out_the_count_and_sum_of_some_features() -> None:
    """For OpenMetrics, which forbids a negative sum: the buckets stay, le="+Inf" counts."""
    from sidecar.tracker_labels import TrackerLabels

    # the plain model: default buckets (no negative bound), positive values
    _, t = hostile_trackers(5, lambda rng, n: rng.random(n))
    tl = TrackerLabels(t)
    no_sum = np.array([True, False])
    full, cut = tl.histogram(t).samples(), tl.histogram(t, no_sum).samples()
    hidden = {name for name, hide in zip(t.numeric_names, no_sum, strict=True) if hide}
    gone = {
        (s.name, s.labels["feature_name"])
        for s in full
        if s.name != "ml_feature_value_bucket" and s.labels["feature_name"] in hidden
    }
    assert len(gone) == 2 * len(hidden) == 2
    assert [s for s in full if (s.name, s.labels["feature_name"]) not in gone] == cut
    family = CachedFamily("ml_feature_value", "Feature value distribution", "histogram")
    family.add(tl.histogram(t, no_sum))
    text = render_now([family], om_exposition.generate_latest, True).decode()
    assert parsed(text, True) == parsed(om_exposition.generate_latest(_One(family)).decode(), True)


class _One:
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]

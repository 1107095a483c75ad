"""`GET /v1/drift` bins: the reference and window shares of every bin, from the real daemon,
equal to what the baseline's data and the events sent give when counted here by hand."""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from harness import DaemonProcess, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.baseline import write_baseline
from sidecar.drift import DriftParams, WindowData, check_model
from sidecar.drift_bins import categorical_bins, numeric_bins, prediction_bins
from sidecar.stats.reference import build_baseline, categorical_reference, numeric_reference

CATS = ["a", "b", "c", "d", "e", "f"]
CAT_P = [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]
CLASSES = ["yes", "no", "maybe"]
MAX_CATEGORIES = 3  # d, e, f pool into __other__ (and are the reference's tail)
N_REF, N_LIVE = 3000, 1200


def decile_edges(ref: np.ndarray, bins: int = 10) -> list[float]:
    """For each i/bins, the smallest reference value whose empirical CDF reaches it."""
    s = sorted(ref.tolist())
    n = len(s)
    edges = []
    for i in range(1, bins):
        k = 0
        while k * bins < i * n:
            k += 1
        edges.append(s[k - 1])
    return sorted(set(edges))


def shares_by_edges(values: list[float], edges: list[float]) -> list[int]:
    """Counts per bin (lo, hi], outer bins open, written out plainly."""
    bounds = [-np.inf, *edges, np.inf]
    return [sum(1 for v in values if lo < v <= hi) for lo, hi in pairwise(bounds)]


def kept_categories(values: list[str | None], k: int) -> list[str]:
    counts = Counter(v for v in values if v is not None)
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def category_counts(values: list[str | None], kept: list[str]) -> list[int]:
    present = [v for v in values if v is not None]
    return [sum(1 for v in present if v == c) for c in kept] + [
        sum(1 for v in present if v not in kept)
    ]


@pytest.fixture
def reference(tmp_path) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, N_REF)
    x[rng.random(N_REF) < 0.02] = np.nan
    c = [CATS[i] for i in rng.choice(len(CATS), N_REF, p=CAT_P)]
    y = [CLASSES[i] for i in rng.choice(3, N_REF, p=[0.5, 0.3, 0.2])]
    path = tmp_path / "base.parquet"
    write_baseline(
        path,
        "m",
        numeric={"x": x},
        categorical={"c": c},
        prediction=y,
        prediction_kind="categorical",
        max_categories=MAX_CATEGORIES,
    )
    return {"x": x, "c": c, "y": y, "path": path}


def live_events(rng: np.random.Generator) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    x = rng.normal(0.5, 1.2, N_LIVE)
    # the live categories include one the reference never saw, and the tail ones
    c = [([*CATS, "new"])[i] for i in rng.choice(7, N_LIVE, p=[0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])]
    y = [CLASSES[i] for i in rng.choice(3, N_LIVE, p=[0.3, 0.3, 0.4])]
    missing = rng.random(N_LIVE) < 0.05
    events = []
    for i in range(N_LIVE):
        features: dict[str, Any] = {"c": c[i]}
        if not missing[i]:
            features["x"] = float(x[i])
        events.append({"model": "m", "features": features, "prediction": y[i]})
    xs = [float(x[i]) for i in range(N_LIVE) if not missing[i]]
    return events, {"x": xs, "c": c, "y": y}


def start(daemon_factory: Any, path: Any) -> DaemonProcess:
    cfg = {
        "models": [
            {
                "name": "m",
                "baseline": {"path": str(path)},
                "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
                "prediction": {"type": "categorical"},
                "drift": {
                    "interval_s": 0.2,
                    "min_samples": 100,
                    "window_size": 5000,
                    "max_categories": MAX_CATEGORIES,
                },
            }
        ]
    }
    return daemon_factory(cfg, wait_ready=True)


def checked(d: DaemonProcess, n: int) -> dict[str, Any]:
    return wait_for(
        lambda: (r := d.json("/v1/drift")["models"]["m"]).get("samples") == n and r,
        20,
        f"a drift check over {n} events",
    )


def test_bins_equal_the_shares_counted_by_hand(tmp_path, daemon_factory, reference):
    d = start(daemon_factory, reference["path"])
    events, live = live_events(np.random.default_rng(12))
    d.send([events[i : i + 200] for i in range(0, N_LIVE, 200)])
    report = checked(d, N_LIVE)
    metrics = d.scrape()

    # numeric: edges from the reference's deciles; shares by the (lo, hi] rule
    x_ref = [float(v) for v in reference["x"] if np.isfinite(v)]
    edges = decile_edges(np.array(x_ref))
    ref_counts = shares_by_edges(x_ref, edges)
    win_counts = shares_by_edges(live["x"], edges)
    bins = report["features"]["x"]["bins"]
    assert [b["bin"] for b in bins] == [str(i) for i in range(len(edges) + 1)]
    assert [b["upper"] for b in bins] == [*edges, None]
    assert [b["lower"] for b in bins] == [None, *edges]
    assert [b["window_count"] for b in bins] == win_counts
    assert sum(win_counts) == len(live["x"]) == report["features"]["x"]["samples"]
    for b, r, w in zip(bins, ref_counts, win_counts, strict=True):
        assert b["reference_share"] == pytest.approx(r / len(x_ref), abs=1e-12)
        assert b["window_share"] == pytest.approx(w / len(live["x"]), abs=1e-12)
        # the same bins, and the same counts, as the per-bin counters on /metrics (the
        # window holds every event sent since the baseline was installed)
        labels = {"model_name": "m", "feature_name": "x", "bin": b["bin"]}
        assert metrics.value("ml_feature_bin_events_total", **labels) == w
        assert metrics.value("ml_feature_bin_reference_ratio", **labels) == pytest.approx(
            b["reference_share"], abs=1e-12
        )
    assert sum(b["window_share"] for b in bins) == pytest.approx(1.0)

    # categorical: the kept categories, then __other__ pooling the tail and "new"
    for name, ref_values, live_values, entry in (
        ("c", reference["c"], live["c"], report["features"]["c"]),
        ("prediction", reference["y"], live["y"], report["prediction"]),
    ):
        kept = kept_categories(ref_values, MAX_CATEGORIES)
        ref_counts = category_counts(ref_values, kept)
        win_counts = category_counts(live_values, kept)
        bins = entry["bins"]
        assert [b["bin"] for b in bins] == [*kept, "__other__"], name
        assert "lower" not in bins[0]
        assert [b["window_count"] for b in bins] == win_counts, name
        for b, r, w in zip(bins, ref_counts, win_counts, strict=True):
            assert b["reference_share"] == pytest.approx(r / sum(ref_counts), abs=1e-12)
            assert b["window_share"] == pytest.approx(w / sum(win_counts), abs=1e-12)
            if name == "c":
                labels = {"model_name": "m", "feature_name": "c", "bin": b["bin"]}
            else:
                labels = {"model_name": "m", "bin": b["bin"]}
            family = "ml_feature_bin" if name == "c" else "ml_prediction_bin"
            assert metrics.value(f"{family}_events_total", **labels) == w, (name, b)
        assert sum(b["reference_share"] for b in bins) == pytest.approx(1.0)
        assert sum(b["window_share"] for b in bins) == pytest.approx(1.0)


def test_bins_are_there_before_the_window_has_enough_samples(tmp_path, daemon_factory, reference):
    d = start(daemon_factory, reference["path"])
    events, _ = live_events(np.random.default_rng(13))
    d.send([events[:40]])
    report = checked(d, 40)
    x = report["features"]["x"]
    assert x["sufficient"] is False and x["psi"] is None
    present = [e["features"]["x"] for e in events[:40] if "x" in e["features"]]
    assert sum(b["window_count"] for b in x["bins"]) == len(present)
    assert sum(b["window_share"] for b in x["bins"]) == pytest.approx(1.0)


def test_a_column_with_no_window_value_has_null_window_shares() -> None:
    ref = numeric_reference("x", np.arange(100.0), psi_bins=4)
    empty = numeric_bins(ref, np.zeros(4, dtype=np.int64)).to_json()
    assert [b["window_share"] for b in empty] == [None] * 4
    assert [b["reference_share"] for b in empty] == [0.25] * 4
    assert [b["lower"] for b in empty] == [None, 24.0, 49.0, 74.0]

    cref = categorical_reference("c", ["a", "a", "b", "z"], max_categories=2)
    # test codes: a, b, __other__, then a live category past it: folded into __other__
    got = categorical_bins(cref, np.array([3, 1, 0, 2])).to_json()
    assert [(b["bin"], b["window_count"]) for b in got] == [("a", 3), ("b", 1), ("__other__", 2)]
    preds = prediction_bins(ref, np.array([np.nan, -5.0, 24.0, 24.5, 1e9]))
    assert preds.window.tolist() == [2, 1, 0, 1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reference_rows=st.lists(
        st.tuples(st.integers(-5, 5).map(float), st.sampled_from("abcdefg")),
        min_size=1,
        max_size=60,
    ),
    live_rows=st.lists(
        st.tuples(
            st.one_of(st.integers(-7, 7).map(float), st.just(math.nan)),
            st.one_of(st.sampled_from("abcdefgxyz"), st.none()),
        ),
        max_size=60,
    ),
    bins=st.integers(2, 6),
    keep=st.integers(1, 4),
)
def test_check_bins_count_every_window_value_by_the_bin_rule(
    *,
    reference_rows: list[tuple[float, str]],
    live_rows: list[tuple[float, str | None]],
    bins: int,
    keep: int,
) -> None:
    """Whatever the data: numeric window counts are the (lo, hi] counts of the finite
    values, categorical ones pool every value the reference does not keep in __other__,
    and both sides' shares sum to 1 (or the window's are null when it is empty)."""
    ref = [r[0] for r in reference_rows]
    cats = [r[1] for r in reference_rows]
    live = [r[0] for r in live_rows]
    live_cats = [r[1] for r in live_rows]
    n = len(live_rows)
    base = build_baseline(
        "m",
        numeric={"x": np.array(ref)},
        categorical={"c": cats},
        prediction=None,
        prediction_kind=None,
        psi_bins=bins,
        max_categories=keep,
    )
    cref = base.categorical[0]
    # the window in the daemon's coding: kept categories, __other__, then live ones past it
    extra = sorted({c for c in live_cats if c is not None} - set(cref.categories))
    code = {c: i for i, c in enumerate(cref.categories)}
    code.update({c: len(cref.categories) + 1 + i for i, c in enumerate(extra)})
    codes = np.array([-1 if c is None else code[c] for c in live_cats], dtype=np.int32)
    window = WindowData(
        np.array(live, dtype=np.float64).reshape(n, 1),
        codes.reshape(n, 1),
        categorical_labels=(tuple(extra),),
    )
    result = check_model(base, window, DriftParams(min_samples=1))
    x, c = (b.to_json() for b in result.feature_bins)
    edges = [b["upper"] for b in x[:-1]]
    finite = [v for v in live if not math.isnan(v)]
    assert [b["window_count"] for b in x] == shares_by_edges(finite, edges)
    assert edges == sorted(set(edges)) and len(x) == len(base.numeric[0].shares)
    kept = kept_categories(list(cats), keep)
    assert [b["bin"] for b in c] == [*kept, "__other__"]
    assert [b["window_count"] for b in c] == category_counts(live_cats, kept)
    for entry, present in ((x, len(finite)), (c, sum(v is not None for v in live_cats))):
        assert sum(b["reference_share"] for b in entry) == pytest.approx(1.0)
        if present:
            assert sum(b["window_share"] for b in entry) == pytest.approx(1.0)
        else:
            assert all(b["window_share"] is None for b in entry)

"""Per-model counters equal a straightforward per-event computation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import DriftSettings, parse_config
from sidecar.events import Event
from sidecar.tracker import FEATURE_BUCKETS, LATENCY_BUCKETS, ModelTracker
from sidecar.vocab import Vocab

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
                "max_classes": 3,
            }
        ]
    }
).models[0]

num = st.one_of(st.floats(-3, 3), st.none(), st.just(float("nan")), st.just(float("inf")))
events = st.lists(
    st.builds(
        lambda a, b, c, extra, lat, conf, pred, status: Event(
            model="m",
            features={
                k: v for k, v in (("a", a), ("b", b), ("c", c), ("zz", extra)) if v is not ...
            },
            latency_s=lat,
            confidence=conf,
            prediction=pred,
            status=status,
        ),
        num,
        num,
        st.one_of(st.sampled_from(["x", "y", "z"]), st.none(), st.just(...)),
        st.one_of(st.just(...), st.integers()),
        st.one_of(st.none(), st.floats(0, 20)),
        st.one_of(st.none(), st.floats(0, 1)),
        st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0, 0.5])),
        st.sampled_from(["success", "error"]),
    ),
    max_size=60,
)


def _bucket(bounds, v):
    return next((i for i, b in enumerate(bounds) if v <= b), len(bounds))


@settings(max_examples=60, deadline=None)
@given(st.lists(events, max_size=4))
def test_counters_match_a_per_event_computation(batches):
    t = ModelTracker(SPEC, DriftSettings())
    for b in batches:
        assert t.ingest(b, now=1.0) == []
    evs = [e for b in batches for e in b]
    assert t.accepted == len(evs)
    assert sum(t.requests.values()) == len(evs)
    assert t.requests[(0, "error")] == sum(e.status == "error" for e in evs)
    a_vals = [e.features.get("a") for e in evs]
    finite_a = [v for v in a_vals if v is not None and np.isfinite(v)]
    assert t.missing[0] == len(evs) - len(finite_a)
    expect = np.zeros(len(FEATURE_BUCKETS) + 1, dtype=int)
    for v in finite_a:
        expect[_bucket(FEATURE_BUCKETS, v)] += 1
    np.testing.assert_array_equal(t.feature_counts[0], expect)
    assert np.isclose(t.feature_sums[0], sum(finite_a))
    b_vals = [v for e in evs if (v := e.features.get("b")) is not None and np.isfinite(v)]
    expect_b = np.zeros(4, dtype=int)
    for v in b_vals:
        expect_b[_bucket([-1, 0, 1], v)] += 1
    np.testing.assert_array_equal(t.feature_counts[1], expect_b)
    assert t.missing[2] == sum(e.features.get("c") is None for e in evs)
    assert t.unknown_features == sum("zz" in e.features for e in evs)
    lats = [e.latency_s for e in evs if e.latency_s is not None]
    expect_l = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=int)
    for v in lats:
        expect_l[_bucket(LATENCY_BUCKETS, v)] += 1
    np.testing.assert_array_equal(t.latency_counts, expect_l)
    # predicted_class is capped at max_classes=3 distinct labels plus __other__
    assert len(t.class_vocab.values) <= 3
    assert t.conf_counts.sum() == sum(e.confidence is not None for e in evs)
    preds = [e.prediction for e in evs if e.prediction is not None]
    assert t.pred_count == len(preds) and np.isclose(t.pred_sum, sum(preds))


def test_string_in_a_numeric_feature_rejects_only_that_event():
    t = ModelTracker(SPEC, DriftSettings())
    good = Event(model="m", features={"a": 0.5})
    bad = Event(model="m", features={"a": "high"})
    numeric_text = Event(model="m", features={"a": "0.5"})  # as CSV-minded clients send
    rej = t.ingest([good, bad, good, numeric_text], now=0.0)
    assert [r.reason for r in rej] == ["wrong_type"]
    assert t.accepted == 3 and t.feature_counts[0].sum() == 3
    assert t.feature_sums[0] == 1.5


def test_confidence_defaults_to_the_max_probability():
    t = ModelTracker(SPEC, DriftSettings())
    t.ingest(
        [
            Event(model="m", probabilities={"cat": 0.7, "dog": 0.3}),
            Event(model="m", probabilities=[0.1, 0.9]),
        ],
        now=0.0,
    )
    assert t.class_vocab.values == ["cat", "1"]
    assert np.isclose(t.conf_sums[:2].sum(), 1.6)


def test_vocab_caps_codes():
    v = Vocab(2)
    assert [v.code(x) for x in "abcab"] == [0, 1, 2, 0, 1]
    assert v.label(2) == "__other__"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([float(x) for x in FEATURE_BUCKETS] + [-0.0, 1e-300]),
            st.floats(-1, 2),
            st.just(float("nan")),
            st.just(float("inf")),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_sorted_bucket_counts_equal_searchsorted_on_edges(values):
    t = ModelTracker(SPEC, DriftSettings())
    t.ingest([Event(model="m", features={"a": v}) for v in values], now=0.0)
    finite = [v for v in values if np.isfinite(v)]
    want = np.bincount(
        np.searchsorted(FEATURE_BUCKETS, finite, side="left"), minlength=len(FEATURE_BUCKETS) + 1
    )
    np.testing.assert_array_equal(t.feature_counts[0], want)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.one_of(
                    st.none(), st.sampled_from([0.0, 1.0, 2.0, 7.0, -3.0, 70_000.0, 0.5, -0.0])
                ),
                st.floats(0, 1),
            ),
            max_size=30,
        ),
        max_size=5,
    )
)
def test_confidence_per_predicted_class_matches_a_per_event_computation(batches):
    t = ModelTracker(SPEC, DriftSettings())
    expect: dict[str, int] = {}
    for batch in batches:
        evs = [
            Event(model="m", prediction=p, confidence=c, probabilities=[0.2, 0.8]) for p, c in batch
        ]
        assert t.ingest(evs, now=0.0) == []
        for p, _ in batch:
            if p is None:
                label = "1"  # the argmax of the probabilities
            elif p.is_integer():
                label = str(int(p))
            else:
                label = "none"
            if label not in t.class_vocab.values:
                label = "__other__"  # past max_classes=3
            expect[label] = expect.get(label, 0) + 1
    got = {
        t.class_vocab.label(code): int(n) for code, n in enumerate(t.conf_counts.sum(axis=1)) if n
    }
    assert got == expect


def _categorical_tracker(max_categories: int) -> ModelTracker:
    spec = parse_config(
        {
            "models": [
                {
                    "name": "m",
                    "baseline": {"path": "b.parquet"},
                    "features": [{"name": "c", "type": "categorical"}],
                    "prediction": {"type": "categorical"},
                }
            ]
        }
    ).models[0]
    return ModelTracker(spec, DriftSettings(max_categories=max_categories, min_samples=1))


def _ingest(t: ModelTracker, pairs: list[tuple[str | None, str]]) -> None:
    evs = [Event(model="m", features={"c": c}, prediction=p) for c, p in pairs]
    assert t.ingest(evs, now=1.0) == []


def test_drift_window_gives_unseen_categories_codes_of_their_own():
    """The two-sample tests need each live category the baseline never saw as a column of
    its own; PSI and the bin counters still pool them into __other__."""
    from sidecar.drift import DriftParams, check_model
    from sidecar.stats.reference import build_baseline

    t = _categorical_tracker(max_categories=50)
    t.install_baseline(
        build_baseline(
            "m",
            numeric={},
            categorical={"c": ["a"] * 60 + ["b"] * 40},
            prediction=["yes"] * 70 + ["no"] * 30,
            prediction_kind="categorical",
        )
    )
    _ingest(
        t,
        [
            ("b", "no"),
            ("new1", "maybe"),
            ("a", "yes"),
            ("new2", "yes"),
            ("new1", "no"),
            (None, "yes"),
        ],
    )
    w = t.drift_window(t.window_snapshot(1.0))
    assert w.categorical_labels == (("new1", "new2"),)
    assert w.categorical[:, 0].tolist() == [1, 3, 0, 4, 3, -1]  # a=0, b=1, OTHER=2
    assert w.prediction_labels == ("maybe",)
    assert w.predictions.tolist() == [1, 3, 0, 0, 1, 0]
    # the bin counters are unchanged: unseen categories in __other__
    assert dict(t.category_bin_counts()[0][1]) == {"a": 1, "b": 1, "__other__": 3}
    r = check_model(t.baseline, w, DriftParams(min_samples=1))
    f = r.features[0]
    assert f.samples == 5 and f.reference_samples == 100
    assert r.prediction is not None and r.prediction.samples == 6


def test_drift_window_codes_the_reference_tail_and_pools_past_it():
    """Categories past max_categories are pooled in __other__ for PSI and the bin counters,
    but the tests count up to 4 x max_categories of them one by one (the tail). Past that,
    a live category may be one the reference pooled: it is not told apart."""
    from sidecar.drift import DriftParams, check_model
    from sidecar.stats.reference import build_baseline

    t = _categorical_tracker(max_categories=1)
    values = ["a"] * 50 + ["b"] * 20 + ["c"] * 15 + ["d"] * 10 + ["e"] * 3 + ["f"] * 2
    b = build_baseline(
        "m",
        numeric={},
        categorical={"c": values},
        prediction=None,
        prediction_kind=None,
        max_categories=1,
    )
    ref = b.categorical[0]
    assert ref.categories == ("a",) and ref.tail == ("b", "c", "d")
    assert ref.counts.tolist() == [50, 50] and ref.tail_counts.tolist() == [20, 15, 10]
    assert ref.overflowed and ref.residual == 5
    assert ref.test_counts().tolist() == [50, 5, 20, 15, 10]
    t.install_baseline(b)
    _ingest(t, [("a", "x"), ("b", "x"), ("e", "x"), ("new", "x"), ("d", "x")])
    w = t.drift_window(t.window_snapshot(1.0))
    assert w.categorical_labels == (("b", "c", "d"),)
    assert w.categorical[:, 0].tolist() == [0, 2, 1, 1, 4]
    f = check_model(t.baseline, w, DriftParams(min_samples=1)).features[0]
    assert f.samples == 5 and f.reference_samples == 100

    # no category past the tail: a live category outside them all is new for certain,
    # and has a code of its own while the vocabulary has room (4 x max_categories)
    small = build_baseline(
        "m",
        numeric={},
        categorical={"c": values[:95]},
        prediction=None,
        prediction_kind=None,
        max_categories=2,
    )
    assert small.categorical[0].tail == ("c", "d") and not small.categorical[0].overflowed
    t2 = _categorical_tracker(max_categories=2)
    t2.install_baseline(small)
    _ingest(t2, [("a", "x"), ("c", "x"), ("new", "x"), ("b", "x")])
    w2 = t2.drift_window(t2.window_snapshot(1.0))
    assert w2.categorical_labels == (("c", "d", "new"),)
    assert w2.categorical[:, 0].tolist() == [0, 3, 5, 1]


def test_horizon_counts_cover_the_last_three_windows_of_events():
    """Categorical columns are also tested over the last HORIZON_WINDOWS windows of events,
    taken from the per-bin counters: the counts equal those of the events since the
    snapshot that starts the horizon, which covers at least that many events."""
    from sidecar.stats.reference import build_baseline
    from sidecar.tracker import HORIZON_WINDOWS

    spec = parse_config(
        {
            "models": [
                {
                    "name": "m",
                    "baseline": {"path": "b.parquet"},
                    "features": [{"name": "c", "type": "categorical"}],
                    "prediction": {"type": "categorical"},
                }
            ]
        }
    ).models[0]
    t = ModelTracker(spec, DriftSettings(window_size=100, min_samples=1))
    t.install_baseline(
        build_baseline(
            "m",
            numeric={},
            categorical={"c": ["a"] * 60 + ["b"] * 40},
            prediction=["yes"] * 50 + ["no"] * 50,
            prediction_kind="categorical",
        )
    )
    rng = np.random.default_rng(0)
    sent: list[tuple[str, str]] = []
    horizons = []
    for _ in range(40):  # 40 checks of 20 events: 800 events, 8 windows
        batch = [
            (str(rng.choice(["a", "b", "new"])), str(rng.choice(["yes", "no"]))) for _ in range(20)
        ]
        sent += batch
        _ingest(t, batch)
        w = t.drift_window(t.window_snapshot(1.0))
        horizons.append((len(sent), w.categorical_horizon[0], w.prediction_horizon))
    span = HORIZON_WINDOWS * 100
    # the first check (at 20 events) takes the first snapshot: none until 300 events
    # after it; then between 300 and 330 (plus one batch) of the latest events
    assert all(h is None for n, h, _ in horizons if n < span + 20)
    for n, h, ph in horizons:
        if n < span + 20:
            continue
        assert h is not None and ph is not None
        covered = int(h.sum())
        assert span <= covered <= span + span // 10 + 20
        last = sent[:n][-covered:]
        # test coding: a=0, b=1, OTHER=2, then the unseen "new" = 3
        want = [
            sum(c == "a" for c, _ in last),
            sum(c == "b" for c, _ in last),
            0,
            sum(c == "new" for c, _ in last),
        ]
        assert h.tolist() == want
        # classes tie at 50 each in the baseline, so by name: no=0, yes=1
        assert ph.tolist()[:2] == [sum(p == x for _, p in last) for x in ("no", "yes")]
    # a new baseline starts the horizon again
    t.install_baseline(t.baseline)
    assert t.drift_window(t.window_snapshot(1.0)).categorical_horizon == (None,)

"""Drift checks: PSI bins, chi-square, corrections, insufficient data, false alarms, power."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats

from sidecar.drift import DriftParams, WindowData, check_model
from sidecar.stats.chi2 import chi2_test
from sidecar.stats.correction import adjust_pvalues
from sidecar.stats.psi import psi
from sidecar.stats.reference import Baseline, build_baseline


def make_baseline(
    rng: np.random.Generator,
    n_numeric: int,
    n_categorical: int = 0,
    rows: int = 5000,
    prediction_kind: str | None = None,
) -> Baseline:
    numeric = {f"x{i}": rng.normal(size=rows) for i in range(n_numeric)}
    cats = np.array(["a", "b", "c", "d"])
    p = np.array([0.4, 0.3, 0.2, 0.1])
    categorical = {f"c{i}": list(rng.choice(cats, size=rows, p=p)) for i in range(n_categorical)}
    prediction: np.ndarray | list[str | None] | None = None
    if prediction_kind == "numeric":
        prediction = rng.normal(loc=2.0, size=rows)
    elif prediction_kind == "categorical":
        prediction = list(rng.choice(["yes", "no"], size=rows, p=[0.3, 0.7]))
    return build_baseline(
        "m",
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        prediction_kind=prediction_kind,
    )


def window(
    b: Baseline,
    rng: np.random.Generator,
    n: int,
    shift: float = 0.0,
    cat_p: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1),
) -> WindowData:
    num = rng.normal(loc=shift, size=(n, len(b.numeric)))
    cat = np.empty((n, len(b.categorical)), dtype=np.int32)
    for j, ref in enumerate(b.categorical):
        values = list(rng.choice(["a", "b", "c", "d"], size=n, p=list(cat_p)))
        cat[:, j] = ref.codes(values)
    return WindowData(numeric=num, categorical=cat, predictions=None)


def naive_numeric_psi(b_values: np.ndarray, edges: np.ndarray, cur: np.ndarray) -> float:
    """Bins by explicit interval tests: (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    bounds = [-math.inf, *edges.tolist(), math.inf]
    total = 0.0
    for lo, hi in itertools.pairwise(bounds):
        r = np.mean((b_values > lo) & (b_values <= hi))
        c = np.mean((cur > lo) & (cur <= hi))
        r, c = min(max(r, 1e-4), 1.0), min(max(c, 1e-4), 1.0)
        total += (c - r) * math.log(c / r)
    return total


def test_numeric_psi_keeps_values_outside_the_reference_range() -> None:
    rng = np.random.default_rng(1)
    b = make_baseline(rng, 1)
    ref = b.numeric[0]
    # a third of the window lies beyond the reference maximum: np.histogram would drop it
    cur = np.concatenate([rng.normal(size=700), np.full(350, ref.sorted_values[-1] + 10.0)])
    result = check_model(b, WindowData(cur[:, None], np.empty((1050, 0), np.int32)), DriftParams())
    f = result.features[0]
    assert f.samples == 1050
    assert f.psi is not None
    assert f.psi == pytest.approx(naive_numeric_psi(ref.sorted_values, ref.edges, cur), rel=1e-9)
    assert f.psi > 0.2
    assert f.drifted and "psi" in f.detected_by
    assert int(ref.bin_counts(cur)[-1]) >= 350


def test_nan_and_inf_count_as_missing() -> None:
    rng = np.random.default_rng(2)
    b = make_baseline(rng, 2)
    w = rng.normal(size=(1000, 2))
    w[:100, 0] = np.nan
    w[100:150, 0] = np.inf
    w[150:200, 0] = -np.inf
    result = check_model(b, WindowData(w, np.empty((1000, 0), np.int32)), DriftParams())
    f0, f1 = result.features
    assert f0.samples == 800 and f0.missing_rate == pytest.approx(0.2)
    assert f1.samples == 1000 and f1.missing_rate == 0.0
    expected = scipy.stats.ks_2samp(b.numeric[0].sorted_values, w[200:, 0], method="asymp")
    assert f0.ks_statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert f0.ks_pvalue == pytest.approx(expected.pvalue, rel=1e-12)
    assert all(math.isfinite(x) for x in (f0.psi or math.nan, f0.ks_statistic or math.nan))


def test_below_min_samples_reports_insufficient_data_not_noise() -> None:
    rng = np.random.default_rng(3)
    b = make_baseline(rng, 2, 1, prediction_kind="numeric")
    w = window(b, rng, 300, shift=5.0)
    w = WindowData(w.numeric, w.categorical, rng.normal(size=300))
    result = check_model(b, w, DriftParams(min_samples=500), now=123.0)
    assert not result.sufficient and result.samples == 300 and result.checked_at == 123.0
    for f in result.features:
        assert not f.sufficient and not f.drifted
        assert f.psi is None and f.ks_statistic is None and f.chi2_statistic is None
        assert f.p_adjusted is None
    assert result.prediction is not None and not result.prediction.sufficient
    assert result.prediction.ks_statistic is None and not result.prediction.drifted
    body = result.to_json()
    assert body["status"] == "insufficient_data" and body["drifted"] is False
    json.dumps(body, allow_nan=False)


def test_feature_below_min_samples_while_model_has_enough() -> None:
    rng = np.random.default_rng(4)
    b = make_baseline(rng, 2)
    w = rng.normal(loc=3.0, size=(1000, 2))
    w[:700, 1] = np.nan
    result = check_model(b, WindowData(w, np.empty((1000, 0), np.int32)), DriftParams())
    assert result.sufficient
    assert result.features[0].drifted
    f1 = result.features[1]
    assert not f1.sufficient and not f1.drifted and f1.psi is None
    assert f1.samples == 300 and f1.missing_rate == pytest.approx(0.7)


def test_categorical_two_sample_tests_and_unseen_categories() -> None:
    rng = np.random.default_rng(5)
    b = make_baseline(rng, 0, 1)
    ref = b.categorical[0]
    assert ref.categories == ("a", "b", "c", "d") and ref.shares[-1] == 0.0
    assert ref.counts.sum() == 5000 and not ref.overflowed
    np.testing.assert_allclose(ref.counts / 5000, ref.shares, rtol=0, atol=1e-15)
    values = list(rng.choice(["a", "b", "c", "d"], size=2000, p=[0.4, 0.3, 0.2, 0.1]))
    values[:150] = ["zz"] * 150  # two live categories the reference never saw
    values[150:200] = ["yy"] * 50
    values[200:300] = [None] * 100
    codes = ref.codes(values)
    assert (codes == -1).sum() == 100 and (codes == 4).sum() == 200
    # the tracker gives each unseen category a code of its own past OTHER, with its label
    codes[np.array([v == "zz" for v in values])] = 5
    codes[np.array([v == "yy" for v in values])] = 6
    window = WindowData(np.empty((2000, 0)), codes[:, None], categorical_labels=(("zz", "yy"),))
    result = check_model(b, window, DriftParams())
    f = result.features[0]
    assert f.kind == "categorical" and f.samples == 1900 and f.reference_samples == 5000
    assert f.missing_rate == pytest.approx(0.05)
    # chi-square of homogeneity on the 2 x k table: the unseen categories are columns
    live = np.bincount(codes[codes >= 0], minlength=7)
    table = np.array([np.append(ref.counts, [0, 0]), live])
    table = table[:, table.sum(axis=0) > 0]
    want = scipy.stats.chi2_contingency(table, correction=False)
    assert f.chi2_statistic == pytest.approx(want.statistic, rel=1e-12)
    assert f.chi2_pvalue == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert f.chi2_dof == table.shape[1] - 1
    # 150 of 1,900 live values in a category none of 5,000 baseline values had: drift
    assert f.drifted and f.detected_by[0] == "pvalue" and f.changed_category == "zz"
    assert f.test_pvalue is not None and f.test_pvalue < 1e-30
    # PSI pools the unseen categories into OTHER, as the per-bin counters do
    folded = np.append(live[:4], live[4:].sum())
    assert f.psi == pytest.approx(psi(ref.shares, folded))
    with pytest.raises(ValueError, match="beyond the 5 bins"):
        check_model(b, WindowData(np.empty((2000, 0)), codes[:, None]), DriftParams())


def test_categorical_without_drift_is_not_flagged_against_a_small_baseline() -> None:
    """A 1,000-row baseline and 10,000-value windows from the same distribution, with rare
    categories the baseline missed: today's goodness of fit (the baseline's shares taken
    as exact, unseen categories at a 1e-4 share) flags nearly every window; the two-sample
    tests keep their level."""
    rng = np.random.default_rng(11)
    cats = [f"k{i}" for i in range(12)]
    p = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.01, 0.005, 0.003, 0.002])
    b = build_baseline(
        "m",
        numeric={},
        categorical={"c": list(rng.choice(cats, 1000, p=p))},
        prediction=None,
        prediction_kind=None,
    )
    ref = b.categorical[0]
    params = DriftParams(min_samples=500)
    flagged_gof = significant = drifted = 0
    trials = 60
    for _ in range(trials):
        values = list(rng.choice(cats, 10_000, p=p))
        codes = ref.codes(values)
        unseen = sorted(set(values) - set(ref.categories))
        for i, label in enumerate(unseen):
            codes[np.array([v == label for v in values])] = len(ref.categories) + 1 + i
        w = WindowData(np.empty((10_000, 0)), codes[:, None], categorical_labels=(tuple(unseen),))
        f = check_model(b, w, params).features[0]
        folded = np.bincount(np.minimum(codes, len(ref.categories)), minlength=len(ref.shares))
        flagged_gof += chi2_test(ref.shares, folded)[1] < 0.05
        significant += f.significant
        drifted += f.drifted
    assert drifted == 0
    # P(Binomial(60, 0.05) > 9) < 2e-3; the old test flags most windows
    assert significant <= 9, significant
    assert flagged_gof >= 30, flagged_gof


def test_chi2_leaves_out_bins_empty_in_both() -> None:
    stat, p = chi2_test(np.array([0.5, 0.5, 0.0]), np.array([40, 60, 0]))
    want = scipy.stats.chisquare([40, 60], [50, 50])
    assert stat == pytest.approx(want.statistic, rel=1e-12)
    assert p == pytest.approx(want.pvalue, rel=1e-12)
    assert chi2_test(np.array([1.0, 0.0]), np.array([10, 0])) == (0.0, 1.0)
    assert all(math.isnan(x) for x in chi2_test(np.array([1.0]), np.array([0])))


def test_adjust_pvalues() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    bonf = adjust_pvalues(p, "bonferroni")
    np.testing.assert_allclose(bonf, [0.04, np.nan, 0.16, 0.12, 1.0])
    bh = adjust_pvalues(p, "bh")
    want = scipy.stats.false_discovery_control(p[~np.isnan(p)], method="bh")
    np.testing.assert_allclose(bh[~np.isnan(p)], want, rtol=1e-12)
    assert np.isnan(bh[1])
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), p)
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues(p, "holm")


def test_prediction_drift_numeric_and_categorical() -> None:
    rng = np.random.default_rng(6)
    b = make_baseline(rng, 1, prediction_kind="numeric")
    ref = b.prediction
    assert ref is not None
    preds = rng.normal(loc=2.5, size=2000)
    w = WindowData(rng.normal(size=(2000, 1)), np.empty((2000, 0), np.int32), preds)
    result = check_model(b, w, DriftParams())
    q = result.prediction
    assert q is not None and q.kind == "numeric" and q.sufficient and q.drifted
    want = scipy.stats.ks_2samp(ref.sorted_values, preds, method="asymp")
    assert q.ks_statistic == pytest.approx(want.statistic, abs=1e-12)
    assert q.ks_pvalue == pytest.approx(want.pvalue, rel=1e-12, abs=1e-300)
    assert q.mean_shift_ratio == pytest.approx((preds.mean() - ref.mean) / abs(ref.mean))
    assert q.psi is not None and q.chi2_statistic is None

    bc = make_baseline(rng, 1, prediction_kind="categorical")
    assert bc.prediction is not None and not isinstance(bc.prediction, type(ref))
    labels = list(rng.choice(["yes", "no"], size=2000, p=[0.6, 0.4]))
    codes = bc.prediction.codes(labels)
    wc = WindowData(rng.normal(size=(2000, 1)), np.empty((2000, 0), np.int32), codes)
    qc = check_model(bc, wc, DriftParams()).prediction
    assert qc is not None and qc.kind == "categorical" and qc.drifted
    assert qc.chi2_statistic is not None and qc.ks_statistic is None and qc.psi is not None


def test_mean_shift_ratio_is_none_for_zero_baseline_mean() -> None:
    rng = np.random.default_rng(7)
    b = build_baseline(
        "m",
        numeric={},
        categorical={},
        prediction=np.array([-1.0, 1.0] * 1000),
        prediction_kind="numeric",
    )
    w = WindowData(np.empty((1000, 0)), np.empty((1000, 0), np.int32), rng.normal(size=1000))
    q = check_model(b, w, DriftParams()).prediction
    assert q is not None and q.sufficient and q.mean_shift_ratio is None


def test_to_json_is_json_safe_and_complete() -> None:
    rng = np.random.default_rng(8)
    b = make_baseline(rng, 2, 1, prediction_kind="numeric")
    w = window(b, rng, 1000, shift=1.0)
    w = WindowData(w.numeric, w.categorical, rng.normal(size=1000))
    body = check_model(b, w, DriftParams(), now=1.5).to_json()
    text = json.dumps(body, allow_nan=False)
    assert json.loads(text) == body
    assert body["status"] == "ok" and body["checked_at"] == 1.5 and body["samples"] == 1000
    x0 = body["features"]["x0"]
    assert x0["drifted"] is True and x0["samples"] == 1000
    assert {"ks_statistic", "ks_pvalue", "psi", "psi_threshold", "p_adjusted"} <= set(x0)
    assert x0["p_value_threshold"] == 0.05
    c0 = body["features"]["c0"]
    assert {"chi2_statistic", "chi2_pvalue"} <= set(c0) and "ks_statistic" not in c0
    assert body["prediction"]["kind"] == "numeric"
    assert "x0" in body["drifted_features"]
    # what a user needs to judge a verdict and to set their own thresholds
    assert x0["reference_samples"] == 5000 and x0["significant"] is True
    assert x0["test_pvalue"] == x0["ks_pvalue"]
    assert x0["psi_expected"] == pytest.approx(9 * (1 / 1000 + 1 / 5000))
    assert x0["alarm_p_adjusted"] <= x0["false_alarm_rate"] == 0.05
    assert c0["changed_category"] in (None, "a", "b", "c", "d", "__other__")
    alarm = body["alarm"]
    assert alarm["checks_per_period"] == 2880 and alarm["tests"] == 4
    assert alarm["test_level"] == pytest.approx(0.05 / 2880 / 4)
    assert body["prediction"]["alarm_p_adjusted"] is not None


def test_features_and_predictions_share_one_alarm_family() -> None:
    """The verdict's p-values are adjusted over the features and the predictions together,
    with the number of checks in a period: alarm p = min(1, p * M * K) under Bonferroni."""
    rng = np.random.default_rng(21)
    b = make_baseline(rng, 3, 1, prediction_kind="categorical")
    w = window(b, rng, 2000, shift=0.3)
    assert b.prediction is not None
    labels = list(rng.choice(["yes", "no"], size=2000, p=[0.3, 0.7]))
    w = WindowData(w.numeric, w.categorical, b.prediction.codes(labels))
    params = DriftParams(false_alarm_rate=0.01, false_alarm_period_s=3600, interval_s=10)
    r = check_model(b, w, params)
    assert r.tests == 5
    tested = [*r.features, r.prediction]
    for t in tested:
        assert t is not None and t.test_pvalue is not None and t.alarm_p_adjusted is not None
        assert t.alarm_p_adjusted == pytest.approx(min(1.0, t.test_pvalue * 5 * 360), rel=1e-12)
        assert t.drifted == (t.alarm_p_adjusted <= 0.01)
        assert t.p_adjusted == pytest.approx(min(1.0, t.test_pvalue * 5), rel=1e-12)
    assert r.features[0].drifted  # 0.3 sigma on 2,000 events
    assert r.prediction is not None and not r.prediction.drifted


def test_params_follow_the_settings() -> None:
    from sidecar.config import DriftSettings

    d = DriftSettings(
        interval_s=5,
        false_alarm_rate=0.01,
        false_alarm_period_s=600,
        correction="bh",
        p_value=0.01,
        min_samples=100,
        psi_threshold=0.3,
    )
    params = DriftParams.from_settings(d)
    assert params.policy.checks == 120 and params.policy.check_level == pytest.approx(0.01 / 120)
    assert (params.correction, params.p_value, params.min_samples, params.psi_threshold) == (
        "bh",
        0.01,
        100,
        0.3,
    )
    with pytest.raises(ValueError, match="false_alarm_rate"):
        DriftParams(false_alarm_rate=0.0)


def test_window_shape_is_checked() -> None:
    rng = np.random.default_rng(9)
    b = make_baseline(rng, 2)
    with pytest.raises(ValueError, match="numeric"):
        check_model(b, WindowData(np.zeros((10, 3)), np.empty((10, 0), np.int32)), DriftParams())


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_per_check_significance_within_alpha_after_correction(correction: str) -> None:
    """200 no-drift checks of a 20-feature model: the per-check significance (`p_value`,
    after the correction) is within alpha, and the verdict, which holds a day's rate over
    every check, raises nothing."""
    rng = np.random.default_rng(1234)
    b = make_baseline(rng, 16, 4, rows=5000)
    params = DriftParams(min_samples=500, correction=correction, p_value=0.05)
    checks = 200
    results = [check_model(b, window(b, rng, 1000), params) for _ in range(checks)]
    significant = sum(any(f.significant for f in r.features) for r in results)
    # family-wise rate <= 0.05: P(Binomial(200, 0.05) > 20) < 1e-3
    assert significant <= 20, significant
    assert not any(r.drifted for r in results)
    assert all(r.tests == 20 for r in results)
    uncorrected = DriftParams(min_samples=500, correction="none")
    raw = sum(
        any(f.significant for f in check_model(b, window(b, rng, 1000), uncorrected).features)
        for _ in range(50)
    )
    # without a correction 20 tests at 0.05 alarm most of the time: the test has teeth
    assert raw >= 20, raw


def test_power_small_mean_shift_is_detected() -> None:
    """A 0.1 sigma shift in a 10k window against a 50k baseline, among 20 features."""
    rng = np.random.default_rng(99)
    b = make_baseline(rng, 20, rows=50_000)
    num = rng.normal(size=(10_000, 20))
    num[:, 3] += 0.1
    result = check_model(b, WindowData(num, np.empty((10_000, 0), np.int32)), DriftParams())
    drifted = [f.name for f in result.features if f.drifted]
    assert "x3" in drifted
    assert "pvalue" in result.features[3].detected_by
    assert len(drifted) <= 2


@pytest.mark.parametrize("scale", [0.85, 1.15])
def test_power_spread_change_with_the_same_mean_is_detected(scale: float) -> None:
    """The spread of one feature narrows or widens by 15%, its mean unchanged (a sensor
    that saturates, a model input rescaled): a 10k window against a 50k baseline, among 20
    features. KS sees the change of shape that a mean would miss."""
    rng = np.random.default_rng(7)
    b = make_baseline(rng, 20, rows=50_000)
    num = rng.normal(size=(10_000, 20))
    num[:, 5] *= scale
    result = check_model(b, WindowData(num, np.empty((10_000, 0), np.int32)), DriftParams())
    drifted = [f.name for f in result.features if f.drifted]
    assert "x5" in drifted
    assert "pvalue" in result.features[5].detected_by
    assert abs(float(num[:, 5].mean())) < 0.05  # the mean did not move: the spread did
    assert len(drifted) <= 2


def test_categories_past_max_categories_are_tested_one_by_one() -> None:
    """100 equally likely categories, 50 kept as labels: the kept ones are the baseline's
    most frequent, so their baseline share is inflated and __other__'s deflated. Comparing
    __other__ as a pool would flag every window; the tail keeps each category a column."""
    from sidecar.stats.twosample import category_drift

    rng = np.random.default_rng(17)
    cats = [f"v{i:03d}" for i in range(100)]
    b = build_baseline(
        "m",
        numeric={},
        categorical={"c": list(rng.choice(cats, 1000))},
        prediction=None,
        prediction_kind=None,
        max_categories=50,
    )
    ref = b.categorical[0]
    assert len(ref.categories) == 50 and len(ref.tail) == 50 and not ref.overflowed
    kept_share = ref.counts[:50].sum() / 1000
    assert kept_share > 0.55  # the winner's curse: 50 of 100 equal categories
    code_of = {c: i for i, c in enumerate(ref.categories)}
    code_of.update({c: 51 + i for i, c in enumerate(ref.tail)})
    params = DriftParams(min_samples=500)
    pooled_p = []
    for _ in range(20):
        values = rng.choice(cats, 10_000)
        codes = np.array([code_of[v] for v in values], dtype=np.int32)
        w = WindowData(np.empty((10_000, 0)), codes[:, None], categorical_labels=(ref.tail,))
        f = check_model(b, w, params).features[0]
        assert not f.drifted and f.alarm_p_adjusted is not None and f.alarm_p_adjusted > 0.05
        folded = np.bincount(np.minimum(codes, 50), minlength=51)
        pooled_p.append(category_drift(ref.counts, folded)[1].pvalue)
    assert max(pooled_p) < 1e-6


def test_horizon_counts_join_the_category_test_with_a_factor_of_two() -> None:
    """A 2-point share shift in 10,000 events against a 50,000-row baseline is about 4.5
    standard errors: not enough at the verdict's level. Over three windows of events it is
    about 6.7: flagged. The feature's p-value is min(1, 2 * min(window, horizon))."""
    rng = np.random.default_rng(23)
    cats = ["a", "b", "c", "d", "e"]
    p = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    q = np.array([0.28, 0.27, 0.2, 0.15, 0.1])
    b = build_baseline(
        "m",
        numeric={},
        categorical={"c": list(rng.choice(cats, 50_000, p=p))},
        prediction=None,
        prediction_kind=None,
    )
    ref = b.categorical[0]
    window_codes = ref.codes(list(rng.choice(cats, 10_000, p=q)))
    horizon = np.bincount(ref.codes(list(rng.choice(cats, 30_000, p=q))), minlength=6)
    # one test here; a rate 100 times smaller stands for a model of 100 tests
    params = DriftParams(false_alarm_rate=0.0005)
    alone = check_model(b, WindowData(np.empty((10_000, 0)), window_codes[:, None]), params)
    both = check_model(
        b,
        WindowData(np.empty((10_000, 0)), window_codes[:, None], categorical_horizon=(horizon,)),
        params,
    )
    f0, f1 = alone.features[0], both.features[0]
    assert f0.horizon_samples is None and f0.horizon_pvalue is None
    assert f1.horizon_samples == 30_000 and f1.horizon_pvalue is not None
    assert f0.test_pvalue is not None and f1.test_pvalue is not None
    assert f1.test_pvalue == pytest.approx(min(1.0, 2 * min(f0.test_pvalue, f1.horizon_pvalue)))
    assert not f0.drifted and f1.drifted
    assert f1.changed_category in ("a", "b")
    # a horizon no longer than the window adds nothing (and costs no factor of two)
    short = check_model(
        b,
        WindowData(
            np.empty((10_000, 0)),
            window_codes[:, None],
            categorical_horizon=(np.bincount(window_codes),),
        ),
        params,
    )
    assert short.features[0].test_pvalue == f0.test_pvalue

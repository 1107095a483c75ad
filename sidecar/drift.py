"""One model's drift check: its window against its baseline, and the check's result types.

The statistics themselves live in `sidecar.stats`. See docs/statistics.md for the
definitions and the rule that sets `drifted`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sidecar.stats.alarm import DEFAULT_PERIOD_S, DEFAULT_RATE, AlarmPolicy
from sidecar.stats.bins import OTHER
from sidecar.stats.correction import CORRECTIONS, adjust_pvalues
from sidecar.stats.ks import ks_pvalue, ks_statistic_sorted, sorted_columns
from sidecar.stats.mmd import TEST_NAME, EmbeddingReference, MmdResult, cross_mmd_test
from sidecar.stats.numbers import finite_or_none, rate
from sidecar.stats.psi import psi, psi_many
from sidecar.stats.reference import Baseline, CategoricalReference, NumericReference
from sidecar.stats.twosample import MIN_EXPECTED, category_drift, psi_expected

if TYPE_CHECKING:
    from sidecar.config import DriftSettings

# --------------------------------------------------------------------------- data types


@dataclass(frozen=True, eq=False)
class WindowData:
    """One model's current window as arrays, columns in the baseline's feature order."""

    numeric: np.ndarray
    """(n, n_numeric) float64; NaN (and ±inf) are missing."""
    categorical: np.ndarray
    """(n, n_categorical) int32 codes from CategoricalReference.codes; -1 is missing.
    Codes past OTHER (len(categories) + 1, + 2, ...) are the reference's tail categories,
    then live categories the reference never saw, one code each, named by
    `categorical_labels` (which then starts with the reference's `tail`)."""
    predictions: np.ndarray | None = None
    """(n,) float64 for numeric predictions, int32 codes for categorical ones (as above)."""
    categorical_labels: tuple[tuple[str, ...], ...] = ()
    """Per categorical column, the labels of its codes past OTHER; () when there are none."""
    prediction_labels: tuple[str, ...] = ()
    """The labels of categorical prediction codes past OTHER."""
    categorical_horizon: tuple[np.ndarray | None, ...] = ()
    """Per categorical column, its counts per code over a longer horizon than the window
    (the last few windows of events), or None; see `check_model`."""
    prediction_horizon: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    """(m, dim) float32: the window's embeddings (m may differ from n: not every event
    carries one)."""


@dataclass(frozen=True)
class DriftParams:
    """Thresholds of a drift check, and the alarm policy its verdicts follow."""

    min_samples: int = 500
    """Non-missing window values a statistic needs; below it the result is insufficient."""
    psi_threshold: float = 0.2
    """PSI above this marks a drifted feature's change as large; PSI never alarms alone."""
    p_value: float = 0.05
    """Per-check significance level (`significant`), after the check's correction; the
    verdicts use the false-alarm rate instead."""
    correction: str = "bonferroni"
    false_alarm_rate: float = DEFAULT_RATE
    """P(any false alarm of the model within a period) is kept at most this."""
    false_alarm_period_s: float = DEFAULT_PERIOD_S
    interval_s: float = 30.0
    """Seconds between the daemon's checks of the model: with the period, it bounds how
    many checks share the false-alarm rate."""

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction {self.correction!r}: expected one of {CORRECTIONS}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples {self.min_samples}: must be at least 1")
        self.policy  # noqa: B018 - validates the rate, the period and the interval

    @classmethod
    def from_settings(cls, d: DriftSettings) -> DriftParams:
        """The parameters a model's effective `drift:` settings give its checks."""
        return cls(
            min_samples=d.min_samples,
            psi_threshold=d.psi_threshold,
            p_value=d.p_value,
            correction=d.correction,
            false_alarm_rate=d.false_alarm_rate,
            false_alarm_period_s=d.false_alarm_period_s,
            interval_s=d.interval_s,
        )

    @property
    def policy(self) -> AlarmPolicy:
        return AlarmPolicy(
            false_alarm_rate=self.false_alarm_rate,
            period_s=self.false_alarm_period_s,
            interval_s=self.interval_s,
            correction=self.correction,
        )


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature; statistics are None when the check had too few samples."""

    name: str
    kind: str
    samples: int
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    chi2_statistic: float | None
    chi2_pvalue: float | None
    missing_rate: float
    baseline_missing_rate: float
    p_adjusted: float | None
    """The test's p-value after the check's correction (compared with `p_value`)."""
    drifted: bool
    """The verdict: `alarm_p_adjusted` <= the false-alarm rate."""
    sufficient: bool
    detected_by: tuple[str, ...] = ()
    """Why a drifted feature drifted: "pvalue" (the test), and "psi" when PSI is also
    above its threshold (a large change)."""
    test_pvalue: float | None = None
    """P-value of the test behind the verdict: KS for numeric features, the exact
    per-category test for categorical ones."""
    alarm_p_adjusted: float | None = None
    """The test's p-value on the scale of the false-alarm rate (see sidecar.stats.alarm)."""
    significant: bool = False
    """Per-check significance: `p_adjusted` < `p_value`."""
    reference_samples: int = 0
    """Non-missing baseline values the test compared with."""
    psi_expected: float | None = None
    """PSI expected with no drift at these sample sizes: (B - 1) * (1/n + 1/N)."""
    chi2_dof: int | None = None
    changed_category: str | None = None
    """Categorical: the category whose share moved most (by its exact test), if it is
    not pooled with others."""
    horizon_samples: int | None = None
    """Categorical: values in the longer horizon the exact test also ran on."""
    horizon_pvalue: float | None = None


@dataclass(frozen=True)
class PredictionDrift:
    """Drift of the model's predictions against the baseline's."""

    kind: str
    samples: int
    ks_statistic: float | None
    ks_pvalue: float | None
    mean_shift_ratio: float | None
    psi: float | None
    chi2_statistic: float | None
    chi2_pvalue: float | None
    drifted: bool
    sufficient: bool
    missing_rate: float = math.nan
    detected_by: tuple[str, ...] = ()
    test_pvalue: float | None = None
    p_adjusted: float | None = None
    alarm_p_adjusted: float | None = None
    significant: bool = False
    reference_samples: int = 0
    psi_expected: float | None = None
    chi2_dof: int | None = None
    changed_category: str | None = None
    horizon_samples: int | None = None
    horizon_pvalue: float | None = None


@dataclass(frozen=True)
class EmbeddingDrift:
    """Drift of the model's embeddings (sidecar.stats.mmd); statistics None when the
    window had too few."""

    dim: int
    samples: int
    sufficient: bool
    statistic: float | None
    """The cross-MMD statistic T, standard normal under no drift."""
    pvalue: float | None
    p_adjusted: float | None
    """Corrected within the check."""
    alarm_p_adjusted: float | None
    """On the period's scale (the false-alarm policy): drifted when <= its rate."""
    mmd2: float | None
    centroid_distance: float | None
    drifted: bool
    device: str
    n_features: int
    bandwidth: float
    reference_rows: int

    def to_json(self, p_value: float) -> dict[str, Any]:
        return {
            "test": TEST_NAME,
            "dim": self.dim,
            "samples": self.samples,
            "sufficient": self.sufficient,
            "drifted": self.drifted,
            "statistic": finite_or_none(self.statistic),
            "pvalue": finite_or_none(self.pvalue),
            "p_adjusted": finite_or_none(self.p_adjusted),
            "alarm_p_adjusted": finite_or_none(self.alarm_p_adjusted),
            "p_value_threshold": p_value,
            "mmd2": finite_or_none(self.mmd2),
            "centroid_distance": finite_or_none(self.centroid_distance),
            "device": self.device,
            "features": self.n_features,
            "bandwidth": self.bandwidth,
            "reference_rows": self.reference_rows,
        }


@dataclass(frozen=True)
class ModelDriftResult:
    """One drift check of one model."""

    model: str
    checked_at: float
    """Unix seconds."""
    duration_s: float
    samples: int
    """Events in the window."""
    sufficient: bool
    features: tuple[FeatureDrift, ...]
    prediction: PredictionDrift | None
    params: DriftParams = DriftParams()
    tests: int = 0
    """Tests that ran in this check (features with enough data, the predictions, and the
    embeddings)."""
    embedding: EmbeddingDrift | None = None

    @property
    def drifted(self) -> bool:
        """Whether any feature, the prediction or the embedding drifted."""
        return (
            any(f.drifted for f in self.features)
            or bool(self.prediction and self.prediction.drifted)
            or bool(self.embedding and self.embedding.drifted)
        )

    def to_json(self) -> dict[str, Any]:
        """The `GET /v1/drift` body for this model; JSON-safe (None where NaN)."""
        p = self.params
        policy = p.policy
        features: dict[str, Any] = {}
        for f in self.features:
            entry: dict[str, Any] = {
                "kind": f.kind,
                "samples": f.samples,
                "reference_samples": f.reference_samples,
                "sufficient": f.sufficient,
                "drifted": f.drifted,
                "detected_by": list(f.detected_by),
                "psi": finite_or_none(f.psi),
                "psi_expected": finite_or_none(f.psi_expected),
                "psi_threshold": p.psi_threshold,
            }
            if f.kind == "numeric":
                entry["ks_statistic"] = finite_or_none(f.ks_statistic)
                entry["ks_pvalue"] = finite_or_none(f.ks_pvalue)
            else:
                entry["chi2_statistic"] = finite_or_none(f.chi2_statistic)
                entry["chi2_pvalue"] = finite_or_none(f.chi2_pvalue)
                entry["chi2_dof"] = f.chi2_dof
                entry["changed_category"] = f.changed_category
                entry["horizon_samples"] = f.horizon_samples
                entry["horizon_pvalue"] = finite_or_none(f.horizon_pvalue)
            entry.update(
                _verdict_json(f.test_pvalue, f.p_adjusted, f.significant, f.alarm_p_adjusted, p)
            )
            entry["missing_rate"] = finite_or_none(f.missing_rate)
            entry["baseline_missing_rate"] = finite_or_none(f.baseline_missing_rate)
            features[f.name] = entry
        pred: dict[str, Any] | None = None
        if self.prediction is not None:
            q = self.prediction
            pred = {
                "kind": q.kind,
                "samples": q.samples,
                "reference_samples": q.reference_samples,
                "sufficient": q.sufficient,
                "drifted": q.drifted,
                "detected_by": list(q.detected_by),
                "psi": finite_or_none(q.psi),
                "psi_expected": finite_or_none(q.psi_expected),
                "psi_threshold": p.psi_threshold,
            }
            if q.kind == "numeric":
                pred["ks_statistic"] = finite_or_none(q.ks_statistic)
                pred["ks_pvalue"] = finite_or_none(q.ks_pvalue)
                pred["mean_shift_ratio"] = finite_or_none(q.mean_shift_ratio)
            else:
                pred["chi2_statistic"] = finite_or_none(q.chi2_statistic)
                pred["chi2_pvalue"] = finite_or_none(q.chi2_pvalue)
                pred["chi2_dof"] = q.chi2_dof
                pred["changed_category"] = q.changed_category
                pred["horizon_samples"] = q.horizon_samples
                pred["horizon_pvalue"] = finite_or_none(q.horizon_pvalue)
            pred.update(
                _verdict_json(q.test_pvalue, q.p_adjusted, q.significant, q.alarm_p_adjusted, p)
            )
            pred["missing_rate"] = finite_or_none(q.missing_rate)
        return {
            "model": self.model,
            "status": "ok" if self.sufficient else "insufficient_data",
            "checked_at": self.checked_at,
            "duration_s": self.duration_s,
            "samples": self.samples,
            "min_samples": p.min_samples,
            "correction": p.correction,
            "p_value": p.p_value,
            "psi_threshold": p.psi_threshold,
            "alarm": {
                "false_alarm_rate": p.false_alarm_rate,
                "period_s": p.false_alarm_period_s,
                "interval_s": p.interval_s,
                "checks_per_period": policy.checks,
                "tests": self.tests,
                "check_level": policy.check_level,
                "test_level": policy.test_level(self.tests),
            },
            "drifted": self.drifted,
            "drifted_features": [f.name for f in self.features if f.drifted],
            "features": features,
            "prediction": pred,
            "embedding": None if self.embedding is None else self.embedding.to_json(p.p_value),
        }


def _verdict_json(
    test_p: float | None,
    p_adj: float | None,
    significant: bool,
    alarm_p: float | None,
    p: DriftParams,
) -> dict[str, Any]:
    return {
        "test_pvalue": finite_or_none(test_p),
        "p_adjusted": finite_or_none(p_adj),
        "p_value_threshold": p.p_value,
        "significant": significant,
        "alarm_p_adjusted": finite_or_none(alarm_p),
        "false_alarm_rate": p.false_alarm_rate,
    }


# --------------------------------------------------------------------------- a model's check


@dataclass(frozen=True)
class _Categorical:
    """The statistics of one categorical column (a feature or the predictions)."""

    samples: int
    psi: float
    psi_expected: float
    chi2_statistic: float
    chi2_pvalue: float
    chi2_dof: int
    test_pvalue: float
    changed_category: str | None
    horizon_samples: int | None
    horizon_pvalue: float | None


def check_model(
    baseline: Baseline, window: WindowData, params: DriftParams, now: float | None = None
) -> ModelDriftResult:
    """Compare one model's window with its baseline; see docs/statistics.md for the rules.

    Every test's p-value (features and predictions together) goes through the alarm
    policy of `params`, which sets `drifted`.
    """
    started = time.perf_counter()
    checked_at = time.time() if now is None else now
    num = _columns(window.numeric, len(baseline.numeric), "numeric", np.float64)
    cat = _columns(window.categorical, len(baseline.categorical), "categorical", np.int32)
    n = _window_rows(num, cat, window.predictions)
    enough = n >= params.min_samples

    features: list[FeatureDrift] = []

    # numeric features: KS per column (sorted once), then PSI and p-values in one go
    refs = baseline.numeric
    k = len(refs)
    d = np.full(k, np.nan)
    counts = np.zeros(k, dtype=np.int64)
    width = max((r.shares.shape[0] for r in refs), default=1)
    ref_shares = np.zeros((k, width))
    bin_counts = np.zeros((k, width), dtype=np.int64)
    go = np.zeros(k, dtype=bool)
    for j, col in sorted_columns(num) if k else ():
        ref = refs[j]
        m = col.shape[0]
        counts[j] = m
        if enough and m >= params.min_samples and ref.usable:
            go[j] = True
            d[j] = ks_statistic_sorted(ref.sorted_values, col)
            nb = ref.shares.shape[0]
            ref_shares[j, :nb] = ref.shares
            bin_counts[j, :nb] = ref.sorted_bin_counts(col)
    n_ref = np.array([r.count for r in refs], dtype=np.int64)
    p = np.asarray(ks_pvalue(d, n_ref, counts), dtype=np.float64)
    psis = psi_many(ref_shares[go], bin_counts[go])
    psi_of = dict(zip(np.flatnonzero(go).tolist(), psis.tolist(), strict=True))
    for j, ref in enumerate(refs):
        m = int(counts[j])
        if go[j]:
            features.append(
                FeatureDrift(
                    name=ref.name,
                    kind="numeric",
                    samples=m,
                    psi=psi_of[j],
                    ks_statistic=float(d[j]),
                    ks_pvalue=float(p[j]),
                    chi2_statistic=None,
                    chi2_pvalue=None,
                    missing_rate=rate(n - m, n),
                    baseline_missing_rate=ref.missing_rate,
                    p_adjusted=None,
                    drifted=False,
                    sufficient=True,
                    test_pvalue=float(p[j]),
                    reference_samples=ref.count,
                    psi_expected=psi_expected(_nonzero(ref.shares), m, ref.count),
                )
            )
        else:
            features.append(
                _insufficient(ref.name, "numeric", m, n, ref.missing_rate, ref_count=ref.count)
            )

    for j, cref in enumerate(baseline.categorical):
        labels = window.categorical_labels[j] if j < len(window.categorical_labels) else ()
        horizon = window.categorical_horizon[j] if j < len(window.categorical_horizon) else None
        counts_c = _code_counts(cat[:, j], cref, labels, f"categorical column {cref.name!r}")
        m = int(counts_c.sum())
        if enough and m >= params.min_samples and cref.usable:
            c = _categorical(cref, counts_c, labels, horizon)
            features.append(
                FeatureDrift(
                    name=cref.name,
                    kind="categorical",
                    samples=m,
                    psi=c.psi,
                    ks_statistic=None,
                    ks_pvalue=None,
                    chi2_statistic=c.chi2_statistic,
                    chi2_pvalue=c.chi2_pvalue,
                    missing_rate=rate(n - m, n),
                    baseline_missing_rate=cref.missing_rate,
                    p_adjusted=None,
                    drifted=False,
                    sufficient=True,
                    test_pvalue=c.test_pvalue,
                    reference_samples=cref.count,
                    psi_expected=c.psi_expected,
                    chi2_dof=c.chi2_dof,
                    changed_category=c.changed_category,
                    horizon_samples=c.horizon_samples,
                    horizon_pvalue=c.horizon_pvalue,
                )
            )
        else:
            features.append(
                _insufficient(
                    cref.name, "categorical", m, n, cref.missing_rate, ref_count=cref.count
                )
            )

    prediction = None
    if baseline.prediction is not None and window.predictions is not None:
        prediction = _prediction_drift(
            baseline.prediction,
            window.predictions,
            window.prediction_labels,
            window.prediction_horizon,
            n=n,
            enough=enough,
            params=params,
        )

    # the embedding test is one more test of the model's check: its p-value joins the
    # family, so the per-period false-alarm policy covers it as it covers the others
    mmd: MmdResult | None = None
    emb_ref = baseline.embedding
    emb_rows = window.embeddings
    has_emb = emb_ref is not None and emb_rows is not None
    if (
        emb_ref is not None
        and emb_rows is not None
        and emb_rows.shape[0] >= max(params.min_samples, 4)
    ):
        mmd = cross_mmd_test(emb_ref, emb_rows)

    # the verdicts: every test of the check, features, predictions, embeddings, in one family
    raw = [_p(f.test_pvalue) for f in features]
    raw.append(_p(prediction.test_pvalue) if prediction is not None else math.nan)
    if has_emb:
        raw.append(mmd.pvalue if mmd is not None else math.nan)
    pvals = np.array(raw, dtype=np.float64)
    within = adjust_pvalues(pvals, params.correction)
    policy = params.policy
    period = policy.adjusted(pvals)
    verdicts = policy.verdicts(pvals)
    final = [
        _decide(f, float(within[i]), float(period[i]), bool(verdicts[i]), params)
        if f.sufficient
        else f
        for i, f in enumerate(features)
    ]
    k = len(features)  # the prediction's index; the embedding's is k + 1
    if prediction is not None and prediction.sufficient:
        prediction = _decide(
            prediction, float(within[k]), float(period[k]), bool(verdicts[k]), params
        )
    embedding: EmbeddingDrift | None = None
    if emb_ref is not None and emb_rows is not None:
        embedding = _embedding_drift(
            emb_ref,
            emb_rows.shape[0],
            mmd,
            within=float(within[k + 1]),
            period=float(period[k + 1]),
            drifted=bool(verdicts[k + 1]),
        )

    return ModelDriftResult(
        model=baseline.model,
        checked_at=checked_at,
        duration_s=time.perf_counter() - started,
        samples=n,
        sufficient=enough or bool(embedding and embedding.sufficient),
        features=tuple(final),
        prediction=prediction,
        params=params,
        tests=int(np.count_nonzero(~np.isnan(pvals))),
        embedding=embedding,
    )


def _embedding_drift(
    ref: EmbeddingReference,
    samples: int,
    mmd: MmdResult | None,
    *,
    within: float,
    period: float,
    drifted: bool,
) -> EmbeddingDrift:
    return EmbeddingDrift(
        dim=ref.dim,
        samples=samples,
        sufficient=mmd is not None,
        statistic=None if mmd is None else mmd.statistic,
        pvalue=None if mmd is None else mmd.pvalue,
        p_adjusted=None if mmd is None else finite_or_none(within),
        alarm_p_adjusted=None if mmd is None else finite_or_none(period),
        mmd2=None if mmd is None else mmd.mmd2,
        centroid_distance=None if mmd is None else mmd.centroid_distance,
        drifted=mmd is not None and drifted,
        device=ref.backend.device,
        n_features=ref.fmap.n_features,
        bandwidth=ref.fmap.bandwidth,
        reference_rows=ref.rows,
    )


def _p(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _nonzero(shares: np.ndarray) -> int:
    return int(np.count_nonzero(np.asarray(shares) > 0))


_Result = Any  # FeatureDrift | PredictionDrift: both have the fields _decide replaces


def _decide(
    r: _Result, within: float, period: float, drifted: bool, params: DriftParams
) -> _Result:
    """Set the per-check significance and the verdict of a sufficient result."""
    by: tuple[str, ...] = ()
    if drifted:
        large = r.psi is not None and math.isfinite(r.psi) and r.psi > params.psi_threshold
        by = ("pvalue", "psi") if large else ("pvalue",)
    return replace(
        r,
        p_adjusted=finite_or_none(within),
        significant=bool(math.isfinite(within) and within < params.p_value),
        alarm_p_adjusted=finite_or_none(period),
        drifted=drifted,
        detected_by=by,
    )


def _categorical(
    ref: CategoricalReference,
    counts: np.ndarray,
    labels: tuple[str, ...],
    horizon: np.ndarray | None = None,
) -> _Categorical:
    """PSI over the reference's bins, and the two-sample tests over every category.

    `counts` has a bin per kept reference category, OTHER, one per tail category of the
    reference, then one per live category the reference never saw. PSI pools all past
    OTHER into it, as the bin counters do. The tests keep them apart, unless the reference
    had more categories than it counts one by one (then an unseen live category may be
    one of those, and only the rest as a whole is comparable).

    `horizon`, counts in the same coding over a longer stretch of events than the window,
    gets the exact test too when it holds more values than the window; the feature's
    p-value is then min(1, 2 * min(window p, horizon p)), Bonferroni over the two.
    """
    kept = len(ref.categories)
    folded = counts[: kept + 1].copy()
    folded[kept] += int(counts[kept + 1 :].sum())
    base = ref.test_counts()
    chi2, exact, _ = category_drift(base, _testable(ref, counts), MIN_EXPECTED)
    p, column = exact.pvalue, exact.column
    horizon_samples: int | None = None
    horizon_p: float | None = None
    if horizon is not None and int(horizon.sum()) > int(counts.sum()):
        _, longer, _ = category_drift(base, _testable(ref, horizon), MIN_EXPECTED)
        horizon_samples, horizon_p = int(horizon.sum()), longer.pvalue
        if longer.pvalue < p:
            column = longer.column
        p = min(1.0, 2.0 * min(p, longer.pvalue))
    changed: str | None = None
    if column >= 0:
        c = column
        changed = ref.categories[c] if c < kept else OTHER if c == kept else labels[c - kept - 1]
    m = int(counts.sum())
    return _Categorical(
        samples=m,
        psi=psi(ref.shares, folded),
        psi_expected=psi_expected(_nonzero(ref.shares), m, ref.count),
        chi2_statistic=chi2.statistic,
        chi2_pvalue=chi2.pvalue,
        chi2_dof=chi2.dof,
        test_pvalue=p,
        changed_category=changed,
        horizon_samples=horizon_samples,
        horizon_pvalue=horizon_p,
    )


def _testable(ref: CategoricalReference, counts: np.ndarray) -> np.ndarray:
    """Live counts as the tests compare them: past the counted categories, only a pool."""
    counted = len(ref.categories) + 1 + len(ref.tail)
    if not (ref.overflowed and counts.shape[0] > counted):
        return counts
    live = counts[:counted].copy()
    live[len(ref.categories)] += int(counts[counted:].sum())
    return live


def _columns(a: np.ndarray, k: int, what: str, dtype: type[np.generic]) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    if k == 0 and arr.size == 0:
        return arr.reshape(arr.shape[0] if arr.ndim else 0, 0)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"window {what} array of shape {arr.shape}: expected (n, {k})")
    return arr


def _window_rows(num: np.ndarray, cat: np.ndarray, predictions: np.ndarray | None) -> int:
    rows = {a.shape[0] for a in (num, cat) if a.shape[1] > 0}
    if predictions is not None:
        rows.add(int(np.asarray(predictions).shape[0]))
    if len(rows) > 1:
        raise ValueError(f"window arrays disagree on the number of rows: {sorted(rows)}")
    return rows.pop() if rows else 0


def _insufficient(
    name: str, kind: str, m: int, n: int, base_missing: float, *, ref_count: int
) -> FeatureDrift:
    return FeatureDrift(
        name=name,
        kind=kind,
        samples=m,
        psi=None,
        ks_statistic=None,
        ks_pvalue=None,
        chi2_statistic=None,
        chi2_pvalue=None,
        missing_rate=rate(n - m, n),
        baseline_missing_rate=base_missing,
        p_adjusted=None,
        drifted=False,
        sufficient=False,
        reference_samples=ref_count,
    )


def _code_counts(
    codes: np.ndarray, ref: CategoricalReference, labels: tuple[str, ...], what: str
) -> np.ndarray:
    """Counts per code: the reference's bins, then one per named unseen live category."""
    c = np.asarray(codes)
    bins = len(ref.categories) + 1 + len(labels)
    c = c[c >= 0]
    if c.size and int(c.max()) >= bins:
        raise ValueError(f"{what}: code {int(c.max())} beyond the {bins} bins of its baseline")
    return np.bincount(c, minlength=bins)


def _prediction_drift(
    ref: NumericReference | CategoricalReference,
    predictions: np.ndarray,
    labels: tuple[str, ...],
    horizon: np.ndarray | None,
    *,
    n: int,
    enough: bool,
    params: DriftParams,
) -> PredictionDrift:
    if isinstance(ref, NumericReference):
        v = np.asarray(predictions, dtype=np.float64)
        total = v.shape[0]
        v = np.sort(v[np.isfinite(v)])
        m = v.shape[0]
        missing = rate(total - m, total)
        if not (enough and m >= params.min_samples and ref.usable):
            return PredictionDrift(
                kind="numeric",
                samples=m,
                ks_statistic=None,
                ks_pvalue=None,
                mean_shift_ratio=None,
                psi=None,
                chi2_statistic=None,
                chi2_pvalue=None,
                drifted=False,
                sufficient=False,
                missing_rate=missing,
                reference_samples=ref.count,
            )
        d = ks_statistic_sorted(ref.sorted_values, v)
        p = float(ks_pvalue(d, ref.count, m))
        shift = None
        if ref.mean != 0 and math.isfinite(ref.mean):
            shift = (float(v.mean()) - ref.mean) / abs(ref.mean)
        return PredictionDrift(
            kind="numeric",
            samples=m,
            ks_statistic=d,
            ks_pvalue=p,
            mean_shift_ratio=shift,
            psi=psi(ref.shares, ref.sorted_bin_counts(v)),
            chi2_statistic=None,
            chi2_pvalue=None,
            drifted=False,
            sufficient=True,
            missing_rate=missing,
            test_pvalue=p,
            reference_samples=ref.count,
            psi_expected=psi_expected(_nonzero(ref.shares), m, ref.count),
        )
    codes = np.asarray(predictions)
    counts = _code_counts(codes, ref, labels, "predictions")
    m = int(counts.sum())
    missing = rate(codes.shape[0] - m, codes.shape[0])
    if not (enough and m >= params.min_samples and ref.usable):
        return PredictionDrift(
            kind="categorical",
            samples=m,
            ks_statistic=None,
            ks_pvalue=None,
            mean_shift_ratio=None,
            psi=None,
            chi2_statistic=None,
            chi2_pvalue=None,
            drifted=False,
            sufficient=False,
            missing_rate=missing,
            reference_samples=ref.count,
        )
    c = _categorical(ref, counts, labels, horizon)
    return PredictionDrift(
        kind="categorical",
        samples=m,
        ks_statistic=None,
        ks_pvalue=None,
        mean_shift_ratio=None,
        psi=c.psi,
        chi2_statistic=c.chi2_statistic,
        chi2_pvalue=c.chi2_pvalue,
        drifted=False,
        sufficient=True,
        missing_rate=missing,
        test_pvalue=c.test_pvalue,
        reference_samples=ref.count,
        psi_expected=c.psi_expected,
        chi2_dof=c.chi2_dof,
        changed_category=c.changed_category,
        horizon_samples=c.horizon_samples,
        horizon_pvalue=c.horizon_pvalue,
    )

"""One model's drift check: its window against its baseline.

The statistics themselves live in `sidecar.stats`; the check's parameters and result
types in `sidecar.drift_result`. See docs/statistics.md for the definitions and the rule
that sets `drifted`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sidecar.drift_bins import ColumnBins, categorical_bins, numeric_bins, prediction_bins
from sidecar.drift_categorical import _categorical, _code_counts, _nonzero
from sidecar.drift_prediction import _prediction_drift
from sidecar.drift_result import (
    DriftParams,
    EmbeddingDrift,
    FeatureDrift,
    ModelDriftResult,
    PredictionDrift,
)
from sidecar.stats.correction import adjust_pvalues
from sidecar.stats.ks import ks_pvalue, ks_statistic_sorted, sorted_columns
from sidecar.stats.mmd import EmbeddingReference, MmdResult, cross_mmd_test
from sidecar.stats.numbers import finite_or_none, rate
from sidecar.stats.psi import psi_many
from sidecar.stats.reference import Baseline
from sidecar.stats.twosample import psi_expected

__all__ = [
    "DriftParams",
    "EmbeddingDrift",
    "FeatureDrift",
    "ModelDriftResult",
    "PredictionDrift",
    "WindowData",
    "check_model",
]

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


# --------------------------------------------------------------------------- a model's check


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
    bins: list[ColumnBins] = []  # per feature, for /v1/drift, whatever the sample size
    for j, col in sorted_columns(num) if k else ():
        ref = refs[j]
        m = col.shape[0]
        counts[j] = m
        nb = ref.shares.shape[0]
        bin_counts[j, :nb] = ref.sorted_bin_counts(col)
        bins.append(numeric_bins(ref, bin_counts[j, :nb]))
        if enough and m >= params.min_samples and ref.usable:
            go[j] = True
            d[j] = ks_statistic_sorted(ref.sorted_values, col)
            ref_shares[j, :nb] = ref.shares
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
        bins.append(categorical_bins(cref, counts_c))
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
    pred_bins: ColumnBins | None = None
    if baseline.prediction is not None and window.predictions is not None:
        pred_bins = prediction_bins(baseline.prediction, window.predictions)
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
        feature_bins=tuple(bins),
        prediction_bins=pred_bins,
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

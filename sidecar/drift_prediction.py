"""A drift check's statistics of the model's predictions, numeric or categorical."""

from __future__ import annotations

import math

import numpy as np

from sidecar.drift_categorical import _categorical, _code_counts, _nonzero
from sidecar.drift_result import DriftParams, PredictionDrift
from sidecar.stats.ks import ks_pvalue, ks_statistic_sorted
from sidecar.stats.numbers import rate
from sidecar.stats.psi import psi
from sidecar.stats.reference import CategoricalReference, NumericReference
from sidecar.stats.twosample import psi_expected


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
            sufficient=False,
            missing_rate=missing,
            reference_samples=ref.count,
        )
    c = _categorical(ref, counts, labels, horizon)
    return PredictionDrift(
        kind="categorical",
        samples=m,
        psi=c.psi,
        chi2_statistic=c.chi2_statistic,
        chi2_pvalue=c.chi2_pvalue,
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

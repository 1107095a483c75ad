"""One model's drift check: its window against its baseline, and the check's result types.

The statistics themselves live in `sidecar.stats`. See docs/statistics.md for the
definitions and the rule that sets `drifted`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sidecar.stats.chi2 import chi2_test
from sidecar.stats.correction import CORRECTIONS, adjust_pvalues
from sidecar.stats.ks import ks_pvalue, ks_statistic_sorted, sorted_columns
from sidecar.stats.mmd import TEST_NAME, EmbeddingReference, MmdResult, cross_mmd_test
from sidecar.stats.numbers import finite_or_none, rate
from sidecar.stats.psi import psi, psi_many
from sidecar.stats.reference import Baseline, CategoricalReference, NumericReference

# --------------------------------------------------------------------------- data types


@dataclass(frozen=True, eq=False)
class WindowData:
    """One model's current window as arrays, columns in the baseline's feature order."""

    numeric: np.ndarray
    """(n, n_numeric) float64; NaN (and ±inf) are missing."""
    categorical: np.ndarray
    """(n, n_categorical) int32 codes from CategoricalReference.codes; -1 is missing."""
    predictions: np.ndarray | None = None
    """(n,) float64 for numeric predictions, int32 codes for categorical ones."""
    embeddings: np.ndarray | None = None
    """(m, dim) float32: the window's embeddings (m may differ from n: not every event
    carries one)."""


@dataclass(frozen=True)
class DriftParams:
    """Thresholds of a drift check."""

    min_samples: int = 500
    """Non-missing window values a statistic needs; below it the result is insufficient."""
    psi_threshold: float = 0.2
    p_value: float = 0.05
    """Significance level, applied to p-values after the correction."""
    correction: str = "bonferroni"

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction {self.correction!r}: expected one of {CORRECTIONS}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples {self.min_samples}: must be at least 1")


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
    drifted: bool
    sufficient: bool
    detected_by: tuple[str, ...] = ()
    """Which alarms fired: "pvalue" (corrected test) and/or "psi"."""


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
        features: dict[str, Any] = {}
        for f in self.features:
            entry: dict[str, Any] = {
                "kind": f.kind,
                "samples": f.samples,
                "sufficient": f.sufficient,
                "drifted": f.drifted,
                "detected_by": list(f.detected_by),
                "psi": finite_or_none(f.psi),
                "psi_threshold": p.psi_threshold,
            }
            if f.kind == "numeric":
                entry["ks_statistic"] = finite_or_none(f.ks_statistic)
                entry["ks_pvalue"] = finite_or_none(f.ks_pvalue)
            else:
                entry["chi2_statistic"] = finite_or_none(f.chi2_statistic)
                entry["chi2_pvalue"] = finite_or_none(f.chi2_pvalue)
            entry["p_adjusted"] = finite_or_none(f.p_adjusted)
            entry["p_value_threshold"] = p.p_value
            entry["missing_rate"] = finite_or_none(f.missing_rate)
            entry["baseline_missing_rate"] = finite_or_none(f.baseline_missing_rate)
            features[f.name] = entry
        pred: dict[str, Any] | None = None
        if self.prediction is not None:
            q = self.prediction
            pred = {
                "kind": q.kind,
                "samples": q.samples,
                "sufficient": q.sufficient,
                "drifted": q.drifted,
                "detected_by": list(q.detected_by),
                "psi": finite_or_none(q.psi),
                "psi_threshold": p.psi_threshold,
            }
            if q.kind == "numeric":
                pred["ks_statistic"] = finite_or_none(q.ks_statistic)
                pred["ks_pvalue"] = finite_or_none(q.ks_pvalue)
                pred["mean_shift_ratio"] = finite_or_none(q.mean_shift_ratio)
            else:
                pred["chi2_statistic"] = finite_or_none(q.chi2_statistic)
                pred["chi2_pvalue"] = finite_or_none(q.chi2_pvalue)
            pred["p_value_threshold"] = p.p_value
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
            "drifted": self.drifted,
            "drifted_features": [f.name for f in self.features if f.drifted],
            "features": features,
            "prediction": pred,
            "embedding": None if self.embedding is None else self.embedding.to_json(p.p_value),
        }


# --------------------------------------------------------------------------- a model's check


def check_model(
    baseline: Baseline, window: WindowData, params: DriftParams, now: float | None = None
) -> ModelDriftResult:
    """Compare one model's window with its baseline; see docs/statistics.md for the rules."""
    started = time.perf_counter()
    checked_at = time.time() if now is None else now
    num = _columns(window.numeric, len(baseline.numeric), "numeric", np.float64)
    cat = _columns(window.categorical, len(baseline.categorical), "categorical", np.int32)
    n = _window_rows(num, cat, window.predictions)
    enough = n >= params.min_samples

    features: list[FeatureDrift] = []
    raw_p: list[float] = []

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
                    name=ref.name, kind="numeric", samples=m, psi=psi_of[j],
                    ks_statistic=float(d[j]), ks_pvalue=float(p[j]),
                    chi2_statistic=None, chi2_pvalue=None,
                    missing_rate=rate(n - m, n), baseline_missing_rate=ref.missing_rate,
                    p_adjusted=None, drifted=False, sufficient=True,
                )
            )
            raw_p.append(float(p[j]))
        else:
            features.append(_insufficient(ref.name, "numeric", m, n, ref.missing_rate))
            raw_p.append(math.nan)

    for j, cref in enumerate(baseline.categorical):
        counts_c = _code_counts(cat[:, j], cref, f"categorical column {cref.name!r}")
        m = int(counts_c.sum())
        if enough and m >= params.min_samples and cref.usable:
            stat, pv = chi2_test(cref.shares, counts_c)
            features.append(
                FeatureDrift(
                    name=cref.name, kind="categorical", samples=m,
                    psi=psi(cref.shares, counts_c), ks_statistic=None, ks_pvalue=None,
                    chi2_statistic=stat, chi2_pvalue=pv,
                    missing_rate=rate(n - m, n), baseline_missing_rate=cref.missing_rate,
                    p_adjusted=None, drifted=False, sufficient=True,
                )
            )
            raw_p.append(pv)
        else:
            features.append(_insufficient(cref.name, "categorical", m, n, cref.missing_rate))
            raw_p.append(math.nan)

    # the embedding test is one more test of the model's check: its p-value joins the
    # features' in the correction, so the check's false-alarm rate covers it too
    mmd: MmdResult | None = None
    emb_ref = baseline.embedding
    emb_rows = window.embeddings
    if emb_ref is not None and emb_rows is not None:
        if emb_rows.shape[0] >= max(params.min_samples, 4):
            mmd = cross_mmd_test(emb_ref, emb_rows)
        raw_p.append(mmd.pvalue if mmd is not None else math.nan)
    adjusted = adjust_pvalues(np.array(raw_p, dtype=np.float64), params.correction)
    embedding: EmbeddingDrift | None = None
    if emb_ref is not None and emb_rows is not None:
        embedding = _embedding_drift(emb_ref, emb_rows.shape[0], mmd, float(adjusted[-1]), params)
        adjusted = adjusted[:-1]
    final: list[FeatureDrift] = []
    for f, pa_ in zip(features, adjusted, strict=True):
        if not f.sufficient:
            final.append(f)
            continue
        by = _alarms(float(pa_), f.psi, params)
        final.append(
            replace(f, p_adjusted=finite_or_none(float(pa_)), drifted=bool(by), detected_by=by)
        )

    prediction = None
    if baseline.prediction is not None and window.predictions is not None:
        prediction = _prediction_drift(baseline.prediction, window.predictions, n, enough, params)

    return ModelDriftResult(
        model=baseline.model,
        checked_at=checked_at,
        duration_s=time.perf_counter() - started,
        samples=n,
        sufficient=enough or bool(embedding and embedding.sufficient),
        features=tuple(final),
        prediction=prediction,
        params=params,
        embedding=embedding,
    )


def _embedding_drift(
    ref: EmbeddingReference,
    samples: int,
    mmd: MmdResult | None,
    p_adjusted: float,
    params: DriftParams,
) -> EmbeddingDrift:
    drifted = mmd is not None and math.isfinite(p_adjusted) and p_adjusted < params.p_value
    return EmbeddingDrift(
        dim=ref.dim, samples=samples, sufficient=mmd is not None,
        statistic=None if mmd is None else mmd.statistic,
        pvalue=None if mmd is None else mmd.pvalue,
        p_adjusted=None if mmd is None else finite_or_none(p_adjusted),
        mmd2=None if mmd is None else mmd.mmd2,
        centroid_distance=None if mmd is None else mmd.centroid_distance,
        drifted=drifted, device=ref.backend.device, n_features=ref.fmap.n_features,
        bandwidth=ref.fmap.bandwidth, reference_rows=ref.rows,
    )


def _alarms(p_adjusted: float, psi_value: float | None, params: DriftParams) -> tuple[str, ...]:
    by: list[str] = []
    if math.isfinite(p_adjusted) and p_adjusted < params.p_value:
        by.append("pvalue")
    if psi_value is not None and math.isfinite(psi_value) and psi_value > params.psi_threshold:
        by.append("psi")
    return tuple(by)


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


def _insufficient(name: str, kind: str, m: int, n: int, base_missing: float) -> FeatureDrift:
    return FeatureDrift(
        name=name, kind=kind, samples=m, psi=None, ks_statistic=None, ks_pvalue=None,
        chi2_statistic=None, chi2_pvalue=None, missing_rate=rate(n - m, n),
        baseline_missing_rate=base_missing, p_adjusted=None, drifted=False, sufficient=False,
    )


def _code_counts(codes: np.ndarray, ref: CategoricalReference, what: str) -> np.ndarray:
    c = np.asarray(codes)
    bins = len(ref.categories) + 1
    c = c[c >= 0]
    if c.size and int(c.max()) >= bins:
        raise ValueError(f"{what}: code {int(c.max())} beyond the {bins} bins of its baseline")
    return np.bincount(c, minlength=bins)


def _prediction_drift(
    ref: NumericReference | CategoricalReference,
    predictions: np.ndarray,
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
                kind="numeric", samples=m, ks_statistic=None, ks_pvalue=None,
                mean_shift_ratio=None, psi=None, chi2_statistic=None, chi2_pvalue=None,
                drifted=False, sufficient=False, missing_rate=missing,
            )
        d = ks_statistic_sorted(ref.sorted_values, v)
        p = float(ks_pvalue(d, ref.count, m))
        shift = None
        if ref.mean != 0 and math.isfinite(ref.mean):
            shift = (float(v.mean()) - ref.mean) / abs(ref.mean)
        psi_v = psi(ref.shares, ref.sorted_bin_counts(v))
        by = _alarms(p, psi_v, params)
        return PredictionDrift(
            kind="numeric", samples=m, ks_statistic=d, ks_pvalue=p, mean_shift_ratio=shift,
            psi=psi_v, chi2_statistic=None, chi2_pvalue=None, drifted=bool(by),
            sufficient=True, missing_rate=missing, detected_by=by,
        )
    codes = np.asarray(predictions)
    counts = _code_counts(codes, ref, "predictions")
    m = int(counts.sum())
    missing = rate(codes.shape[0] - m, codes.shape[0])
    if not (enough and m >= params.min_samples and ref.usable):
        return PredictionDrift(
            kind="categorical", samples=m, ks_statistic=None, ks_pvalue=None,
            mean_shift_ratio=None, psi=None, chi2_statistic=None, chi2_pvalue=None,
            drifted=False, sufficient=False, missing_rate=missing,
        )
    stat, pv = chi2_test(ref.shares, counts)
    psi_v = psi(ref.shares, counts)
    by = _alarms(pv, psi_v, params)
    return PredictionDrift(
        kind="categorical", samples=m, ks_statistic=None, ks_pvalue=None,
        mean_shift_ratio=None, psi=psi_v, chi2_statistic=stat, chi2_pvalue=pv,
        drifted=bool(by), sufficient=True, missing_rate=missing, detected_by=by,
    )

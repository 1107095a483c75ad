"""Drift statistics: PSI, two-sample KS, chi-square, and one model's drift check.

Plain functions over numpy arrays; no asyncio, no I/O. See docs/statistics.md for the
definitions, the KS p-value method and the rule that sets `drifted`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sidecar.baseline import Baseline, CategoricalReference, NumericReference

SHARE_FLOOR = 1e-4
"""Empty-bin shares are clamped to this, so PSI and chi-square stay finite."""

CORRECTIONS = ("bonferroni", "bh", "none")

# window values copied and sorted together: small enough for the CPU cache
_CHUNK_ELEMENTS = 1 << 16
# live values visited first by the KS statistic; see ks_statistic_sorted
_KS_STRIDE = 8


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

    @property
    def drifted(self) -> bool:
        """Whether any feature or the prediction drifted."""
        return any(f.drifted for f in self.features) or bool(
            self.prediction and self.prediction.drifted
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
                "psi": _j(f.psi),
                "psi_threshold": p.psi_threshold,
            }
            if f.kind == "numeric":
                entry["ks_statistic"] = _j(f.ks_statistic)
                entry["ks_pvalue"] = _j(f.ks_pvalue)
            else:
                entry["chi2_statistic"] = _j(f.chi2_statistic)
                entry["chi2_pvalue"] = _j(f.chi2_pvalue)
            entry["p_adjusted"] = _j(f.p_adjusted)
            entry["p_value_threshold"] = p.p_value
            entry["missing_rate"] = _j(f.missing_rate)
            entry["baseline_missing_rate"] = _j(f.baseline_missing_rate)
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
                "psi": _j(q.psi),
                "psi_threshold": p.psi_threshold,
            }
            if q.kind == "numeric":
                pred["ks_statistic"] = _j(q.ks_statistic)
                pred["ks_pvalue"] = _j(q.ks_pvalue)
                pred["mean_shift_ratio"] = _j(q.mean_shift_ratio)
            else:
                pred["chi2_statistic"] = _j(q.chi2_statistic)
                pred["chi2_pvalue"] = _j(q.chi2_pvalue)
            pred["p_value_threshold"] = p.p_value
            pred["missing_rate"] = _j(q.missing_rate)
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
        }


def _j(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- PSI


def psi(ref_shares: np.ndarray, cur_counts: np.ndarray) -> float:
    """Population stability index of live bin counts against reference bin shares.

    Both share vectors are clamped to [1e-4, 1]; PSI = sum((cur - ref) * ln(cur / ref)).
    NaN when there are no live values.
    """
    return float(psi_many(np.asarray(ref_shares)[None, :], np.asarray(cur_counts)[None, :])[0])


def psi_many(ref_shares: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """Row-wise PSI of (k, bins) matrices.

    Rows of different bin counts can share a matrix: a padding bin with zero reference
    share and zero count contributes exactly 0.
    """
    ref = np.clip(np.asarray(ref_shares, dtype=np.float64), SHARE_FLOOR, 1.0)
    counts = np.asarray(cur_counts, dtype=np.float64)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cur = np.clip(counts / total, SHARE_FLOOR, 1.0)
        out: np.ndarray = np.sum((cur - ref) * np.log(cur / ref), axis=1)
    out[total[:, 0] == 0] = np.nan
    return out


def numeric_bin_counts(ref: NumericReference, sorted_finite: np.ndarray) -> np.ndarray:
    """Live counts over the reference's bins, from sorted finite values."""
    cum = np.searchsorted(sorted_finite, ref.edges, side="right")
    return np.diff(np.concatenate(([0], cum, [sorted_finite.shape[0]])))


# --------------------------------------------------------------------------- KS


def ks_statistic(ref_sorted: np.ndarray, cur: np.ndarray) -> float:
    """Two-sample KS statistic, identical to `scipy.stats.ks_2samp`; non-finite `cur` dropped."""
    c = np.sort(np.asarray(cur, dtype=np.float64))
    c = _finite_sorted(c)
    ref = np.asarray(ref_sorted, dtype=np.float64)
    if c.shape[0] == 0 or ref.shape[0] == 0:
        return math.nan
    return ks_statistic_sorted(ref, c)


def ks_pvalue(d: Any, n: Any, m: Any) -> Any:
    """Two-sided KS p-value exactly as `scipy.stats.ks_2samp(method="asymp")` computes it.

    That is the one-sample Kolmogorov distribution at the effective sample size,
    `scipy.stats.kstwo.sf(d, round(n*m/(n+m)))`, clipped to [0, 1]. Arrays broadcast;
    NaN where `d` is NaN or a sample is empty.
    """
    d_arr = np.asarray(d, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    m_arr = np.asarray(m, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        en = np.round(n_arr * m_arr / (n_arr + m_arr))
    ok = np.isfinite(d_arr) & (en >= 1)
    d_b, en_b, ok_b = np.broadcast_arrays(d_arr, en, ok)
    out = np.full(d_b.shape, np.nan)
    if np.any(ok_b):
        from scipy import stats  # noqa: PLC0415 - 0.7 s to import; only checks need it

        out[ok_b] = np.clip(stats.kstwo.sf(d_b[ok_b], en_b[ok_b]), 0.0, 1.0)
    if out.ndim == 0:
        return float(out)
    return out


def ks_2samp_many(
    ref_sorted_list: Sequence[np.ndarray], cur_matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """KS statistics and p-values of each column of `cur_matrix` against its reference.

    `cur_matrix` is (n, k) with NaN (or ±inf) for missing; a column or reference without
    values gives NaN.
    """
    cur = np.asarray(cur_matrix, dtype=np.float64)
    k = cur.shape[1]
    if len(ref_sorted_list) != k:
        raise ValueError(f"{len(ref_sorted_list)} references for {k} columns")
    d = np.full(k, np.nan)
    counts = np.zeros(k, dtype=np.int64)
    n_ref = np.array([len(r) for r in ref_sorted_list], dtype=np.int64)
    for j, col in _sorted_columns(cur):
        counts[j] = col.shape[0]
        if col.shape[0] and n_ref[j]:
            d[j] = ks_statistic_sorted(np.asarray(ref_sorted_list[j], dtype=np.float64), col)
    p = np.asarray(ks_pvalue(d, n_ref, counts), dtype=np.float64)
    return d, p


def _finite_sorted(c: np.ndarray) -> np.ndarray:
    """The finite part of a sorted array (sorting puts -inf first, then +inf, then NaN)."""
    lo = int(np.searchsorted(c, -np.inf, side="right"))
    hi = int(np.searchsorted(c, np.inf, side="left"))
    return c[lo:hi]


def _sorted_columns(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each column of (n, k) `x` with its finite values sorted, a few columns at a time.

    Columns are copied in groups small enough to stay in cache, rather than transposing
    the whole window at once.
    """
    k = x.shape[1]
    step = max(1, _CHUNK_ELEMENTS // max(x.shape[0], 1))
    for start in range(0, k, step):
        block = np.array(x[:, start : start + step].T, dtype=np.float64, order="C")
        block.sort(axis=1)
        for i in range(block.shape[0]):
            yield start + i, _finite_sorted(block[i])


def ks_statistic_sorted(ref: np.ndarray, cur: np.ndarray, stride: int = _KS_STRIDE) -> float:
    """KS statistic of two sorted, finite, non-empty samples, bit-identical to scipy's.

    scipy evaluates F_ref - F_cur (each as count / size) at every point of both samples.
    Between two consecutive live values the live ECDF is constant and the reference ECDF
    rises, so the extremes are reached at a live value itself or at the last reference
    value just below it. Both are counts that searchsorted gives for the live values
    alone (#ref <= c and #cur <= c at c, #ref < c and #cur < c just below it); the same
    integers divided by the same sizes give the same floats.

    The live values are first visited every `stride`-th. Between two visited values the
    difference is bounded by their counts, so only the stretches whose bound could beat
    the extremes found so far are visited in full. Rounding is monotonic, so the bounds
    hold for the floats too and the result is exact.
    """
    m = cur.shape[0]
    cur_ties = m > 1 and bool(np.any(cur[1:] == cur[:-1]))
    if m <= 4 * stride:
        plus, minus, *_ = _ks_points(ref, cur, np.arange(m), cur_ties)
        return max(min(minus, 1.0), plus)
    coarse = np.arange(0, m, stride)
    if coarse[-1] != m - 1:
        coarse = np.append(coarse, m - 1)
    plus, minus, below, at, cur_below, cur_at = _ks_points(ref, cur, coarse, cur_ties)
    n = ref.shape[0]
    upper = below[1:] / n - cur_at[:-1] / m
    lower = at[:-1] / n - cur_below[1:] / m
    need = (upper > plus) | (lower < -minus)
    if need.any():
        starts = coarse[:-1][need] + 1
        lengths = coarse[1:][need] - starts
        keep = lengths > 0
        starts, lengths = starts[keep], lengths[keep]
        if starts.size:
            offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
            idx = np.arange(int(lengths.sum())) + offsets
            p2, m2, *_ = _ks_points(ref, cur, idx, cur_ties)
            plus, minus = max(plus, p2), max(minus, m2)
    # scipy: max(clip(-min, 0, 1), max)
    return max(min(minus, 1.0), plus)


def _ks_points(
    ref: np.ndarray, cur: np.ndarray, idx: np.ndarray, cur_ties: bool
) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Largest F_ref - F_cur and F_cur - F_ref at the live values `idx` and just below them.

    Also returns the counts: #ref < c, #ref <= c, #cur < c, #cur <= c.
    """
    n = ref.shape[0]
    m = cur.shape[0]
    c = cur[idx]
    below = np.searchsorted(ref, c, side="left")
    # #ref <= c differs only where c is itself a reference value
    tied = ref[np.minimum(below, n - 1)] == c
    at = below
    if tied.any():
        at = below.copy()
        at[tied] = np.searchsorted(ref, c[tied], side="right")
    if cur_ties:
        cur_below = np.searchsorted(cur, c, side="left")
        cur_at = np.searchsorted(cur, c, side="right")
    else:
        cur_below = idx
        cur_at = idx + 1
    ref_below = below / n
    ref_at = ref_below if at is below else at / n
    diff_at = ref_at - cur_at / m
    diff_below = ref_below - cur_below / m
    # 0 stands for the last point, where both ECDFs are 1 and scipy's difference is 0
    plus = max(float(diff_at.max()), float(diff_below.max()), 0.0)
    minus = -min(float(diff_at.min()), float(diff_below.min()), 0.0)
    return plus, minus, below, at, cur_below, cur_at


# --------------------------------------------------------------------------- chi-square


def chi2_test(ref_shares: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square goodness of fit of live counts to the reference shares.

    Expected counts are ref share * n. A bin the reference never saw (share 0) that live
    data hits gets the share 1e-4, and the expected shares are renormalized, so an unseen
    category makes the statistic large rather than infinite; bins empty in both are left
    out and do not count as degrees of freedom. NaN when there are no live values.
    """
    ref = np.asarray(ref_shares, dtype=np.float64)
    obs = np.asarray(cur_counts, dtype=np.float64)
    total = float(obs.sum())
    if total <= 0:
        return math.nan, math.nan
    keep = (ref > 0) | (obs > 0)
    share = np.where(ref > 0, ref, SHARE_FLOOR)[keep]
    expected = share / share.sum() * total
    o = obs[keep]
    dof = int(keep.sum()) - 1
    stat = float(np.sum((o - expected) ** 2 / expected))
    if dof < 1:
        # one bin: the live data cannot differ from the reference
        return 0.0, 1.0
    from scipy import special  # noqa: PLC0415 - see ks_pvalue

    return stat, float(special.chdtrc(dof, stat))


# --------------------------------------------------------------------------- correction


def adjust_pvalues(pvalues: np.ndarray | Sequence[float], method: str) -> np.ndarray:
    """Multiple-testing adjusted p-values; NaN entries are untested and stay NaN.

    "bonferroni": min(1, p * k); "bh": Benjamini-Hochberg step-up; "none": unchanged;
    k is the number of non-NaN p-values.
    """
    p = np.asarray(pvalues, dtype=np.float64).copy()
    tested = ~np.isnan(p)
    k = int(tested.sum())
    if method == "none" or k == 0:
        return p
    if method == "bonferroni":
        p[tested] = np.minimum(p[tested] * k, 1.0)
        return p
    if method == "bh":
        vals = p[tested]
        order = np.argsort(vals, kind="stable")
        ranked = vals[order] * k / np.arange(1, k + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        adjusted = np.empty(k)
        adjusted[order] = np.minimum(ranked, 1.0)
        p[tested] = adjusted
        return p
    raise ValueError(f"correction {method!r}: expected one of {CORRECTIONS}")


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
    for j, col in _sorted_columns(num) if k else ():
        ref = refs[j]
        m = col.shape[0]
        counts[j] = m
        if enough and m >= params.min_samples and ref.usable:
            go[j] = True
            d[j] = ks_statistic_sorted(ref.sorted_values, col)
            nb = ref.shares.shape[0]
            ref_shares[j, :nb] = ref.shares
            bin_counts[j, :nb] = numeric_bin_counts(ref, col)
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
                    missing_rate=_rate(n - m, n), baseline_missing_rate=ref.missing_rate,
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
                    missing_rate=_rate(n - m, n), baseline_missing_rate=cref.missing_rate,
                    p_adjusted=None, drifted=False, sufficient=True,
                )
            )
            raw_p.append(pv)
        else:
            features.append(_insufficient(cref.name, "categorical", m, n, cref.missing_rate))
            raw_p.append(math.nan)

    adjusted = adjust_pvalues(np.array(raw_p, dtype=np.float64), params.correction)
    final: list[FeatureDrift] = []
    for f, pa_ in zip(features, adjusted, strict=True):
        if not f.sufficient:
            final.append(f)
            continue
        by = _alarms(float(pa_), f.psi, params)
        final.append(
            replace(f, p_adjusted=_opt(float(pa_)), drifted=bool(by), detected_by=by)
        )

    prediction = None
    if baseline.prediction is not None and window.predictions is not None:
        prediction = _prediction_drift(baseline.prediction, window.predictions, n, enough, params)

    return ModelDriftResult(
        model=baseline.model,
        checked_at=checked_at,
        duration_s=time.perf_counter() - started,
        samples=n,
        sufficient=enough,
        features=tuple(final),
        prediction=prediction,
        params=params,
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


def _opt(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _rate(part: int, total: int) -> float:
    return part / total if total else math.nan


def _insufficient(name: str, kind: str, m: int, n: int, base_missing: float) -> FeatureDrift:
    return FeatureDrift(
        name=name, kind=kind, samples=m, psi=None, ks_statistic=None, ks_pvalue=None,
        chi2_statistic=None, chi2_pvalue=None, missing_rate=_rate(n - m, n),
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
        missing = _rate(total - m, total)
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
        psi_v = psi(ref.shares, numeric_bin_counts(ref, v))
        by = _alarms(p, psi_v, params)
        return PredictionDrift(
            kind="numeric", samples=m, ks_statistic=d, ks_pvalue=p, mean_shift_ratio=shift,
            psi=psi_v, chi2_statistic=None, chi2_pvalue=None, drifted=bool(by),
            sufficient=True, missing_rate=missing, detected_by=by,
        )
    codes = np.asarray(predictions)
    counts = _code_counts(codes, ref, "predictions")
    m = int(counts.sum())
    missing = _rate(codes.shape[0] - m, codes.shape[0])
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

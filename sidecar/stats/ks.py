"""The two-sample Kolmogorov-Smirnov test, equal to `scipy.stats.ks_2samp` (asymptotic p-value).

See docs/statistics.md for the p-value method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sidecar.stats.kolmogorov import kolmogorov_sf

# window values copied and sorted together: small enough for the CPU cache
_CHUNK_ELEMENTS = 1 << 16
# live values visited first by the KS statistic; see ks_statistic_sorted
_KS_STRIDE = 8


def ks_statistic(ref_sorted: np.ndarray, cur: np.ndarray) -> float:
    """Two-sample KS statistic, identical to `scipy.stats.ks_2samp`; non-finite `cur` dropped."""
    c = np.sort(np.asarray(cur, dtype=np.float64))
    c = finite_sorted(c)
    ref = np.asarray(ref_sorted, dtype=np.float64)
    if c.shape[0] == 0 or ref.shape[0] == 0:
        return math.nan
    return ks_statistic_sorted(ref, c)


def ks_pvalue(d: Any, n: Any, m: Any) -> Any:
    """Two-sided KS p-value as `scipy.stats.ks_2samp(method="asymp")` computes it.

    That is the one-sample Kolmogorov distribution at the effective sample size,
    `P(D_en > d)` with `en = round(n*m/(n+m))` (`scipy.stats.kstwo.sf`), computed by
    `sidecar.stats.kolmogorov` without importing scipy.stats (docs/statistics.md gives
    the methods and the tolerance the tests hold them to). Arrays broadcast; NaN where
    `d` is NaN or a sample is empty.
    """
    d_arr = np.asarray(d, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    m_arr = np.asarray(m, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        en = np.round(n_arr * m_arr / (n_arr + m_arr))
    ok = np.isfinite(d_arr) & (en >= 1)
    d_b, en_b, ok_b = np.broadcast_arrays(d_arr, en, ok)
    out = np.full(d_b.shape, np.nan)
    for idx in map(tuple, np.argwhere(ok_b)):
        out[idx] = kolmogorov_sf(int(en_b[idx]), float(d_b[idx]))
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
    for j, col in sorted_columns(cur):
        counts[j] = col.shape[0]
        if col.shape[0] and n_ref[j]:
            d[j] = ks_statistic_sorted(np.asarray(ref_sorted_list[j], dtype=np.float64), col)
    p = np.asarray(ks_pvalue(d, n_ref, counts), dtype=np.float64)
    return d, p


def finite_sorted(c: np.ndarray) -> np.ndarray:
    """The finite part of a sorted array (sorting puts -inf first, then +inf, then NaN)."""
    lo = int(np.searchsorted(c, -np.inf, side="right"))
    hi = int(np.searchsorted(c, np.inf, side="left"))
    return c[lo:hi]


def sorted_columns(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
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
            yield start + i, finite_sorted(block[i])


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

"""The bin rule: bin i of inner edges `e` holds `(e[i-1], e[i]]`.

The first bin is open below and the last open above, so no finite value is dropped. The
same rule serves in-process PSI, the daemon's per-bin counters (from which PromQL
computes fleet PSI) and the baseline's shares; it also matches Prometheus's `le`
buckets. `bin_index` states it for single values; `sorted_bin_counts` counts a sorted
column by the same rule with a search of the few edges in the values, and is tested equal
to `bincount(bin_index(...))`.
"""

from __future__ import annotations

import numpy as np

OTHER = "__other__"
"""Pooled bin of the categories a reference or a capped vocabulary does not keep."""


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value under inner `edges` (strictly increasing)."""
    return np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="left")


def sorted_bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Count per bin (len(edges) + 1 of them) of ascending finite values.

    Equal to `np.bincount(bin_index(edges, v), minlength=len(edges) + 1)`.
    """
    n = sorted_values.shape[0]
    at = np.searchsorted(sorted_values, edges, side="right")
    out = np.empty(at.size + 1, dtype=np.int64)  # np.diff's prepend/append cost more here
    if at.size:
        out[0] = at[0]
        np.subtract(at[1:], at[:-1], out=out[1:-1])
        out[-1] = n - at[-1]
    else:
        out[0] = n
    return out


def quantile_edges(sorted_values: np.ndarray, psi_bins: int) -> np.ndarray:
    """Inner PSI bin edges: the reference's 1/B … (B-1)/B quantiles, de-duplicated.

    The quantiles are actual reference values (inverted CDF), so a bin boundary never
    falls between the points of discrete data.
    """
    if sorted_values.shape[0] == 0 or psi_bins < 2:
        return np.empty(0, dtype=np.float64)
    n = sorted_values.shape[0]
    # inverted CDF: the smallest value whose empirical CDF reaches i/B, i.e. index
    # ceil(i*n/B) - 1, in integers so no rounding moves an edge by one value
    i = np.arange(1, psi_bins, dtype=np.int64)
    idx = (i * n + psi_bins - 1) // psi_bins - 1
    return np.unique(sorted_values[idx]).astype(np.float64)


def shares(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ascending finite values in each bin; all in the first bin when there are none.

    The empty case keeps the shares a distribution (summing to 1), as PSI needs.
    """
    n = sorted_values.shape[0]
    if n == 0:
        out = np.zeros(edges.shape[0] + 1)
        out[0] = 1.0
        return out
    result: np.ndarray = sorted_bin_counts(sorted_values, edges) / n
    return result

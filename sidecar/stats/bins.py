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


class SortedBinner:
    """Counts the rows of a sorted matrix into several sets of bins at once.

    `edge_sets[s][j]` are the inner edges of bin set `s` for row `j` (a model's value
    histogram buckets and its baseline's PSI edges, say). Each row is searched once, for
    the union of its edges; every set's counts are then differences of those positions,
    taken for all rows together. Counts are those of `sorted_bin_counts`, row by row.
    """

    def __init__(self, edge_sets: list[list[np.ndarray]]) -> None:
        rows = len(edge_sets[0]) if edge_sets else 0
        self.unions: list[np.ndarray] = []
        starts: list[int] = []
        at = 0
        for j in range(rows):
            union = np.unique(np.concatenate([np.asarray(es[j], np.float64) for es in edge_sets]))
            self.unions.append(union)
            starts.append(at)
            at += union.size + 2  # 0, the position of each union edge, then the row's count
        self._size = at
        self._first = np.array(starts, dtype=np.intp)
        self._last = np.array(
            [s + u.size + 1 for s, u in zip(starts, self.unions, strict=True)], dtype=np.intp
        )
        self._slices = [
            slice(s + 1, s + 1 + u.size) for s, u in zip(starts, self.unions, strict=True)
        ]
        self._lo: list[np.ndarray] = []
        self._hi: list[np.ndarray] = []
        self.sizes: list[list[int]] = []
        """Bins per row, per set."""
        for es in edge_sets:
            lo: list[int] = []
            hi: list[int] = []
            for j in range(rows):
                e = np.asarray(es[j], np.float64)
                cut = (starts[j] + 1 + np.searchsorted(self.unions[j], e)).tolist()
                bounds = [starts[j], *cut, starts[j] + self.unions[j].size + 1]
                lo.extend(bounds[:-1])
                hi.extend(bounds[1:])
            self._lo.append(np.array(lo, dtype=np.intp))
            self._hi.append(np.array(hi, dtype=np.intp))
            self.sizes.append([len(es[j]) + 1 for j in range(rows)])

    def count(self, ordered: np.ndarray, n_finite: np.ndarray | None) -> list[np.ndarray]:
        """Per set, the counts of every row's bins, concatenated row after row. Row j of
        `ordered` is ascending with its first `n_finite[j]` values finite (all of them
        when `n_finite` is None)."""
        pos = np.empty(self._size, dtype=np.int64)
        pos[self._first] = 0
        if n_finite is None:
            pos[self._last] = ordered.shape[1]
            for row, cut, union in zip(ordered, self._slices, self.unions, strict=True):
                pos[cut] = row.searchsorted(union, side="right")
        else:
            pos[self._last] = n_finite
            for row, k, cut, union in zip(
                ordered, n_finite.tolist(), self._slices, self.unions, strict=True
            ):
                pos[cut] = row[:k].searchsorted(union, side="right")
        return [pos[hi] - pos[lo] for lo, hi in zip(self._lo, self._hi, strict=True)]

"""A model's counters of numeric values: each feature's value histogram (fixed buckets)
and, once there is a baseline, its count in each of the baseline's bins.

Both are counted from a batch's columns sorted once (`sorted_transpose`): each column is
then searched once, for the union of its edges (`stats.bins.SortedBinner`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sidecar.stats.bins import SortedBinner
from sidecar.stats.reference import NumericReference


class NumericCounts:
    """Value histograms and per-bin counters, each a list of per-feature views of one
    array (so that a batch adds to all features at once)."""

    def __init__(self, buckets: list[np.ndarray]) -> None:
        self.buckets = buckets
        self._hist = np.zeros(sum(len(b) + 1 for b in buckets), dtype=np.int64)
        self.histograms = _views(self._hist, [len(b) + 1 for b in buckets])
        """Per numeric feature, its value histogram's counts."""
        self._bins = np.zeros(0, dtype=np.int64)
        self.bins: list[np.ndarray] = []
        """Per numeric feature, its count in each baseline bin."""
        self._refs: object = ()
        self._binner = SortedBinner([buckets])

    def set_bins(self, counts: list[np.ndarray]) -> None:
        """Start the per-bin counters from these counts (zeros for a new baseline)."""
        self._bins = np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, np.int64)
        self.bins = _views(self._bins, [len(c) for c in counts])

    def count(
        self,
        ordered: np.ndarray,
        n_finite: np.ndarray,
        refs: Sequence[NumericReference] | None,
        *,
        histograms: bool,
    ) -> None:
        """Rows of a batch, as `sorted_transpose` gives them with each column's count of
        finite values (NaN sorts last), into the value histograms (if `histograms`) and,
        when `refs` (the baseline's numeric references) are given, into the per-bin
        counters."""
        if not refs and not histograms:
            return
        counts = self._binner_for(refs or ()).count(ordered, _finite_or_all(ordered, n_finite))
        if histograms:
            self._hist += counts[0]
        if refs:
            self._bins += counts[1]

    def _binner_for(self, refs: Sequence[NumericReference]) -> SortedBinner:
        """The buckets and, with references, their edges as one SortedBinner (made again
        only when the references change: a new baseline)."""
        if refs is not self._refs:
            sets = [self.buckets]
            if refs:
                sets.append([r.edges for r in refs])
            self._binner = SortedBinner(sets)
            self._refs = refs
        return self._binner


def sorted_transpose(num: np.ndarray) -> np.ndarray:
    """Each column of an (n, k) matrix sorted, as the rows of a new (k, n) one (NaN last).
    The columns are copied into contiguous rows first: numpy sorts a strided row (a
    column of a row-major matrix) several times more slowly."""
    out = np.array(num.T, order="C")
    out.sort(axis=1)
    return out


def _views(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """`flat` cut into consecutive views of the given sizes."""
    out = []
    at = 0
    for k in sizes:
        out.append(flat[at : at + k])
        at += k
    return out


def _finite_or_all(ordered: np.ndarray, n_finite: np.ndarray) -> np.ndarray | None:
    """`n_finite`, or None when every value is finite (the common case: no slicing)."""
    if n_finite.size and int(n_finite.min()) == ordered.shape[1]:
        return None
    return n_finite

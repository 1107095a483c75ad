"""A drift check's bins: per column, the reference's and the window's share of each bin.

The bins are those of the per-bin counters on /metrics (`ml_feature_bin_*`,
`ml_prediction_bin_*`): numeric bin i holds `(edges[i-1], edges[i]]` (sidecar.stats.bins),
the first open below and the last open above; categorical bins are the reference's kept
categories, then `__other__`, which pools every other value (the reference's tail and live
categories it never saw), so each side's shares sum to 1. The window side counts the
check's window, the very values its statistics saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.stats.bins import OTHER
from sidecar.stats.reference import CategoricalReference, NumericReference


@dataclass(frozen=True, eq=False)
class ColumnBins:
    """One column's bins in a drift check."""

    labels: tuple[str, ...]
    """The `bin` label of each bin on /metrics: "0", "1", ... or the category."""
    edges: np.ndarray | None
    """Numeric: the inner edges (len(labels) - 1 of them); None for categorical."""
    reference: np.ndarray
    """Reference share of each bin (the baseline's; sums to 1)."""
    window: np.ndarray
    """int64 count of the window's non-missing values in each bin."""

    @property
    def window_shares(self) -> np.ndarray | None:
        """Window share of each bin; None when the window holds no value of the column."""
        total = int(self.window.sum())
        return None if total == 0 else self.window / total

    def to_json(self) -> list[dict[str, Any]]:
        """The `bins` of a column in `GET /v1/drift`: one object per bin, in bin order."""
        shares = self.window_shares
        out: list[dict[str, Any]] = []
        for i, label in enumerate(self.labels):
            entry: dict[str, Any] = {"bin": label}
            if self.edges is not None:
                # JSON has no infinity: an open end is null
                entry["lower"] = float(self.edges[i - 1]) if i > 0 else None
                entry["upper"] = float(self.edges[i]) if i < self.edges.shape[0] else None
            entry["reference_share"] = float(self.reference[i])
            entry["window_share"] = None if shares is None else float(shares[i])
            entry["window_count"] = int(self.window[i])
            out.append(entry)
        return out


def numeric_bins(ref: NumericReference, counts: np.ndarray) -> ColumnBins:
    """Bins of a numeric column from the window's count per reference bin."""
    labels = tuple(str(i) for i in range(ref.shares.shape[0]))
    return ColumnBins(labels, ref.edges, ref.shares, np.asarray(counts, dtype=np.int64))


def categorical_bins(ref: CategoricalReference, counts: np.ndarray) -> ColumnBins:
    """Bins of a categorical column from the window's counts per test code (kept
    categories, `__other__`, then the codes past it, which fold into `__other__`)."""
    kept = len(ref.categories)
    c = np.asarray(counts, dtype=np.int64)
    folded = np.zeros(kept + 1, dtype=np.int64)
    head = c[: kept + 1]
    folded[: head.shape[0]] = head
    folded[kept] += int(c[kept + 1 :].sum())
    return ColumnBins((*ref.categories, OTHER), None, ref.shares, folded)


def prediction_bins(
    ref: NumericReference | CategoricalReference, predictions: np.ndarray
) -> ColumnBins:
    """Bins of the window's predictions: floats (NaN missing) or test codes (-1 missing)."""
    if isinstance(ref, NumericReference):
        return numeric_bins(ref, ref.bin_counts(predictions))
    codes = np.asarray(predictions)
    codes = codes[codes >= 0]
    return categorical_bins(ref, np.bincount(codes, minlength=len(ref.categories) + 1))

"""Multiple-testing corrections of a check's p-values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CORRECTIONS = ("bonferroni", "bh", "none")


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

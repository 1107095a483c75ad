"""Population stability index of live bin counts against reference bin shares."""

from __future__ import annotations

import numpy as np

SHARE_FLOOR = 1e-4
"""Empty-bin shares are clamped to this, so PSI and chi-square stay finite."""


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

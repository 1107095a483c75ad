"""Probability calibration by isotonic regression (pool adjacent violators), one-vs-rest.

A model's probabilities are calibrated when, among predictions that give a class
probability p, that class is the truth a share p of the time. Confidence-based performance
estimation (CBPE) needs it: the expected confusion matrix sums the probabilities as if
they were those shares. A map learned on a labeled baseline (the model's outputs and the
truth on held-out data) corrects a model that is over- or under-confident.

Fitting follows scikit-learn's `IsotonicRegression(out_of_bounds="clip")`: the fitted
value at each distinct x is the weighted mean of its y, then adjacent violators are pooled
until the values increase; between fitted points the map interpolates linearly, outside
them it is clamped to the end values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `y` in weighted least squares."""
    n = y.size
    # blocks as a stack: each holds its weighted mean, weight and length
    means = np.empty(n)
    weights = np.empty(n)
    lengths = np.empty(n, dtype=np.int64)
    top = -1
    for i in range(n):
        top += 1
        means[top], weights[top], lengths[top] = y[i], w[i], 1
        while top > 0 and means[top - 1] >= means[top]:
            wsum = weights[top - 1] + weights[top]
            means[top - 1] = (means[top - 1] * weights[top - 1] + means[top] * weights[top]) / wsum
            weights[top - 1] = wsum
            lengths[top - 1] += lengths[top]
            top -= 1
    return np.repeat(means[: top + 1], lengths[: top + 1])


@dataclass(frozen=True)
class IsotonicMap:
    """A fitted non-decreasing map: knots `x` (increasing) and their values `y`."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> IsotonicMap:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if x.size == 0:
            return cls(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        ux, inv = np.unique(x, return_inverse=True)
        w = np.bincount(inv).astype(np.float64)
        ym = np.bincount(inv, weights=y) / w
        fitted = pava(ym, w)
        # keep only the knots where the value changes (and each run's ends): interpolating
        # between them gives the same map with fewer points
        keep = np.ones(ux.size, dtype=bool)
        if ux.size > 2:
            same_prev = fitted[1:-1] == fitted[:-2]
            same_next = fitted[1:-1] == fitted[2:]
            keep[1:-1] = ~(same_prev & same_next)
        return cls(ux[keep], fitted[keep])

    def __call__(self, p: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.interp(p, self.x, self.y)
        return out


@dataclass(frozen=True)
class Calibration:
    """One isotonic map per class (class index order of the `probabilities` lists)."""

    maps: tuple[IsotonicMap, ...]

    @property
    def classes(self) -> int:
        return len(self.maps)

    @classmethod
    def fit(cls, probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
        """`probabilities`: (n, k); `labels`: (n,) class indices (others count as none)."""
        k = probabilities.shape[1]
        return cls(tuple(IsotonicMap.fit(probabilities[:, j], labels == j) for j in range(k)))

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated (n, k) probabilities, each row renormalized to sum 1 (rows whose
        calibrated values are all 0 keep their input)."""
        out = np.empty_like(probabilities, dtype=np.float64)
        for j, m in enumerate(self.maps):
            out[:, j] = m(probabilities[:, j])
        total = out.sum(axis=1, keepdims=True)
        ok = total[:, 0] > 0
        out[ok] /= total[ok]
        out[~ok] = probabilities[~ok]
        return out


def normalized(probabilities: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (rows summing to 0 are left as they are)."""
    total = probabilities.sum(axis=1, keepdims=True)
    out: np.ndarray = np.divide(probabilities, total, out=probabilities.copy(), where=total > 0)
    return out


@dataclass(frozen=True)
class BaselinePerformance:
    """What a labeled baseline says about the model: its accuracy and a calibration."""

    rows: int
    """Baseline rows with a label and a prediction (or probabilities)."""
    accuracy: float | None
    """Share of rows whose predicted class (the prediction, else the argmax) is the label."""
    calibration: Calibration | None
    """None without a `probabilities` column (or with fewer than 2 classes)."""

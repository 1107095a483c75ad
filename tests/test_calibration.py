"""Isotonic calibration against independent implementations (scipy's, and a slow one)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import isotonic_regression

from sidecar.stats.calibration import Calibration, IsotonicMap, pava


def slow_isotonic(y: list[float], w: list[float]) -> list[float]:
    """The textbook algorithm, written for clarity: merge the first adjacent pair of blocks
    that violates the order, start over, until none does."""
    blocks = [[yi * wi, wi, 1] for yi, wi in zip(y, w, strict=True)]
    changed = True
    while changed:
        changed = False
        for i in range(len(blocks) - 1):
            a, b = blocks[i], blocks[i + 1]
            if a[0] / a[1] >= b[0] / b[1]:
                blocks[i : i + 2] = [[a[0] + b[0], a[1] + b[1], a[2] + b[2]]]
                changed = True
                break
    out: list[float] = []
    for s, wt, n in blocks:
        out.extend([s / wt] * n)
    return out


finite = st.floats(-100, 100, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(finite, st.floats(0.1, 10)), min_size=1, max_size=60))
def test_pava_matches_scipy_and_the_textbook(rows: list[tuple[float, float]]) -> None:
    y = np.array([r[0] for r in rows])
    w = np.array([r[1] for r in rows])
    ours = pava(y, w)
    np.testing.assert_allclose(ours, isotonic_regression(y, weights=w).x, atol=1e-9)
    np.testing.assert_allclose(ours, slow_isotonic(y.tolist(), w.tolist()), atol=1e-9)
    assert (np.diff(ours) >= -1e-12).all()


def reference_map(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """scikit-learn's IsotonicRegression(out_of_bounds="clip") restated: means of y per
    distinct x, isotonic over them (scipy), linear between, clamped outside."""
    ux, inv = np.unique(x, return_inverse=True)
    w = np.bincount(inv).astype(float)
    means = np.bincount(inv, weights=y) / w
    fitted = isotonic_regression(means, weights=w).x
    return np.interp(at, ux, fitted)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=200),
    st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=1, max_size=20),
)
def test_map_matches_the_reference(rows: list[tuple[int, bool]], at: list[float]) -> None:
    x = np.array([r[0] / 20 for r in rows])
    y = np.array([float(r[1]) for r in rows])
    m = IsotonicMap.fit(x, y)
    np.testing.assert_allclose(m(np.array(at)), reference_map(x, y, np.array(at)), atol=1e-12)


def test_calibration_fixes_a_sharpened_model() -> None:
    rng = np.random.default_rng(1)
    n, k = 20_000, 3
    logits = rng.normal(size=(n, k)) * 1.5
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in true_p])
    sharp = np.exp(logits / 0.5) / np.exp(logits / 0.5).sum(axis=1, keepdims=True)
    cal = Calibration.fit(sharp[:10_000], labels[:10_000])
    fixed = cal.apply(sharp[10_000:])
    np.testing.assert_allclose(fixed.sum(axis=1), 1.0)
    pred = sharp[10_000:].argmax(axis=1)
    realized = (pred == labels[10_000:]).mean()
    before = sharp[10_000:].max(axis=1).mean()
    after = fixed[np.arange(pred.size), pred].mean()
    assert abs(after - realized) < 0.02 < abs(before - realized)

"""Rolling windows: order, wrap-around, age eviction, restore."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.windows import RollingWindow


def _append(w: RollingWindow, start: int, n: int, t: float = 0.0) -> None:
    idx = np.arange(start, start + n, dtype=np.float64)
    w.append(
        idx[:, None] * [1.0, 2.0],
        (idx[:, None] % 3).astype(np.int32),
        idx,
        idx / 1e6,
        np.full(n, t),
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(0, 120), max_size=12))
def test_window_keeps_exactly_the_newest_rows_in_order(capacity, sizes):
    w = RollingWindow(capacity, 2, 1)
    total = 0
    for n in sizes:
        _append(w, total, n)
        total += n
    snap = w.snapshot()
    expected = np.arange(max(0, total - capacity), total, dtype=np.float64)
    np.testing.assert_array_equal(snap.predictions, expected)
    np.testing.assert_array_equal(snap.numeric[:, 1], expected * 2)
    np.testing.assert_array_equal(snap.categorical[:, 0], expected % 3)
    assert len(w) == snap.size == min(total, capacity)


def test_age_eviction_drops_only_older_rows():
    w = RollingWindow(100, 2, 1, max_age_s=10)
    _append(w, 0, 5, t=100.0)
    _append(w, 5, 5, t=105.0)
    _append(w, 10, 5, t=112.0)
    assert w.evict_older_than(now=114.0) == 5  # rows received at 100 are older than 104
    np.testing.assert_array_equal(w.snapshot().predictions, np.arange(5, 15))
    assert w.evict_older_than(now=200.0) == 10
    assert len(w) == 0


def test_restore_round_trip():
    w = RollingWindow(8, 2, 1)
    _append(w, 0, 13)
    w2 = RollingWindow(8, 2, 1)
    w2.restore(w.snapshot())
    np.testing.assert_array_equal(w2.snapshot().predictions, w.snapshot().predictions)
    _append(w2, 13, 3)
    np.testing.assert_array_equal(w2.snapshot().predictions, np.arange(8, 16))

"""The bin rule `(e[i-1], e[i]]`: counting a sorted column equals binning each value."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.stats.bins import (
    SortedBinner,
    bin_index,
    quantile_edges,
    shares,
    sorted_bin_counts,
)
from sidecar.stats.numbers import finite_or_none, rate

values = st.lists(
    st.one_of(
        st.integers(min_value=-5, max_value=5).map(float),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    ),
    max_size=200,
)
edges = st.lists(
    st.one_of(
        st.integers(min_value=-5, max_value=5).map(float),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    ),
    max_size=12,
).map(lambda e: np.unique(np.asarray(e, dtype=np.float64)))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 4).flatmap(
        lambda rows: st.tuples(
            st.lists(st.lists(edges, min_size=rows, max_size=rows), min_size=1, max_size=3),
            st.lists(values, min_size=rows, max_size=rows),
            st.lists(st.integers(0, 5), min_size=rows, max_size=rows),
        )
    ),
    st.booleans(),
)
def test_binner_counts_every_set_as_each_row_alone(
    case: tuple[list[list[np.ndarray]], list[list[float]], list[int]], with_nan: bool
) -> None:
    """Rows of differing lengths are padded with NaN (sorted last, cut by n_finite), as
    a batch with missing values is; each set's counts equal `sorted_bin_counts`."""
    sets, rows, pads = case
    padded = [len(r) + (p if with_nan else 0) for r, p in zip(rows, pads, strict=True)]
    width = max(padded, default=0)
    ordered = np.full((len(rows), width), np.nan)
    for j, r in enumerate(rows):
        ordered[j, : len(r)] = np.sort(np.asarray(r, dtype=np.float64))
    n_finite = np.array([len(r) for r in rows], dtype=np.int64)
    binner = SortedBinner(sets)
    got = binner.count(ordered, n_finite)
    assert len(got) == len(sets)
    for s, es in enumerate(sets):
        parts = [sorted_bin_counts(ordered[j, : n_finite[j]], es[j]) for j in range(len(rows))]
        expected = np.concatenate(parts).tolist() if parts else []
        assert got[s].tolist() == expected
        assert binner.sizes[s] == [len(e) + 1 for e in es]
    if rows and n_finite.min() == width:  # all finite: the no-slicing path agrees
        assert [c.tolist() for c in binner.count(ordered, None)] == [c.tolist() for c in got]


@settings(max_examples=300, deadline=None)
@given(values, edges)
def test_sorted_counts_equal_binning_each_value(v: list[float], e: np.ndarray) -> None:
    x = np.sort(np.asarray(v, dtype=np.float64))
    expected = np.bincount(bin_index(e, x), minlength=e.shape[0] + 1)
    got = sorted_bin_counts(x, e)
    assert got.dtype == np.int64
    assert got.tolist() == expected.tolist()
    # a value on an edge belongs to the bin that edge closes
    for i, edge in enumerate(e):
        assert int(bin_index(e, np.array([edge]))[0]) == i


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=300),
    st.integers(min_value=2, max_value=20),
)
def test_quantile_edges_and_shares(v: list[float], bins: int) -> None:
    x = np.sort(np.asarray(v, dtype=np.float64))
    e = quantile_edges(x, bins)
    assert np.all(np.diff(e) > 0) and set(e.tolist()) <= set(x.tolist())
    s = shares(x, e)
    assert s.shape == (e.shape[0] + 1,) and abs(float(s.sum()) - 1.0) < 1e-12


def test_empty_inputs() -> None:
    assert shares(np.empty(0), np.array([1.0, 2.0])).tolist() == [1.0, 0.0, 0.0]
    assert sorted_bin_counts(np.empty(0), np.array([1.0])).tolist() == [0, 0]
    assert np.isnan(rate(0, 0)) and rate(1, 4) == 0.25
    assert finite_or_none(float("nan")) is None and finite_or_none(np.float64(2.5)) == 2.5
    assert finite_or_none(float("inf")) is None and finite_or_none(None) is None

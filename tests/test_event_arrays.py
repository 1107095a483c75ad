"""The fast paths that turn a batch of events into arrays give exactly what the general,
value-by-value path gives, for every kind of value a feature can hold."""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.event_arrays import floats, numeric_general, numeric_matrix
from sidecar.events import MAX_ABS_VALUE, decode_lines

NAMES = ("a", "b", "c")

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, MAX_ABS_VALUE, 2.0**53 + 1]),
    st.none(),
    st.booleans(),
    # numeric strings parse; the others make their row a rejection
    st.sampled_from(["1.5", " 2 ", "1e400", "-inf", "nan", "1_000", "abc", "", "0x10"]),
    st.text(max_size=4),
)


@st.composite
def feature_dicts(draw: st.DrawFn, names: tuple[str, ...]) -> dict[str, Any] | None:
    if draw(st.integers(0, 20)) == 0:
        return None  # an event without features
    keys = [n for n in names if draw(st.integers(0, 10))]  # now and then one is absent
    keys += draw(st.lists(st.sampled_from(["x", "y", "zz"]), max_size=2, unique=True))
    keys = draw(st.permutations(keys))  # any order, unknown names among them
    return {k: draw(values) for k in keys}


def _same(got: tuple[np.ndarray, set[int], bool], feats: list[Any], names: tuple[str, ...]):
    matrix, bad, all_present = got
    want, want_bad = numeric_general(feats, names)
    assert matrix.shape == (len(feats), len(names))
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, want)  # NaN where NaN, bit for bit otherwise
    assert np.array_equal(np.signbit(matrix), np.signbit(want))  # -0.0 stays -0.0
    assert bad == want_bad
    if all_present:
        assert all(f is not None and all(n in f for n in names) for f in feats)
    matrix[:] = 0.0  # the caller writes into it (non-finite values become NaN)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3).flatmap(lambda k: st.lists(feature_dicts(NAMES[:k]), max_size=30)))
def test_numeric_matrix_equals_the_general_path(feats: list[Any]) -> None:
    for k in (1, 2, 3):
        names = NAMES[:k]
        _same(numeric_matrix(feats, names, itemgetter(*names)), feats, names)


@settings(max_examples=200, deadline=None)
@given(st.lists(feature_dicts(NAMES), min_size=1, max_size=30))
def test_numeric_matrix_of_decoded_events_equals_the_general_path(feats: list[Any]) -> None:
    """The same through the real decoder: what msgspec hands over (floats for numbers,
    None for null, NaN or Infinity tokens), not what Python would."""
    events = [{"model": "m", **({} if f is None else {"features": f})} for f in feats]
    decoded = decode_lines([json.dumps(events).encode()], 1000)
    got = [ev.features for ev in decoded.events]
    for k in (1, 3):
        names = NAMES[:k]
        _same(numeric_matrix(got, names, itemgetter(*names)), got, names)


def test_numeric_matrix_fast_path_edge_cases() -> None:
    """One batch per edge case the fast path falls back on, and the clean batch it takes."""
    names = ("a", "b")
    get = itemgetter(*names)
    cases: list[list[Any]] = [
        [{"a": 1.0, "b": 2.0}, {"b": 3.0, "a": 4.0}],  # clean, either key order
        [{"a": 1.0, "b": 2.0}, {"a": 4.0}],  # a missing feature
        [{"a": 1.0, "b": 2.0, "x": 9.0}],  # an extra feature
        [{"a": 1.0, "b": "2.5"}],  # a numeric string
        [{"a": 1.0, "b": "two"}, {"a": 3.0, "b": 4.0}],  # a non-numeric string
        [{"a": None, "b": 2.0}],  # None
        [{"a": float("nan"), "b": float("inf")}, {"a": -float("inf"), "b": 0.0}],
        [{"a": True, "b": False}],  # bool
        [{"a": 1e308, "b": -1e308}, {"a": "1e309", "b": 2.0}],  # huge numbers
        [None, {"a": 1.0, "b": 2.0}],  # an event without features
        [],
    ]
    for feats in cases:
        _same(numeric_matrix(feats, names, get), feats, names)
    m, bad, all_present = numeric_matrix(cases[0], names, get)
    assert all_present and not bad
    np.testing.assert_array_equal(m, [[1.0, 2.0], [4.0, 3.0]])
    m, bad, _ = numeric_matrix(cases[4], names, get)
    assert bad == {0} and np.isnan(m[0, 1]) and m[1, 1] == 4.0
    m, _, _ = numeric_matrix(cases[7], names, get)
    np.testing.assert_array_equal(m, [[1.0, 0.0]])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.none(),
            st.booleans(),
            st.integers(-(2**60), 2**60),
        ),
        max_size=40,
    )
)
def test_floats_equals_np_array(values: list[Any]) -> None:
    got = floats(values)
    want = np.array(values, dtype=np.float64)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    got[:] = 0.0  # writable, as np.array's is

"""Property tests: the KS statistic and p-value against scipy.stats.ks_2samp."""

from __future__ import annotations

import math

import numpy as np
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.stats.correction import adjust_pvalues
from sidecar.stats.ks import ks_2samp_many, ks_pvalue, ks_statistic, ks_statistic_sorted
from sidecar.stats.psi import psi

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
small_ints = st.integers(min_value=-3, max_value=3).map(float)


@st.composite
def samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two samples: continuous, discrete with heavy ties, or mixed and overlapping."""
    kind = draw(st.sampled_from(["continuous", "discrete", "mixed"]))
    elems = {"continuous": finite, "discrete": small_ints, "mixed": st.one_of(finite, small_ints)}
    e = elems[kind]
    a = draw(st.lists(e, min_size=1, max_size=120))
    b = draw(st.lists(e, min_size=2, max_size=120))  # n = m = 1 makes scipy divide by 0
    if draw(st.booleans()) and a:
        # share values between the samples: ties across them
        b = b + draw(st.lists(st.sampled_from(a), max_size=40))
    return np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)


@SETTINGS
@given(samples(), st.sampled_from([1, 2, 3, 8]))
def test_ks_statistic_equals_scipy(ab: tuple[np.ndarray, np.ndarray], stride: int) -> None:
    ref, cur = ab
    expected = scipy.stats.ks_2samp(ref, cur, method="asymp").statistic
    ref_sorted = np.sort(ref)
    assert abs(ks_statistic(ref_sorted, cur) - expected) <= 1e-12
    # the pruned search visits few points: small strides exercise it on small samples
    assert abs(ks_statistic_sorted(ref_sorted, np.sort(cur), stride) - expected) <= 1e-12


@SETTINGS
@given(samples())
def test_ks_pvalue_equals_scipy_asymp(ab: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = ab
    r = scipy.stats.ks_2samp(ref, cur, method="asymp")
    d = ks_statistic(np.sort(ref), cur)
    p = ks_pvalue(d, ref.size, cur.size)
    # 1e-10 where scipy (Pomeranz) and we (Durbin) use different exact methods: see
    # tests/test_stats_kolmogorov.py; elsewhere the same formula, equal to 1e-12
    assert math.isclose(p, r.pvalue, rel_tol=1e-10, abs_tol=1e-300)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=2000, max_value=6000),
    st.integers(min_value=500, max_value=3000),
    st.floats(min_value=-0.3, max_value=0.3),
    st.sampled_from([0, 1, 2]),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_ks_large_samples_equal_scipy(
    n: int, m: int, shift: float, decimals: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=n), decimals if decimals else 12)
    cur = np.round(rng.normal(loc=shift, size=m), decimals if decimals else 12)
    r = scipy.stats.ks_2samp(ref, cur, method="asymp")
    d = ks_statistic(np.sort(ref), cur)
    assert abs(d - r.statistic) <= 1e-12
    # 1e-10: in the upper tail scipy and we sum the exact one-sided distribution by
    # different methods (tests/test_stats_kolmogorov.py)
    assert math.isclose(ks_pvalue(d, n, m), r.pvalue, rel_tol=1e-10, abs_tol=1e-300)


@SETTINGS
@given(
    st.lists(samples(), min_size=1, max_size=5),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_ks_many_matches_loop_with_missing(
    pairs: list[tuple[np.ndarray, np.ndarray]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    rows = max(cur.size for _, cur in pairs) + 3
    matrix = np.full((rows, len(pairs)), np.nan)
    for j, (_, cur) in enumerate(pairs):
        col = np.concatenate([cur, [np.inf, -np.inf, np.nan]])
        col = np.concatenate([col, np.full(rows - col.size, np.nan)])
        matrix[:, j] = rng.permutation(col)
    stats_, pvals = ks_2samp_many([np.sort(ref) for ref, _ in pairs], matrix)
    for j, (ref, cur) in enumerate(pairs):
        r = scipy.stats.ks_2samp(ref, cur, method="asymp")
        assert abs(stats_[j] - r.statistic) <= 1e-12
        assert math.isclose(pvals[j], r.pvalue, rel_tol=1e-12, abs_tol=1e-300)


def naive_psi(ref_shares: list[float], counts: list[int]) -> float:
    """PSI written out term by term."""
    total = sum(counts)
    out = 0.0
    for share, c in zip(ref_shares, counts, strict=True):
        r = min(max(share, 1e-4), 1.0)
        cur = min(max(c / total, 1e-4), 1.0)
        out += (cur - r) * math.log(cur / r)
    return out


@SETTINGS
@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30).filter(
        lambda xs: sum(xs) > 0
    ),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30),
)
def test_psi_equals_term_by_term(ref_counts: list[int], cur_counts: list[int]) -> None:
    k = len(ref_counts)
    cur_counts = (cur_counts * k)[:k]
    if sum(cur_counts) == 0:
        cur_counts[0] = 1
    shares = [c / sum(ref_counts) for c in ref_counts]
    got = psi(np.array(shares), np.array(cur_counts))
    assert math.isclose(got, naive_psi(shares, cur_counts), rel_tol=1e-9, abs_tol=1e-12)
    assert got >= 0.0


@SETTINGS
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=50))
def test_bh_equals_scipy(ps: list[float]) -> None:
    got = adjust_pvalues(np.array(ps), "bh")
    expected = scipy.stats.false_discovery_control(np.array(ps), method="bh")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)

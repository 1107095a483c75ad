"""Two-sample tests of category counts: against scipy, and exact where the alarm needs it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.stats.twosample import (
    MIN_EXPECTED,
    category_drift,
    category_test,
    chi2_homogeneity,
    column_pvalues,
    homogeneity_table,
    pool_sparse_columns,
    psi_expected,
)

# Two count vectors of up to 12 categories; the window's may be longer (live categories
# the baseline never saw) and either may hold empty categories or be empty altogether.
counts = st.lists(st.integers(0, 400), min_size=0, max_size=12)
tables = st.tuples(counts, counts).map(
    lambda rc: (np.array(rc[0], np.int64), np.array(rc[1], np.int64))
)


@settings(max_examples=300, deadline=None)
@given(tables, st.sampled_from([1.0, MIN_EXPECTED, 20.0]))
def test_chi2_homogeneity_equals_scipy_on_the_pooled_table(
    rc: tuple[np.ndarray, np.ndarray], min_expected: float
) -> None:
    ref, cur = rc
    table = homogeneity_table(ref, cur)
    pooled = pool_sparse_columns(table, min_expected)
    got = chi2_homogeneity(pooled.table)
    rows = pooled.table.sum(axis=1)
    if pooled.columns < 2 or (rows == 0).any():
        assert (got.statistic, got.pvalue, got.dof) == (0.0, 1.0, 0)
        return
    want = scipy.stats.chi2_contingency(pooled.table, correction=False)
    assert got.statistic == pytest.approx(want.statistic, rel=1e-10, abs=1e-12)
    assert got.pvalue == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert got.dof == want.dof


@settings(max_examples=300, deadline=None)
@given(tables, st.sampled_from([1.0, MIN_EXPECTED, 20.0]))
def test_pooling_keeps_totals_and_leaves_no_sparse_column(
    rc: tuple[np.ndarray, np.ndarray], min_expected: float
) -> None:
    table = homogeneity_table(*rc)
    pooled = pool_sparse_columns(table, min_expected)
    np.testing.assert_array_equal(pooled.table.sum(axis=1), table.sum(axis=1))
    assert (pooled.table.sum(axis=0) > 0).all()
    # every original column with values went to exactly one pooled column, and its counts
    # are there
    col = table.sum(axis=0)
    assert ((pooled.groups >= 0) == (col > 0)).all()
    for g in range(pooled.columns):
        np.testing.assert_array_equal(table[:, pooled.groups == g].sum(axis=1), pooled.table[:, g])
    rows = table.sum(axis=1)
    if pooled.columns >= 2 and (rows > 0).all():
        expected_small_row = pooled.table.sum(axis=0) * rows.min() / rows.sum()
        assert (expected_small_row >= min_expected - 1e-9).all()


@settings(max_examples=200, deadline=None)
@given(tables, st.randoms(use_true_random=False))
def test_pooling_looks_at_column_totals_only(
    rc: tuple[np.ndarray, np.ndarray], rnd: object
) -> None:
    """Any table with the same margins pools the same way: given the column totals, the
    rule cannot depend on how a column splits between baseline and window, which is what
    keeps the tests valid after pooling."""
    table = homogeneity_table(*rc)
    rng = np.random.default_rng(abs(hash(rnd)) % (2**32))
    # another table with the same row and column totals: move one value between columns
    other = table.copy()
    cols = np.flatnonzero(other[0] > 0)
    dest = np.flatnonzero(other[1] > 0)
    if cols.size and dest.size:
        a, b = rng.choice(cols), rng.choice(dest)
        if a != b:
            other[0, a] -= 1
            other[1, a] += 1
            other[0, b] += 1
            other[1, b] -= 1
    np.testing.assert_array_equal(other.sum(axis=0), table.sum(axis=0))
    np.testing.assert_array_equal(
        pool_sparse_columns(other).groups, pool_sparse_columns(table).groups
    )


def test_unseen_categories_are_columns_not_a_share_floor() -> None:
    # a live category the baseline never saw: a column (0, 100), not a 1e-4 share
    ref = np.array([500, 500])
    cur = np.array([4950, 4950, 100])
    chi2, exact, pooled = category_drift(ref, cur)
    assert pooled.columns == 3
    want = scipy.stats.chi2_contingency([[500, 500, 0], [4950, 4950, 100]], correction=False)
    assert chi2.statistic == pytest.approx(want.statistic, rel=1e-12)
    assert chi2.dof == 2
    # 100 of 10,000 live values in it, none of 1,000 baseline values: P = 0.9^... not tiny
    assert 1e-6 < exact.pvalue < 0.1
    assert exact.column == 2
    # many rare unseen categories pool by their totals (with the rarest seen ones)
    cur_rare = np.array([4990, 4990, *([1] * 20)])
    chi2_r, exact_r, pooled_r = category_drift(np.array([500, 500]), cur_rare)
    assert pooled_r.columns == 2 and chi2_r.dof == 1
    assert exact_r.pvalue > 0.01


def test_empty_and_degenerate_tables() -> None:
    assert chi2_homogeneity(np.zeros((2, 0), np.int64)).dof == 0
    one = category_drift(np.array([10]), np.array([20]))
    assert one[0].pvalue == 1.0 and one[1].pvalue == 1.0 and one[1].column == -1
    nothing_live = category_drift(np.array([10, 5]), np.array([0, 0]))
    assert nothing_live[0].pvalue == 1.0 and nothing_live[1].pvalue == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        homogeneity_table(np.array([-1]), np.array([1]))
    with pytest.raises(ValueError, match="expected"):
        pool_sparse_columns(np.zeros((3, 2), np.int64))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 300)), min_size=2, max_size=6))
def test_column_pvalues_equal_doubled_fisher_exact(pairs: list[tuple[int, int]]) -> None:
    """Equal to the doubled smaller one-sided Fisher p-value below 1/2 (which is where a
    verdict could ever use it), and never smaller."""
    table = np.array(pairs, dtype=np.int64).T
    rows = table.sum(axis=1)
    got = column_pvalues(table)
    for j in range(table.shape[1]):
        if (rows == 0).any():
            assert got[j] == 1.0
            continue
        two = [[table[0, j], rows[0] - table[0, j]], [table[1, j], rows[1] - table[1, j]]]
        less = scipy.stats.fisher_exact(two, alternative="less").pvalue
        greater = scipy.stats.fisher_exact(two, alternative="greater").pvalue
        want = min(1.0, 2 * min(less, greater))
        if want < 0.5:
            assert got[j] == pytest.approx(want, rel=1e-9, abs=1e-300)
        else:
            assert got[j] >= want * (1 - 1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(200, 60_000), st.integers(100, 30_000), st.floats(0.001, 0.6), st.floats(-8, 8))
def test_column_pvalues_at_large_sizes_and_far_tails(
    n_ref: int, n_cur: int, share: float, z: float
) -> None:
    """Baselines and windows of the daemon's sizes, counts up to 8 standard errors out:
    the p-value equals scipy's hypergeometric tails (at least 1e-300)."""
    col = max(1, round(share * (n_ref + n_cur)))
    total = n_ref + n_cur
    mean = col * n_ref / total
    sd = np.sqrt(mean * (1 - col / total) * n_cur / max(total - 1, 1))
    lo, hi = max(0, col - n_cur), min(col, n_ref)
    x = int(np.clip(round(mean + z * sd), lo, hi))
    got = column_pvalues(np.array([[x, n_ref - x], [col - x, n_cur - col + x]]))[0]
    less = scipy.stats.hypergeom.cdf(x, total, col, n_ref)
    greater = scipy.stats.hypergeom.sf(x - 1, total, col, n_ref)
    want = min(1.0, 2 * min(less, greater))
    if want < 1e-300:
        assert got < 1e-290
    elif want < 0.5:
        assert got == pytest.approx(want, rel=1e-8)
    else:
        assert got >= want * (1 - 1e-9)


def test_category_test_factor_is_the_number_of_distinct_tests() -> None:
    two = np.array([[30, 70], [400, 600]])
    p2 = column_pvalues(two)
    assert p2[0] == pytest.approx(p2[1], rel=1e-12)  # the same 2 x 2 table twice
    assert category_test(two).pvalue == pytest.approx(p2[0], rel=1e-12)
    three = np.array([[30, 30, 40], [400, 300, 300]])
    p3 = column_pvalues(three)
    assert category_test(three).pvalue == pytest.approx(min(1.0, 3 * p3.min()), rel=1e-12)
    assert category_test(three).column == int(np.argmin(p3))


def _exact_size(n_ref: int, n_cur: int, col: int, level: float) -> tuple[float, float]:
    """P(p <= level) with no drift, exactly, for the exact test and for Pearson's."""
    total = n_ref + n_cur
    x = np.arange(max(0, col - n_cur), min(col, n_ref) + 1)
    pmf = scipy.stats.hypergeom.pmf(x, total, col, n_ref)
    exact = np.array(
        [category_test(np.array([[k, n_ref - k], [col - k, n_cur - col + k]])).pvalue for k in x]
    )
    pearson = np.array(
        [chi2_homogeneity(np.array([[k, n_ref - k], [col - k, n_cur - col + k]])).pvalue for k in x]
    )
    return float(pmf[exact <= level].sum()), float(pmf[pearson <= level].sum())


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "col"),
    [
        (1000, 10_000, 55),
        (1000, 10_000, 220),
        (1000, 100, 110),
        (50_000, 10_000, 300),
    ],
)
def test_exact_test_holds_its_level_where_pearson_does_not(
    n_ref: int, n_cur: int, col: int
) -> None:
    """At the levels a day of checks needs (about 1e-7 per test), the exact column test
    keeps P(p <= level) <= level for every margin, by construction; Pearson's asymptotic
    p-value on the same 2 x 2 tables (a class seen about 5 to 20 times in the baseline)
    does not, which is why the verdict does not use it."""
    worst_pearson = 0.0
    for level in (1e-3, 1e-5, 1.7e-7):
        exact, pearson = _exact_size(n_ref, n_cur, col, level)
        assert exact <= level * (1 + 1e-9)
        worst_pearson = max(worst_pearson, pearson / level)
    assert worst_pearson > 2


def test_psi_expected() -> None:
    assert psi_expected(10, 10_000, 50_000) == pytest.approx(9 * (1e-4 + 2e-5))
    assert np.isnan(psi_expected(10, 0, 50_000))
    # with no drift, the mean PSI over the reference's bins is about that
    rng = np.random.default_rng(3)
    shares = np.full(10, 0.1)
    ref = rng.multinomial(5000, shares, size=2000) / 5000
    cur = rng.multinomial(2000, shares, size=2000) / 2000
    psi = np.sum((cur - ref) * np.log(cur / ref), axis=1)
    assert psi.mean() == pytest.approx(psi_expected(10, 2000, 5000), rel=0.05)

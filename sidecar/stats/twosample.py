"""Two-sample tests of category counts: the baseline is a sample too.

A categorical feature (or a class prediction) is compared as a 2 x k table: the baseline's
count and the window's count of each category, including `__other__` and every live
category the baseline never saw, as columns. Both rows are samples, so the baseline's own
sampling error is part of the null distribution, not evidence of drift.

Columns too sparse for a test are pooled by a rule that looks only at the column totals
(`pool_sparse_columns`); under no drift, given those totals, the split of each column
between the two rows does not depend on the rule, so pooling keeps every test valid.

Two tests run on the pooled table:

- `chi2_homogeneity`: Pearson's chi-square test of homogeneity, equal to
  `scipy.stats.chi2_contingency(table, correction=False)`. Its p-value is the asymptotic
  one: fine at the usual levels, too small by factors of 2 to 150 at the levels near 1e-7
  that a day of checks needs (docs/statistics.md has the figures). Reported, not alarmed on.
- `category_test`: each category against the rest, tested exactly given the margins (the
  baseline's count in a column is hypergeometric under no drift; Fisher's conditional
  test, two-sided by doubling the smaller tail), Bonferroni over the columns. Its p-value
  is never smaller than the exact one at any level, which is what the alarm needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_EXPECTED = 5.0
"""Pool columns whose smaller expected count is below this (the textbook rule of thumb)."""


@dataclass(frozen=True)
class PooledTable:
    """A 2 x k table after pooling, and where each original column went."""

    table: np.ndarray
    """(2, k) int64: row 0 the baseline, row 1 the window; no column is empty."""
    groups: np.ndarray
    """Pooled column of each original column; -1 for a column empty in both rows."""

    @property
    def columns(self) -> int:
        return int(self.table.shape[1])


@dataclass(frozen=True)
class Chi2Result:
    statistic: float
    pvalue: float
    dof: int


@dataclass(frozen=True)
class CategoryTestResult:
    pvalue: float
    """Smallest column p-value times the number of distinct column tests, at most 1."""
    column: int
    """Original column whose pooled column has the smallest p-value; -1 when that column
    pools several original columns, or when nothing was tested."""
    column_pvalues: np.ndarray
    """Exact two-sided p-value of each pooled column against the rest."""


def homogeneity_table(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """The (2, k) table of two count vectors; the shorter one is padded with zeros.

    Live-only columns (categories the baseline never saw) are simply longer `cur_counts`.
    """
    ref = np.asarray(ref_counts, dtype=np.int64).ravel()
    cur = np.asarray(cur_counts, dtype=np.int64).ravel()
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("counts must be non-negative")
    k = max(ref.shape[0], cur.shape[0])
    table = np.zeros((2, k), dtype=np.int64)
    table[0, : ref.shape[0]] = ref
    table[1, : cur.shape[0]] = cur
    return table


def pool_sparse_columns(table: np.ndarray, min_expected: float = MIN_EXPECTED) -> PooledTable:
    """Drop empty columns; pool the sparse ones. The rule looks at column totals only.

    The expected count of a cell is row total * column total / grand total; a column is
    sparse when its expected count in the smaller row is below `min_expected`. All sparse
    columns become one pooled column (last); while that pooled column is itself sparse,
    the remaining column with the smallest total (the first of equals) joins it. With one
    empty row nothing is pooled (there is nothing to test).
    """
    t = np.asarray(table, dtype=np.int64)
    if t.ndim != 2 or t.shape[0] != 2:
        raise ValueError(f"table of shape {t.shape}: expected (2, k)")
    col = t.sum(axis=0)
    present = np.flatnonzero(col > 0)
    groups = np.full(t.shape[1], -1, dtype=np.int64)
    rows = t.sum(axis=1)
    total = int(rows.sum())
    small = int(rows.min())
    if small == 0 or present.shape[0] <= 1:
        groups[present] = np.arange(present.shape[0])
        return PooledTable(t[:, present], groups)
    sparse = col[present] * small < min_expected * total
    if not sparse.any():
        groups[present] = np.arange(present.shape[0])
        return PooledTable(t[:, present], groups)
    dense = list(present[~sparse])
    pooled = list(present[sparse])
    pooled_total = int(col[pooled].sum())
    while pooled_total * small < min_expected * total and dense:
        j = min(range(len(dense)), key=lambda i: (col[dense[i]], i))
        pooled_total += int(col[dense[j]])
        pooled.append(dense.pop(j))
    out = np.empty((2, len(dense) + 1), dtype=np.int64)
    for i, c in enumerate(dense):
        out[:, i] = t[:, c]
        groups[c] = i
    out[:, -1] = t[:, pooled].sum(axis=1)
    groups[pooled] = len(dense)
    return PooledTable(out, groups)


def chi2_homogeneity(table: np.ndarray) -> Chi2Result:
    """Pearson's chi-square test of homogeneity of a (2, k) table without empty columns.

    Equal to `scipy.stats.chi2_contingency(table, correction=False)`. One column (or one
    empty row) leaves nothing to test: statistic 0, p-value 1, no degrees of freedom.
    """
    t = np.asarray(table, dtype=np.float64)
    rows = t.sum(axis=1)
    if t.shape[1] < 2 or (rows == 0).any():
        return Chi2Result(0.0, 1.0, 0)
    expected = np.outer(rows, t.sum(axis=0)) / rows.sum()
    stat = float(np.sum((t - expected) ** 2 / expected))
    dof = t.shape[1] - 1
    from scipy import special  # noqa: PLC0415 - about 10 MiB: only categorical tests need it

    return Chi2Result(stat, float(special.chdtrc(dof, stat)), dof)


def column_pvalues(table: np.ndarray) -> np.ndarray:
    """Exact two-sided p-value of each column against the rest of a (2, k) table.

    Given the margins, the baseline's count x in a column of total c is hypergeometric
    (c marked items among T, N drawn). The p-value doubles the tail on x's side of the
    mode: min(1, 2 * P(X <= x)) when x is at most the mode, min(1, 2 * P(X >= x)) above
    it. Each one-sided tail is an exact p-value, so P(p <= a) <= a/2 + a/2 = a. It equals
    the doubled smaller one-sided Fisher p-value (`scipy.stats.fisher_exact` with `less`
    and `greater`) whenever that is below 1/2, and is never smaller.
    """
    t = np.asarray(table, dtype=np.int64)
    rows = t.sum(axis=1)
    if t.shape[1] == 0 or (rows == 0).any():
        return np.ones(t.shape[1])
    tail = _hypergeom_tail(t[0], t.sum(axis=0), int(rows[0]), int(rows.sum()))
    out: np.ndarray = np.minimum(1.0, 2.0 * tail)
    return out


def _log_choose(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    from scipy import special  # noqa: PLC0415 - about 10 MiB: only categorical tests need it

    # betaln keeps the precision that three gammaln of large numbers would cancel away
    out: np.ndarray = -np.log1p(n) - special.betaln(n - k + 1.0, k + 1.0)
    return out


def _hypergeom_tail(x: np.ndarray, c: np.ndarray, draws: int, total: int) -> np.ndarray:
    """P(X <= x) where x is at most the mode of X, P(X >= x) above it, X hypergeometric
    (c marked among `total`, `draws` drawn), for each column at once.

    The terms from x outward decrease, so they are summed from x for 10 standard
    deviations and 20 terms more (past which they are below 1e-21 of the first), each
    from the one before by the pmf's ratio, and the first from logs of binomials.
    """
    xf = x.astype(np.float64)
    cf = c.astype(np.float64)
    n, tt = float(draws), float(total)
    mode = np.floor((cf + 1.0) * (n + 1.0) / (tt + 2.0))
    up = xf > mode
    var = n * (cf / tt) * (1.0 - cf / tt) * (tt - n) / max(tt - 1.0, 1.0)
    steps = int(np.ceil(10.0 * np.sqrt(float(var.max(initial=0.0))))) + 20
    j = np.arange(steps, dtype=np.float64)[None, :]
    k = xf[:, None]
    cc = cf[:, None]
    rest = tt - cc - n  # T - c - N
    with np.errstate(divide="ignore", invalid="ignore"):
        # upward: pmf(k+1) / pmf(k) = (c-k)(N-k) / ((k+1)(T-c-N+k+1)), k = x, x+1, ...
        ku = k + j
        log_up = (
            np.log(np.maximum(cc - ku, 0.0))
            + np.log(np.maximum(n - ku, 0.0))
            - np.log(ku + 1.0)
            - np.log(rest + ku + 1.0)
        )
        # downward: pmf(k-1) / pmf(k) = k (T-c-N+k) / ((c-k+1)(N-k+1)), k = x, x-1, ...
        kd = k - j
        log_down = (
            np.log(np.maximum(kd, 0.0))
            + np.log(np.maximum(rest + kd, 0.0))
            - np.log(cc - kd + 1.0)
            - np.log(n - kd + 1.0)
        )
    log_ratio = np.where(up[:, None], log_up, log_down)
    log_ratio = np.nan_to_num(log_ratio, nan=-np.inf, posinf=-np.inf)
    with np.errstate(over="ignore", invalid="ignore"):  # -inf past the support's end
        steps_log = np.concatenate(
            [np.zeros((x.shape[0], 1)), np.cumsum(log_ratio[:, :-1], axis=1)], axis=1
        )
    first = (
        _log_choose(cf, xf)
        + _log_choose(tt - cf, n - xf)
        - _log_choose(np.asarray(tt), np.asarray(n))
    )
    with np.errstate(under="ignore"):
        tail: np.ndarray = np.minimum(np.exp(first[:, None] + steps_log).sum(axis=1), 1.0)
    return tail


def category_test(table: np.ndarray) -> CategoryTestResult:
    """Exact per-column tests of a pooled (2, k) table, Bonferroni over the columns.

    With two columns both tests are the same 2 x 2 table, so the factor is 1; with k > 2
    it is k. Never below the exact p-value of the hypothesis "no column's share differs".
    """
    t = np.asarray(table, dtype=np.int64)
    k = t.shape[1]
    if k < 2 or (t.sum(axis=1) == 0).any():
        return CategoryTestResult(1.0, -1, np.ones(k))
    p = column_pvalues(t)
    best = int(np.argmin(p))
    factor = 1 if k == 2 else k
    return CategoryTestResult(min(1.0, factor * float(p[best])), best, p)


def category_drift(
    ref_counts: np.ndarray, cur_counts: np.ndarray, min_expected: float = MIN_EXPECTED
) -> tuple[Chi2Result, CategoryTestResult, PooledTable]:
    """Both tests of two count vectors, on the same pooled table.

    `CategoryTestResult.column` is translated back to the original column, or -1 when the
    most changed pooled column holds several original ones.
    """
    pooled = pool_sparse_columns(homogeneity_table(ref_counts, cur_counts), min_expected)
    chi2 = chi2_homogeneity(pooled.table)
    exact = category_test(pooled.table)
    column = -1
    if exact.column >= 0:
        members = np.flatnonzero(pooled.groups == exact.column)
        column = int(members[0]) if members.shape[0] == 1 else -1
    return chi2, CategoryTestResult(exact.pvalue, column, exact.column_pvalues), pooled


def psi_expected(bins: int, n: int, reference_n: int) -> float:
    """PSI expected with no drift: (B - 1) * (1/n + 1/N), for B bins of non-zero share.

    Without drift, PSI is approximately (1/n + 1/N) times a chi-square variable with B - 1
    degrees of freedom (it is a symmetrized relative entropy, whose second-order term is
    Pearson's statistic). The approximation needs each bin's expected count well above 1;
    the 1e-4 clamp of empty bins is outside it. NaN when a sample is empty.
    """
    if n <= 0 or reference_n <= 0 or bins < 1:
        return math.nan
    return (bins - 1) * (1.0 / n + 1.0 / reference_n)

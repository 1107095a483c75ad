"""A drift check's statistics of one categorical column (a feature or the predictions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidecar.stats.bins import OTHER
from sidecar.stats.psi import psi
from sidecar.stats.reference import CategoricalReference
from sidecar.stats.twosample import MIN_EXPECTED, category_drift, psi_expected


@dataclass(frozen=True)
class _Categorical:
    """The statistics of one categorical column (a feature or the predictions)."""

    samples: int
    psi: float
    psi_expected: float
    chi2_statistic: float
    chi2_pvalue: float
    chi2_dof: int
    test_pvalue: float
    changed_category: str | None
    horizon_samples: int | None
    horizon_pvalue: float | None


def _nonzero(shares: np.ndarray) -> int:
    return int(np.count_nonzero(np.asarray(shares) > 0))


def _categorical(
    ref: CategoricalReference,
    counts: np.ndarray,
    labels: tuple[str, ...],
    horizon: np.ndarray | None = None,
) -> _Categorical:
    """PSI over the reference's bins, and the two-sample tests over every category.

    `counts` has a bin per kept reference category, OTHER, one per tail category of the
    reference, then one per live category the reference never saw. PSI pools all past
    OTHER into it, as the bin counters do. The tests keep them apart, unless the reference
    had more categories than it counts one by one (then an unseen live category may be
    one of those, and only the rest as a whole is comparable).

    `horizon`, counts in the same coding over a longer stretch of events than the window,
    gets the exact test too when it holds more values than the window; the feature's
    p-value is then min(1, 2 * min(window p, horizon p)), Bonferroni over the two.
    """
    kept = len(ref.categories)
    folded = counts[: kept + 1].copy()
    folded[kept] += int(counts[kept + 1 :].sum())
    base = ref.test_counts()
    chi2, exact, _ = category_drift(base, _testable(ref, counts), MIN_EXPECTED)
    p, column = exact.pvalue, exact.column
    horizon_samples: int | None = None
    horizon_p: float | None = None
    if horizon is not None and int(horizon.sum()) > int(counts.sum()):
        _, longer, _ = category_drift(base, _testable(ref, horizon), MIN_EXPECTED)
        horizon_samples, horizon_p = int(horizon.sum()), longer.pvalue
        if longer.pvalue < p:
            column = longer.column
        p = min(1.0, 2.0 * min(p, longer.pvalue))
    changed: str | None = None
    if column >= 0:
        c = column
        changed = ref.categories[c] if c < kept else OTHER if c == kept else labels[c - kept - 1]
    m = int(counts.sum())
    return _Categorical(
        samples=m,
        psi=psi(ref.shares, folded),
        psi_expected=psi_expected(_nonzero(ref.shares), m, ref.count),
        chi2_statistic=chi2.statistic,
        chi2_pvalue=chi2.pvalue,
        chi2_dof=chi2.dof,
        test_pvalue=p,
        changed_category=changed,
        horizon_samples=horizon_samples,
        horizon_pvalue=horizon_p,
    )


def _testable(ref: CategoricalReference, counts: np.ndarray) -> np.ndarray:
    """Live counts as the tests compare them: past the counted categories, only a pool."""
    counted = len(ref.categories) + 1 + len(ref.tail)
    if not (ref.overflowed and counts.shape[0] > counted):
        return counts
    live = counts[:counted].copy()
    live[len(ref.categories)] += int(counts[counted:].sum())
    return live


def _code_counts(
    codes: np.ndarray, ref: CategoricalReference, labels: tuple[str, ...], what: str
) -> np.ndarray:
    """Counts per code: the reference's bins, then one per named unseen live category."""
    c = np.asarray(codes)
    bins = len(ref.categories) + 1 + len(labels)
    c = c[c >= 0]
    if c.size and int(c.max()) >= bins:
        raise ValueError(f"{what}: code {int(c.max())} beyond the {bins} bins of its baseline")
    return np.bincount(c, minlength=bins)

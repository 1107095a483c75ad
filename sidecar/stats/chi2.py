"""Chi-square goodness of fit of live counts to reference shares."""

from __future__ import annotations

import math

import numpy as np

from sidecar.stats.psi import SHARE_FLOOR


def chi2_test(ref_shares: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square goodness of fit of live counts to the reference shares.

    Expected counts are ref share * n. A bin the reference never saw (share 0) that live
    data hits gets the share 1e-4, and the expected shares are renormalized, so an unseen
    category makes the statistic large rather than infinite; bins empty in both are left
    out and do not count as degrees of freedom. NaN when there are no live values.
    """
    ref = np.asarray(ref_shares, dtype=np.float64)
    obs = np.asarray(cur_counts, dtype=np.float64)
    total = float(obs.sum())
    if total <= 0:
        return math.nan, math.nan
    keep = (ref > 0) | (obs > 0)
    share = np.where(ref > 0, ref, SHARE_FLOOR)[keep]
    expected = share / share.sum() * total
    o = obs[keep]
    dof = int(keep.sum()) - 1
    stat = float(np.sum((o - expected) ** 2 / expected))
    if dof < 1:
        # one bin: the live data cannot differ from the reference
        return 0.0, 1.0
    # scipy.special costs about 13 MiB: imported by the first check that needs it
    from scipy import special  # noqa: PLC0415

    return stat, float(special.chdtrc(dof, stat))

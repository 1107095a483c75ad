"""Conventions shared by every statistic: non-finite results and rates over nothing."""

from __future__ import annotations

import math


def finite_or_none(x: float | None) -> float | None:
    """`x` as a float, or None when it is None, NaN or ±inf (JSON and metadata have no NaN)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def rate(part: int, total: int) -> float:
    """`part / total`; NaN when `total` is 0.

    A rate over nothing is undefined, and NaN keeps "no data" apart from "none missing"
    (0.0). Every writer maps it through `finite_or_none`, so it reaches JSON as null.
    """
    return part / total if total else math.nan

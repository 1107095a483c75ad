"""The alarm policy: a false-alarm rate per model per period, over every check in it.

A daemon checks each model every `interval_s` seconds, so a period of `period_s` seconds
(a day by default) holds at most K = ceil(period_s / interval_s) checks of it; a check runs
M tests (the model's features with enough data, and its predictions). The verdicts keep

    P(any false alarm of the model within any period) <= false_alarm_rate

by a union bound over the K checks: each check gets rate / K, and within a check the
`correction` spends it over the M tests:

- `bonferroni`: each test at rate / (K * M). Holds whatever the dependence between tests
  and between checks (overlapping windows, a shared baseline, any traffic).
- `bh`: Benjamini-Hochberg at rate / K. With no drift, BH's false discovery rate is its
  family-wise error rate, so each check stays within rate / K; it assumes the tests of a
  check are independent or positively dependent, as BH does.
- `none`: each test at rate / K. The promise then holds for each feature on its own (and
  for the predictions), not for the model as a whole.

The union bound is exact in the sense that matters: it never exceeds the rate, whatever
the overlap of windows. Its price is power, paid as detection delay (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sidecar.stats.correction import CORRECTIONS, adjust_pvalues

DEFAULT_RATE = 0.05
DEFAULT_PERIOD_S = 86_400.0


def checks_per_period(period_s: float, interval_s: float) -> int:
    """The most checks `interval_s` apart in any half-open period of `period_s` seconds."""
    if not (period_s > 0 and interval_s > 0):
        raise ValueError(f"period {period_s} and interval {interval_s}: both must be > 0")
    # a hair of tolerance, so 86400 / 30 is 2880 and not 2881 after rounding
    return max(1, math.ceil(period_s / interval_s - 1e-9))


@dataclass(frozen=True)
class AlarmPolicy:
    """How a check's p-values become verdicts; see the module docstring."""

    false_alarm_rate: float = DEFAULT_RATE
    period_s: float = DEFAULT_PERIOD_S
    interval_s: float = 30.0
    correction: str = "bonferroni"

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate {self.false_alarm_rate}: must be in (0, 1)")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction {self.correction!r}: expected one of {CORRECTIONS}")
        checks_per_period(self.period_s, self.interval_s)

    @property
    def checks(self) -> int:
        """K: the most checks of a model within one period."""
        return checks_per_period(self.period_s, self.interval_s)

    @property
    def check_level(self) -> float:
        """The share of the period's false-alarm rate one check may spend: rate / K."""
        return self.false_alarm_rate / self.checks

    def adjusted(self, pvalues: np.ndarray | Sequence[float]) -> np.ndarray:
        """Each test's p-value on the period's scale: the check's correction, times K.

        A test alarms when its adjusted p-value is at most `false_alarm_rate`. NaN entries
        (tests that did not run) stay NaN and do not count in M.
        """
        within = adjust_pvalues(pvalues, self.correction)
        out: np.ndarray = np.minimum(within * self.checks, 1.0)
        return out

    def verdicts(self, pvalues: np.ndarray | Sequence[float]) -> np.ndarray:
        """Which tests alarm: adjusted p-value <= false_alarm_rate (NaN never alarms)."""
        adj = self.adjusted(pvalues)
        with np.errstate(invalid="ignore"):
            out: np.ndarray = adj <= self.false_alarm_rate
        return out

    def test_level(self, tests: int) -> float:
        """The level each of `tests` tests is held to under `bonferroni` (the strictest
        level `bh` uses, and the level of every test under `none` when `tests` is 1)."""
        if self.correction == "none":
            return self.check_level
        return self.check_level / max(1, tests)

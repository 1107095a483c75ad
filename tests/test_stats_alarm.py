"""The alarm policy: a false-alarm rate per period, split over checks and tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.stats.alarm import AlarmPolicy, checks_per_period


def test_checks_per_period() -> None:
    assert checks_per_period(86_400, 30) == 2880
    assert checks_per_period(86_400, 31) == 2788  # 2787.1...: a partial interval counts
    assert checks_per_period(10, 30) == 1
    assert checks_per_period(86_400, 0.1) == 864_000
    with pytest.raises(ValueError, match="must be > 0"):
        checks_per_period(0, 30)
    with pytest.raises(ValueError, match="must be > 0"):
        checks_per_period(86_400, -1)


def test_bonferroni_union_bound_arithmetic() -> None:
    policy = AlarmPolicy(false_alarm_rate=0.05, period_s=86_400, interval_s=30)
    m = 101
    level = 0.05 / (2880 * m)
    assert policy.checks == 2880
    assert policy.check_level == pytest.approx(0.05 / 2880)
    assert policy.test_level(m) == pytest.approx(level)
    p = np.full(m + 1, 0.5)
    p[3] = level  # exactly at the level: alarms (the union bound is on P(p <= level))
    p[4] = level * 1.0001
    p[5] = np.nan  # a test that did not run: not counted in M, never alarms
    adj = policy.adjusted(p)
    assert adj[3] == pytest.approx(0.05)
    verdicts = policy.verdicts(p)
    assert verdicts[3] and not verdicts[4] and not verdicts[5]
    assert math.isnan(adj[5])
    assert verdicts.sum() == 1
    # the sum of the levels over every test of every check in a period is the rate
    assert policy.checks * m * policy.test_level(m) == pytest.approx(0.05)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=40),
    st.floats(0.001, 0.5),
    st.integers(1, 5000),
)
@example(ps=[0.0, 0.0, 0.49308963675963147], rate=0.49308963675963147, checks=1)
def test_bh_is_benjamini_hochberg_at_rate_over_k(ps: list[float], rate: float, checks: int) -> None:
    p = np.array(ps)
    policy = AlarmPolicy(
        false_alarm_rate=rate, period_s=checks * 10.0, interval_s=10.0, correction="bh"
    )
    assert policy.checks == checks
    bh = scipy.stats.false_discovery_control(p, method="bh")
    np.testing.assert_allclose(policy.adjusted(p), np.minimum(bh * checks, 1.0), rtol=1e-12)
    # BH at level rate / K, by its step-up definition. A p-value exactly on a rank's
    # step-up threshold may fall either way in floating point, and moves the cutoff for
    # every rank below it: the verdicts must be the step-up's at a level a hair below or
    # a hair above rate / K.
    order = np.sort(p)

    def step_up(q: float) -> np.ndarray:
        passing = np.flatnonzero(order <= q * np.arange(1, p.size + 1) / p.size)
        cutoff = order[passing[-1]] if passing.size else -1.0
        return p <= cutoff

    got = policy.verdicts(p)
    q = rate / checks
    assert np.array_equal(got, step_up(q * (1 - 1e-9))) or np.array_equal(
        got, step_up(q * (1 + 1e-9))
    )


def test_none_tests_each_at_rate_over_k() -> None:
    policy = AlarmPolicy(false_alarm_rate=0.05, period_s=100, interval_s=10, correction="none")
    assert policy.test_level(50) == pytest.approx(0.005)
    assert policy.verdicts([0.005, 0.0051]).tolist() == [True, False]


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="false_alarm_rate"):
        AlarmPolicy(false_alarm_rate=0)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        AlarmPolicy(false_alarm_rate=1.5)
    with pytest.raises(ValueError, match="correction"):
        AlarmPolicy(correction="holm")
    with pytest.raises(ValueError, match="must be > 0"):
        AlarmPolicy(period_s=0)


def test_union_bound_holds_over_a_period_of_independent_checks() -> None:
    """Uniform p-values (no drift) in K independent checks of M tests: the share of periods
    with any alarm stays within the rate (about the rate: independent checks spend all of
    it); the per-check correction alone alarms in nearly every period."""
    rng = np.random.default_rng(7)
    policy = AlarmPolicy(false_alarm_rate=0.1, period_s=200, interval_s=1)
    periods, m = 2000, 20
    p = rng.random((periods, policy.checks, m))
    alarmed = np.array([policy.verdicts(check).any() for check in p.reshape(-1, m)])
    days_new = alarmed.reshape(periods, policy.checks).any(axis=1).mean()
    days_check_only = ((p * m).min(axis=2) <= 0.1).any(axis=1).mean()
    # P(Binomial(2000, 0.095) > 240) < 1e-3
    assert days_new <= 0.12
    assert days_check_only > 0.99

"""The Kolmogorov distribution P(D_n > d) against scipy.stats.kstwo, and no scipy.stats."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sidecar.stats.kolmogorov import _smirnov, kolmogorov_sf
from sidecar.stats.ks import ks_pvalue

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Where both compute the same formula (the closed forms, Pelz-Good, and Durbin's matrix for
# n > 140), values agree to rounding: 1e-12. Elsewhere both are exact but computed
# differently, and are held to 1e-10 of each other: for n <= 140 and
# 0.754693 < n d^2 < 4, scipy uses Pomeranz's recursion and we Durbin's matrix (each
# within about 3e-12 of a 60-digit computation); wherever 2 P(D_n^+ > d) is used, scipy's
# one-sided distribution is summed in double-double arithmetic and ours with Loader's
# deviance form (about 1e-12 apart at most, measured out to n = 200,000).
REL_SAME_METHOD = 1e-12
REL_EXACT_METHODS = 1e-10


def tolerance(n: int, d: float) -> float:
    nxx = n * d * d
    if n * d <= 1.0 or n * d >= n - 1:
        return REL_SAME_METHOD  # closed forms
    if d >= 0.5:
        return REL_EXACT_METHODS  # 2 P(D_n^+ > d)
    if n <= 140:
        return REL_SAME_METHOD if nxx < 0.754693 else REL_EXACT_METHODS
    return REL_SAME_METHOD if nxx < 2.2 else REL_EXACT_METHODS


@st.composite
def n_and_d(draw: st.DrawFn) -> tuple[int, float]:
    """n from 1 to 50,000, and d spread over every region: n*d^2 on a log scale."""
    n = draw(
        st.one_of(
            st.integers(min_value=1, max_value=140),
            st.integers(min_value=141, max_value=50_000),
        )
    )
    if draw(st.booleans()):
        d = draw(st.floats(min_value=0.0, max_value=1.0))
    else:
        log_nxx = draw(st.floats(min_value=math.log(1e-4), max_value=math.log(400.0)))
        d = min(1.0, math.sqrt(math.exp(log_nxx) / n))
    return n, d


@SETTINGS
@given(n_and_d())
def test_kolmogorov_sf_equals_scipy_kstwo(nd: tuple[int, float]) -> None:
    n, d = nd
    expected = float(scipy.stats.kstwo.sf(d, n))
    got = kolmogorov_sf(n, d)
    assert 0.0 <= got <= 1.0
    assert math.isclose(got, expected, rel_tol=tolerance(n, d), abs_tol=1e-300), (n, d)


@pytest.mark.parametrize("n", [141, 500, 8_333, 50_000])
def test_kolmogorov_sf_at_every_region_boundary(n: int) -> None:
    # on each side of each switch between methods, so a shifted boundary shows up
    for nxx in (2.2, 370.0):
        for f in (1 - 1e-9, 1.0, 1 + 1e-9):
            d = math.sqrt(nxx * f / n)
            assert math.isclose(
                kolmogorov_sf(n, d),
                float(scipy.stats.kstwo.sf(d, n)),
                rel_tol=tolerance(n, d),
                abs_tol=1e-300,
            )
    for f in (1 - 1e-9, 1.0, 1 + 1e-9):
        d = (1.4 * f / n) ** (2 / 3)
        assert math.isclose(kolmogorov_sf(n, d), float(scipy.stats.kstwo.sf(d, n)), rel_tol=1e-12)


def test_kolmogorov_sf_closed_forms() -> None:
    # one value: D_1 = max(U, 1 - U), so P(D_1 > d) = 2 - 2d on [1/2, 1]
    for d in (0.5, 0.6, 0.75, 0.99):
        assert kolmogorov_sf(1, d) == pytest.approx(2 - 2 * d, rel=1e-15)
    # d below 1/(2n) is always exceeded; d = 1 never
    assert kolmogorov_sf(10, 0.049) == 1.0
    assert kolmogorov_sf(10, 1.0) == 0.0
    # the upper tail: P(D_n > d) = 2 (1 - d)^n for d >= 1 - 1/n
    assert kolmogorov_sf(10, 0.95) == pytest.approx(2 * 0.05**10, rel=1e-14)
    # d >= 1/2: the two one-sided events are disjoint
    assert kolmogorov_sf(30, 0.6) == pytest.approx(2 * scipy.special.smirnov(30, 0.6), rel=1e-12)
    assert math.isnan(kolmogorov_sf(10, math.nan))
    with pytest.raises(ValueError, match="n must be at least 1"):
        kolmogorov_sf(0, 0.5)


def test_kolmogorov_sf_is_monotone_in_d() -> None:
    for n in (7, 140, 141, 1_000, 8_333):
        ds = np.linspace(0.0, 1.0, 2_001)
        p = np.array([kolmogorov_sf(n, float(d)) for d in ds])
        # within rounding: the methods meet at their boundaries to about 1e-6 (Pelz-Good)
        assert np.all(np.diff(p) <= 2e-6), n
        assert p[0] == 1.0 and p[-1] == 0.0


def test_ks_pvalue_broadcasts_and_marks_missing() -> None:
    d = np.array([0.01, np.nan, 0.2, 0.05])
    p = ks_pvalue(d, np.array([5000, 5000, 0, 5000]), 1000)
    en = round(5000 * 1000 / 6000)
    assert p[0] == pytest.approx(float(scipy.stats.kstwo.sf(0.01, en)), rel=1e-12)
    assert math.isnan(p[1]) and math.isnan(p[2])
    assert p[3] == pytest.approx(float(scipy.stats.kstwo.sf(0.05, en)), rel=1e-12)
    assert isinstance(ks_pvalue(0.05, 100, 100), float)


def test_a_full_check_does_not_import_scipy_stats() -> None:
    """A check of numeric columns (every KS region) loads no scipy at all; one with a
    categorical column loads scipy.special for its tests, never scipy.stats."""
    code = textwrap.dedent(
        """
        import sys, tempfile
        from pathlib import Path
        import numpy as np
        import pyarrow as pa, pyarrow.parquet as pq
        import sidecar.daemon  # everything the daemon imports at start-up
        from sidecar.baseline import load_baseline
        from sidecar.drift import DriftParams, WindowData, check_model

        def loaded():
            return sorted(m for m in sys.modules if m == "scipy" or m.startswith("scipy."))

        rng = np.random.default_rng(5)
        rows, n = 3000, 2000
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "b.parquet"
            pq.write_table(pa.table({
                "a": rng.normal(size=rows), "b": rng.normal(size=rows),
                "c": rng.choice(["x", "y", "z"], size=rows),
                "prediction": rng.normal(size=rows),
            }), path)
            numeric = load_baseline(path, "m", numeric_names=["a", "b"], categorical_names=[],
                                    prediction_kind="numeric")
            mixed = load_baseline(path, "m", numeric_names=["a", "b"], categorical_names=["c"],
                                  prediction_kind="numeric")
        # an undrifted, a slightly and a heavily drifted column: each KS region
        num = np.column_stack([rng.normal(size=n), rng.normal(0.08, size=n)])
        num[:, 1][: n // 2] += 5.0
        pred = rng.normal(0.3, size=n)
        r = check_model(numeric, WindowData(num, np.empty((n, 0), np.int32), pred),
                        DriftParams())
        assert all(f.ks_pvalue is not None for f in r.features)
        assert r.prediction is not None and r.prediction.ks_pvalue is not None
        print(loaded())
        cat = mixed.categorical[0].codes(list(rng.choice(["x", "y", "w"], size=n)))
        r = check_model(mixed, WindowData(num, cat.astype(np.int32).reshape(-1, 1), pred),
                        DriftParams())
        assert r.features[2].chi2_pvalue is not None
        print(loaded())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    numeric_only, with_categorical = run.stdout.strip().splitlines()
    assert numeric_only == "[]"
    assert "'scipy.special'" in with_categorical
    assert "scipy.stats" not in with_categorical


@SETTINGS
@given(n_and_d())
def test_one_sided_smirnov_equals_scipy_special(nd: tuple[int, float]) -> None:
    n, d = nd
    assume(1.0 < n * d < n - 1)  # the one-sided sum is used strictly between the closed forms
    expected = float(scipy.special.smirnov(n, d))
    assert math.isclose(_smirnov(n, d), expected, rel_tol=1e-11, abs_tol=1e-300), (n, d)

"""sidecar.stats.kolmogorov.kstwo_sf against scipy.stats.kstwo.sf: equal bit for bit.

The algorithm picks one of several methods by n and n * x**2 (Simard and L'Ecuyer); the
strategies below aim at each region, so every branch is compared, not only the common one.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.stats.kolmogorov import kstwo_sf
from sidecar.stats.ks import ks_pvalue

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Boundaries of the algorithm's regions in n * x**2, and n beyond which it changes method.
NX2_EDGES = [0.0, 0.754693, 2.2, 4.0, 18.0, 370.0, 2000.0]


def same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal bit for bit (NaN where NaN)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    mismatch = got[ok].view(np.int64) != want[ok].view(np.int64)
    assert not mismatch.any(), list(zip(got[ok][mismatch], want[ok][mismatch], strict=True))


@st.composite
def points(draw: st.DrawFn) -> tuple[float, int]:
    """(x, n): x anywhere in [0, 1], or placed in one region of the algorithm."""
    n = draw(
        st.one_of(
            st.integers(min_value=1, max_value=140),  # the exact methods of small n
            st.integers(min_value=141, max_value=20_000),
            st.sampled_from([1, 2, 140, 141, 8_333, 100_000, 100_001]),
        )
    )
    how = draw(st.sampled_from(["uniform", "region", "edges"]))
    if how == "uniform":
        x = draw(st.floats(min_value=0.0, max_value=1.0))
    elif how == "region":
        i = draw(st.integers(min_value=0, max_value=len(NX2_EDGES) - 2))
        c = draw(st.floats(min_value=NX2_EDGES[i], max_value=NX2_EDGES[i + 1]))
        x = min(1.0, float(np.sqrt(c / n)))
    else:  # the support's ends and the Ruben-Gambino bands
        x = draw(st.sampled_from([0.5 / n, 1.0 / n, (n - 1.0) / n, 0.5, 1.0, 0.0]))
        x = float(np.nextafter(x, draw(st.sampled_from([0.0, 1.0]))))
    return x, n


@SETTINGS
@given(st.lists(points(), min_size=1, max_size=8))
def test_kstwo_sf_equals_scipy(pts: list[tuple[float, int]]) -> None:
    x = np.array([p[0] for p in pts])
    n = np.array([p[1] for p in pts], dtype=np.float64)
    same(kstwo_sf(x, n), scipy.stats.kstwo.sf(x, n))


@SETTINGS
@given(points())
def test_kstwo_sf_equals_scipy_one_at_a_time(pt: tuple[float, int]) -> None:
    x, n = pt
    same(kstwo_sf(x, n), scipy.stats.kstwo.sf(x, n))


def test_outside_the_support_and_bad_arguments_as_scipy() -> None:
    x = np.array([-1.0, 0.0, 0.25, 1.0, 2.0, np.nan, 0.3, 0.3, 0.3, np.inf, -np.inf])
    n = np.array([10.0, 10.0, 2.0, 10.0, 10.0, 10.0, 0.0, 2.5, np.nan, 10.0, 10.0])
    with np.errstate(divide="ignore", invalid="ignore"):  # scipy's 0.5 / n at n = 0
        want = scipy.stats.kstwo.sf(x, n)
    same(kstwo_sf(x, n), want)


def test_broadcasts_as_scipy() -> None:
    x = np.linspace(0.0, 1.0, 41)[:, None]
    n = np.array([1.0, 3.0, 50.0, 141.0, 5_000.0])[None, :]
    same(kstwo_sf(x, n), scipy.stats.kstwo.sf(x, n))
    same(kstwo_sf(0.1, 30), scipy.stats.kstwo.sf(0.1, 30))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=60_000),
    st.integers(min_value=1, max_value=20_000),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_ks_pvalue_is_scipy_kstwo_at_the_effective_size(n: int, m: int, d: float) -> None:
    en = round(n * m / (n + m))
    want = np.clip(scipy.stats.kstwo.sf(d, en), 0.0, 1.0) if en >= 1 else np.nan
    same(np.asarray(ks_pvalue(d, n, m)), np.asarray(want))


def test_a_drift_check_does_not_import_scipy_stats() -> None:
    """The point of the module: p-values without scipy.stats (about 37 MiB)."""
    code = (
        "import sys, numpy as np\n"
        "from sidecar.stats.ks import ks_2samp_many\n"
        "from sidecar.stats.chi2 import chi2_test\n"
        "rng = np.random.default_rng(0)\n"
        "refs = [np.sort(rng.normal(size=n)) for n in (50, 5000, 50000)]\n"
        "d, p = ks_2samp_many(refs, rng.normal(size=(3000, 3)))\n"
        "assert np.isfinite(p).all(), p\n"
        "chi2_test(np.array([0.5, 0.5]), np.array([10, 30]))\n"
        "print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout

"""The two-sided one-sample Kolmogorov distribution at finite n: P(D_n > d).

`D_n = sup |F_n(x) - F(x)|` for n uniform values. Written from R. Simard and P. L'Ecuyer,
"Computing the two-sided Kolmogorov-Smirnov distribution", J. Stat. Software 39(11),
2011, which chooses among these methods by n and n*d^2 (the same choice, and so the same
values, as `scipy.stats.kstwo.sf`):

- exact closed forms (Ruben and Gambino, 1982) for n*d <= 1 and n*d >= n - 1;
- exact `2 * P(D_n^+ > d)` for d >= 1/2, where the two one-sided events are disjoint (the
  one-sided distribution is Birnbaum and Tingey's exact sum, see `_smirnov`);
- Durbin's matrix, as computed by Marsaglia, Tsang and Wang (2003), exact;
- Pelz and Good's (1976) asymptotic series, to order n^(-3/2), for n > 140 between the
  matrix's region and the upper tail;
- in the upper tail, `2 * P(D_n^+ > d)` (Miller's approximation): it counts twice the
  samples that exceed d on both sides, a relative error below `exp(-6 n d^2)` (about
  1.8e-6 where it starts, `n d^2 = 2.2`).

docs/statistics.md says where each applies and how closely the tests hold it to scipy.
Only numpy: no scipy.stats (about 35 MiB) and no scipy.special (about 10 MiB).
"""

from __future__ import annotations

import math

import numpy as np

# Simard and L'Ecuyer's region boundaries (their section 4).
_SMALL_N = 140  # up to here, exact methods below the upper tail
_DURBIN_MAX_N = 100_000  # above, Durbin's matrix is too slow: Pelz-Good throughout
_DURBIN_SMALL_NXX = 0.754693  # n <= 140: matrix below this n*d^2 ...
_POMERANZ_NXX = 4.0  # ... and exact below this one (Durbin's matrix here too)
_DURBIN_NX15 = 1.4  # n > 140: matrix while n * d^1.5 is below this
_MILLER_NXX = 2.2  # n > 140: the upper tail, 2 * one-sided
_ZERO_NXX = 370.0  # n > 140: P(D_n > d) below 1e-300 from here

_TERMS_AT_ONCE = 1 << 16  # one-sided sum: terms computed together (a few MiB of arrays)
# rescale a running product by this power of 2 to stay inside float64's range
_SCALE_EXP = 460


def kolmogorov_sf(n: int, d: float) -> float:
    """P(D_n > d) for n >= 1 uniform values; NaN for a NaN `d`."""
    if math.isnan(d):
        return math.nan
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if d >= 1.0:
        return 0.0
    t = n * d
    if t <= 0.5:
        return 1.0
    if t <= 1.0:
        # Ruben-Gambino: P(D_n <= d) = n!/n^n (2nd - 1)^n for 1/(2n) <= d <= 1/n
        if n > 1_000:
            return 1.0  # n!/n^n < e^(1-n) sqrt(n) < 1e-400: P(D_n <= d) is below any double
        mant, exp2 = _prod_i_over_n(n)
        return _clip(1.0 - math.ldexp(mant * (2.0 * t - 1.0) ** n, exp2))
    if t >= n - 1:
        # Ruben-Gambino: P(D_n > d) = 2 (1 - d)^n for d >= 1 - 1/n
        return _clip(2.0 * (1.0 - d) ** n)
    if d >= 0.5:
        return _clip(2.0 * _smirnov(n, d))
    nxx = t * d
    if n <= _SMALL_N:
        if nxx <= _POMERANZ_NXX:
            return _clip(1.0 - _durbin_cdf(n, d))
        return _clip(2.0 * _smirnov(n, d))
    if nxx >= _ZERO_NXX:
        return 0.0
    if nxx >= _MILLER_NXX:
        return _clip(2.0 * _smirnov(n, d))
    if n <= _DURBIN_MAX_N and n * d**1.5 <= _DURBIN_NX15:
        return _clip(1.0 - _durbin_cdf(n, d))
    return _clip(1.0 - _pelz_good_cdf(n, d))


def _clip(p: float) -> float:
    return min(1.0, max(0.0, p))


def _smirnov(n: int, d: float) -> float:
    """P(D_n^+ >= d), the one-sided distribution, for 0 < d < 1: Birnbaum and Tingey's sum

        d * sum_{j=0}^{floor(n(1-d))} C(n, j) (d + j/n)^(j-1) (1 - d - j/n)^(n-j),

    of positive terms. Term j is `d * b(j; n, p_j) / p_j` with `p_j = d + j/n` and `b` the
    binomial probability, computed as Loader (2000) does, from the deviance `bd0` and the
    Stirling remainder `stirlerr`: every large logarithm cancels analytically, so each
    term keeps its relative precision (about 1e-14) where `lgamma`s of order n would not.
    """
    nd = n * d
    top = math.floor(n - nd)  # the last j with 1 - d - j/n >= 0
    if n - nd - top == 0.0:
        top -= 1  # that term is 0 (its power of 1 - d - j/n is positive)
    total = math.exp(n * math.log1p(-d))  # j = 0: (1 - d)^n
    stirlerr_n = float(_stirlerr(np.array([float(n)]))[0])
    # terms in slices of at most _TERMS_AT_ONCE, so a large n costs no large arrays
    for first in range(1, top + 1, _TERMS_AT_ONCE):
        j = np.arange(first, min(top, first + _TERMS_AT_ONCE - 1) + 1, dtype=np.float64)
        m = n - j
        mean_j = nd + j  # n * p_j
        mean_m = n - nd - j  # n * (1 - p_j)
        lc = stirlerr_n - _stirlerr(j) - _stirlerr(m)
        lc = lc - _bd0(j, mean_j) - _bd0(m, mean_m)
        # b(j; n, p_j) = exp(lc) / sqrt(2 pi j (n - j) / n); divided by p_j, times d
        log_terms = lc - 0.5 * (_LOG_2PI + np.log(j) + np.log1p(-j / n)) - np.log(mean_j / n)
        total += d * float(np.sum(np.exp(log_terms)))
    return min(1.0, total)


_LOG_2PI = math.log(2.0 * math.pi)
# Stirling's remainder log(k!) - log(sqrt(2 pi k) (k/e)^k) for k = 0..15, where its series
# converges too slowly; from lgamma, whose values are small here (no cancellation)
_STIRLERR_SMALL = np.array(
    [0.0]
    + [math.lgamma(k + 1.0) - (k + 0.5) * math.log(k) + k - 0.5 * _LOG_2PI for k in range(1, 16)]
)


def _stirlerr(k: np.ndarray) -> np.ndarray:
    """Stirling's remainder at whole numbers k >= 0 (Loader's `stirlerr`)."""
    k = np.asarray(k, dtype=np.float64)
    small = k <= 15.0
    out = np.empty_like(k)
    out[small] = _STIRLERR_SMALL[k[small].astype(np.int64)]
    big = k[~small]
    k2 = big * big
    # 1/12k - 1/360k^3 + 1/1260k^5 - 1/1680k^7 + 1/1188k^9: the next term is below 1e-16
    out[~small] = (
        1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680 - 1.0 / 1188 / k2) / k2) / k2) / k2
    ) / big
    return out


def _bd0(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """x log(x / mean) + mean - x, the deviance term, without cancellation (Loader's `bd0`)."""
    out: np.ndarray = x * np.log(x / mean) + mean - x
    near = np.abs(x - mean) < 0.1 * (x + mean)
    if np.any(near):
        xs, ms = x[near], mean[near]
        v = (xs - ms) / (xs + ms)
        s = (xs - ms) * v
        ej = 2.0 * xs * v
        v2 = v * v
        # |v| < 1/19: each term is at most 1/361 of the one before; 20 are plenty
        for i in range(1, 20):
            ej = ej * v2
            s = s + ej / (2 * i + 1)
        out[near] = s
    return out


def _prod_i_over_n(n: int) -> tuple[float, int]:
    """n!/n^n as (mantissa, power of 2): each factor i/n split by frexp, so none underflows."""
    mant, exps = np.frexp(np.arange(1, n + 1, dtype=np.float64) / n)
    total_exp = int(exps.sum())
    m = 1.0
    # products of at most 512 mantissas in [1/2, 1) stay above 2^-512: no underflow
    for start in range(0, n, 512):
        m *= float(np.prod(mant[start : start + 512]))
        m, e = math.frexp(m)
        total_exp += e
    return m, total_exp


def _durbin_cdf(n: int, d: float) -> float:
    """P(D_n < d) by Durbin's matrix (Marsaglia, Tsang and Wang, 2003): exact."""
    # k = ceil(n d), so 0 <= h < 1 (Marsaglia et al.'s floor(n d) + 1 gives h = 1 when
    # n d is a whole number, where the correction terms below assume h < 1)
    k = math.ceil(n * d)
    m = 2 * k - 1
    h = k - n * d
    # H[i, j] = 1/(i - j + 1)! where i - j + 1 >= 0, with the first column and last row
    # corrected for the part of the strip the boundary cuts off
    i = np.arange(m)
    diff = i[:, None] - i[None, :] + 1
    fact = np.array([math.factorial(j) for j in range(m + 1)], dtype=np.float64)
    hmat = np.where(diff >= 0, 1.0 / fact[np.clip(diff, 0, m)], 0.0)
    powers = h ** np.arange(1, m + 1, dtype=np.float64)  # h^1 .. h^m
    hmat[:, 0] -= powers / fact[1 : m + 1]
    hmat[m - 1, :] -= powers[::-1] / fact[m:0:-1]
    if 2.0 * h - 1.0 > 0.0:
        hmat[m - 1, 0] += (2.0 * h - 1.0) ** m / fact[m]
    q, q_exp = _matrix_power_scaled(hmat, n)
    value = float(q[k - 1, k - 1])
    if value <= 0.0:
        return 0.0
    mant, exp2 = _prod_i_over_n(n)
    return _clip(math.ldexp(value * mant, exp2 + q_exp))


def _matrix_power_scaled(a: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """a**n as (matrix, power of 2), rescaled as it grows so no entry overflows."""
    result: np.ndarray | None = None
    result_exp = 0
    base, base_exp = a, 0
    while True:
        if n & 1:
            if result is None:
                result, result_exp = base.copy(), base_exp
            else:
                result, result_exp = _rescale(result @ base, result_exp + base_exp)
        n >>= 1
        if not n:
            break
        base, base_exp = _rescale(base @ base, 2 * base_exp)
    assert result is not None
    return result, result_exp


def _rescale(a: np.ndarray, exp2: int) -> tuple[np.ndarray, int]:
    top = float(np.max(np.abs(a)))
    if top == 0.0 or not math.isfinite(top):
        return a, exp2
    _, e = math.frexp(top)
    if abs(e) < _SCALE_EXP:
        return a, exp2
    return np.ldexp(a, -e), exp2 + e


def _pelz_good_cdf(n: int, d: float) -> float:
    """P(D_n <= d) by Pelz and Good's series: K0 + K1/sqrt(n) + K2/n + K3/n^(3/2).

    Each K is a theta-like sum over k, summed until its terms vanish in float64.
    """
    z = d * math.sqrt(n)
    z2 = z * z
    z4 = z2 * z2
    z6 = z4 * z2
    z8 = z4 * z4
    pi2 = math.pi * math.pi
    pi4 = pi2 * pi2
    pi6 = pi4 * pi2
    w = pi2 / (2.0 * z2)  # exp(-w * (k + 1/2)^2) and exp(-w * k^2)

    k0 = k1 = k2a = k3a = 0.0
    for k in range(200):
        u = (k + 0.5) ** 2
        e = math.exp(-w * u)
        if e == 0.0:
            break
        k0 += e
        k1 += (pi2 * u - z2) * e
        k2a += (
            6.0 * z6 + 2.0 * z4 + pi2 * (2.0 * z4 - 5.0 * z2) * u + pi4 * (1.0 - 2.0 * z2) * u * u
        ) * e
        k3a += (
            pi6 * u**3 * (5.0 - 30.0 * z2)
            + pi4 * u * u * (-60.0 * z2 + 212.0 * z4)
            + pi2 * u * (135.0 * z4 - 96.0 * z6)
            - 30.0 * z6
            - 90.0 * z8
        ) * e
    k2b = k3b = 0.0
    for k in range(1, 200):
        u = float(k * k)
        e = math.exp(-w * u)
        if e == 0.0:
            break
        k2b += pi2 * u * e
        k3b += (3.0 * pi2 * u * z2 - pi4 * u * u) * e

    # the sums in k + 1/2 run over k >= 0; K2's sum in k over every integer (twice k >= 1)
    c = math.sqrt(math.pi / 2.0)
    sqrt_n = math.sqrt(n)
    big_k0 = math.sqrt(2.0 * math.pi) / z * k0
    big_k1 = c / (3.0 * z4) * k1
    big_k2 = c / (36.0 * z**7) * k2a - c / (36.0 * z**3) * 2.0 * k2b
    big_k3 = c * (k3a / (3240.0 * z**10) + k3b / (108.0 * z6))
    return big_k0 + big_k1 / sqrt_n + big_k2 / n + big_k3 / (n * sqrt_n)

"""Embedding drift: a cross-MMD test on random Fourier features, calibrated without permutations.

The kernel is a Gaussian, k(x, y) = exp(-|x - y|^2 / (2 s^2)), with s the median pairwise
distance of (a sample of) the reference. It is approximated by D random Fourier features,
phi(x) = sqrt(2 / D) cos(x W + b), W ~ N(0, I / s^2), b ~ U[0, 2 pi) (Rahimi & Recht), so
that phi(x) . phi(y) ~= k(x, y) and MMD^2 ~= |mean phi(X) - mean phi(Y)|^2.

The p-value is that of the cross-MMD of Shekhar, Kim & Ramdas (2022): split the window X
and the reference R in two halves each; the second halves give a witness
w = mean phi(X2) - mean phi(R2); the first halves are projected on it, a_i = phi(x_i) . w
and b_j = phi(r_j) . w. Given the second halves, under no drift the a's and b's are i.i.d.
from one distribution, so the studentized difference of their means

    T = (mean a - mean b) / sqrt(var a / n1 + var b / m1)

is asymptotically standard normal: the p-value is 1 - Phi(T), with no permutations. Drift
moves the window's features towards w, so the test is one-sided.

Nothing here needs the reference rows after it is loaded: mean phi(R2), mean phi(R1) and the
second moments of phi(R1) (a D x D matrix) give mean b and var b for any w, exactly. A check
is one pass over the window's features (O(n d D)); the reference costs O(D^2) per check.
The heavy part (the features) goes through a `FeatureBackend`, numpy here and torch in
`sidecar.embedding`. See docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

TEST_NAME = "rff_cross_mmd"


@dataclass(frozen=True, eq=False)
class FourierMap:
    """The random Fourier features of a Gaussian kernel of bandwidth `bandwidth`."""

    omega: np.ndarray
    """(d, D) float32: the frequencies, N(0, 1 / bandwidth^2) each."""
    phase: np.ndarray
    """(D,) float32: uniform on [0, 2 pi)."""
    bandwidth: float

    @property
    def dim(self) -> int:
        return int(self.omega.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.omega.shape[1])

    @property
    def scale(self) -> float:
        return math.sqrt(2.0 / self.n_features)


def fourier_map(dim: int, n_features: int, bandwidth: float, seed: int) -> FourierMap:
    rng = np.random.default_rng(seed)
    omega = (rng.standard_normal((dim, n_features)) / bandwidth).astype(np.float32)
    phase = rng.uniform(0.0, 2 * math.pi, n_features).astype(np.float32)
    return FourierMap(omega=omega, phase=phase, bandwidth=float(bandwidth))


def median_bandwidth(x: np.ndarray, max_rows: int = 1000, seed: int = 0) -> float:
    """The median heuristic: the median distance between distinct rows of a sample of `x`."""
    n = x.shape[0]
    if n > max_rows:
        idx = np.random.default_rng(seed).choice(n, max_rows, replace=False)
        x = x[np.sort(idx)]
    xs = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", xs, xs)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (xs @ xs.T)
    iu = np.triu_indices(xs.shape[0], k=1)
    dist = np.sqrt(np.maximum(d2[iu], 0.0))
    dist = dist[dist > 0]
    if dist.size == 0:
        return 1.0  # every row the same: any bandwidth; drift then shows at any scale
    return float(np.median(dist))


@dataclass(frozen=True)
class FeaturePass:
    """Sums over rows of one pass over phi(x) (float64 accumulators)."""

    rows: int
    sum_phi: np.ndarray
    """(D,)"""
    sum_proj: float = 0.0
    """Sum of phi(x) . w, when a witness w was given."""
    sum_proj_sq: float = 0.0
    gram: np.ndarray | None = None
    """(D, D) sum of phi(x) phi(x)^T, when asked for."""


class FeatureBackend(Protocol):
    """Computes feature sums of rows; numpy here, torch (CPU or CUDA) in sidecar.embedding."""

    @property
    def device(self) -> str:
        """What the `device` label says: `numpy`, `cpu`, `cuda:0`, ..."""
        ...

    def feature_pass(
        self, x: np.ndarray, fmap: FourierMap, witness: np.ndarray | None, gram: bool
    ) -> FeaturePass: ...


class NumpyBackend:
    """Features in float32 chunks of `chunk_rows` rows, sums in float64."""

    def __init__(self, chunk_rows: int = 4096) -> None:
        self.chunk_rows = max(1, chunk_rows)

    @property
    def device(self) -> str:
        return "numpy"

    def feature_pass(
        self, x: np.ndarray, fmap: FourierMap, witness: np.ndarray | None, gram: bool
    ) -> FeaturePass:
        d_feat = fmap.n_features
        sum_phi = np.zeros(d_feat)
        g = np.zeros((d_feat, d_feat)) if gram else None
        w32 = None if witness is None else np.asarray(witness, dtype=np.float32)
        s1 = s2 = 0.0
        scale = np.float32(fmap.scale)
        for start in range(0, x.shape[0], self.chunk_rows):
            chunk = np.asarray(x[start : start + self.chunk_rows], dtype=np.float32)
            phi = chunk @ fmap.omega
            phi += fmap.phase
            np.cos(phi, out=phi)
            phi *= scale
            sum_phi += phi.sum(axis=0, dtype=np.float64)
            if g is not None:
                g += phi.T @ phi
            if w32 is not None:
                a = (phi @ w32).astype(np.float64)
                s1 += float(a.sum())
                s2 += float(a @ a)
        return FeaturePass(int(x.shape[0]), sum_phi, s1, s2, g)


@dataclass(frozen=True, eq=False)
class EmbeddingReference:
    """What a check needs of the reference embeddings; the rows themselves are not kept."""

    fmap: FourierMap
    backend: FeatureBackend
    rows: int
    """Finite reference rows used."""
    centroid: np.ndarray
    """(d,) float64: the mean of every reference row."""
    n1: int
    mean1: np.ndarray
    """(D,) mean phi of the first half (even rows)."""
    second1: np.ndarray
    """(D, D) mean phi phi^T of the first half."""
    n2: int
    mean2: np.ndarray
    """(D,) mean phi of the second half (odd rows)."""

    @property
    def dim(self) -> int:
        return self.fmap.dim

    @property
    def mean(self) -> np.ndarray:
        """mean phi over the whole reference."""
        out: np.ndarray = (self.n1 * self.mean1 + self.n2 * self.mean2) / (self.n1 + self.n2)
        return out

    @property
    def nbytes(self) -> int:
        return int(
            self.fmap.omega.nbytes
            + self.fmap.phase.nbytes
            + self.centroid.nbytes
            + self.mean1.nbytes
            + self.second1.nbytes
            + self.mean2.nbytes
        )


def build_reference(
    rows: np.ndarray,
    backend: FeatureBackend,
    *,
    n_features: int = 1024,
    bandwidth_rows: int = 1000,
    seed: int = 0,
) -> EmbeddingReference:
    """Reduce reference rows (n, d) to the test's statistics; needs at least 4 rows."""
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"reference embeddings of shape {x.shape}: need (n >= 4, d)")
    bandwidth = median_bandwidth(x, bandwidth_rows, seed)
    fmap = fourier_map(x.shape[1], n_features, bandwidth, seed)
    first = backend.feature_pass(x[0::2], fmap, None, gram=True)
    second = backend.feature_pass(x[1::2], fmap, None, gram=False)
    assert first.gram is not None
    return EmbeddingReference(
        fmap=fmap,
        backend=backend,
        rows=int(x.shape[0]),
        centroid=x.mean(axis=0, dtype=np.float64),
        n1=first.rows,
        mean1=first.sum_phi / first.rows,
        second1=first.gram / first.rows,
        n2=second.rows,
        mean2=second.sum_phi / second.rows,
    )


@dataclass(frozen=True)
class MmdResult:
    """One embedding test of a window against the reference."""

    statistic: float
    """T, standard normal under no drift."""
    pvalue: float
    """One-sided: 1 - Phi(T)."""
    mmd2: float
    """|mean phi(window) - mean phi(reference)|^2, the (biased) RFF estimate of MMD^2."""
    centroid_distance: float
    samples: int


def normal_sf(z: float) -> float:
    """1 - Phi(z), accurate in the upper tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def cross_mmd_test(ref: EmbeddingReference, window: np.ndarray) -> MmdResult:
    """The window (n >= 4 rows) against the reference; see the module docstring."""
    x = np.asarray(window, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != ref.dim:
        raise ValueError(f"window embeddings of shape {x.shape}: expected (n, {ref.dim})")
    if x.shape[0] < 4:
        raise ValueError(f"window of {x.shape[0]} embeddings: the test needs at least 4")
    centroid = float(np.linalg.norm(x.mean(axis=0, dtype=np.float64) - ref.centroid))
    # even rows are the first half, odd rows the second: under no drift any fixed split of
    # exchangeable rows is valid, and under drift in time both halves see the same mixture
    second = ref.backend.feature_pass(x[1::2], ref.fmap, None, gram=False)
    w = second.sum_phi / second.rows - ref.mean2
    first = ref.backend.feature_pass(x[0::2], ref.fmap, w, gram=False)
    n1 = first.rows
    mean_a = first.sum_proj / n1
    var_a = max(first.sum_proj_sq / n1 - mean_a * mean_a, 0.0) * n1 / max(n1 - 1, 1)
    mean_b = float(ref.mean1 @ w)
    var_b = max(float(w @ ref.second1 @ w) - mean_b * mean_b, 0.0)
    se = math.sqrt(var_a / n1 + var_b / ref.n1)
    stat = (mean_a - mean_b) / se if se > 0 else 0.0
    if not math.isfinite(stat):
        stat = 0.0
    mean_x = (first.sum_phi + second.sum_phi) / (n1 + second.rows)
    mmd2 = float(np.sum((mean_x - ref.mean) ** 2))
    return MmdResult(
        statistic=float(stat),
        pvalue=normal_sf(stat),
        mmd2=mmd2,
        centroid_distance=centroid,
        samples=int(x.shape[0]),
    )


def exact_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The unbiased quadratic-time MMD^2 with a Gaussian kernel (for benchmarks and tests)."""
    x64 = np.asarray(x, dtype=np.float64)
    y64 = np.asarray(y, dtype=np.float64)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sa = np.einsum("ij,ij->i", a, a)
        sb = np.einsum("ij,ij->i", b, b)
        d2 = np.maximum(sa[:, None] + sb[None, :] - 2.0 * (a @ b.T), 0.0)
        out: np.ndarray = np.exp(-d2 / (2.0 * bandwidth * bandwidth))
        return out

    n, m = x64.shape[0], y64.shape[0]
    kxx, kyy, kxy = k(x64, x64), k(y64, y64), k(x64, y64)
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def permutation_pvalue(
    x: np.ndarray, y: np.ndarray, bandwidth: float, permutations: int, seed: int = 0
) -> tuple[float, float]:
    """The exact quadratic-time MMD^2 and its permutation p-value (the alibi-detect anchor)."""
    z = np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)])
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", z, z)
    kz = np.exp(
        -np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
        / (2.0 * bandwidth * bandwidth)
    )
    np.fill_diagonal(kz, 0.0)
    total = z.shape[0]
    m = total - n

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        return float(
            kz[np.ix_(a, a)].sum() / (n * (n - 1))
            + kz[np.ix_(b, b)].sum() / (m * (m - 1))
            - 2.0 * kz[np.ix_(a, b)].mean()
        )

    observed = stat(np.arange(total))
    rng = np.random.default_rng(seed)
    exceed = sum(stat(rng.permutation(total)) >= observed for _ in range(permutations))
    return observed, (1 + exceed) / (1 + permutations)

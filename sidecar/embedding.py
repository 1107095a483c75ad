"""Embedding drift outside the pure statistics: the device (torch or numpy), the reference
built from rows, and the checks on a batch of events' embeddings.

torch is optional. With `device: auto` the features are computed by torch when it is
installed, on CUDA when a GPU is visible, else on the CPU; without torch, by numpy.
`device: cpu` or `cuda` needs torch (the config is refused without it, and a missing GPU
fails the baseline load); `device: numpy` never uses torch. On a device, the memory a
pass takes is bounded by `max_device_mb`: rows are processed in chunks sized to fit.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.stats.mmd import (
    EmbeddingReference,
    FeatureBackend,
    FeaturePass,
    FourierMap,
    NumpyBackend,
    build_reference,
)

DEVICES = ("auto", "numpy", "cpu", "cuda")


class EmbeddingDeviceError(RuntimeError):
    """The configured device cannot be used (torch missing, no GPU)."""


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class EmbeddingOptions:
    """A model's `embedding:` settings as the statistics need them."""

    dim: int
    device: str = "auto"
    n_features: int = 1024
    max_device_mb: int = 256
    bandwidth_rows: int = 1000
    seed: int = 0


class TorchBackend:
    """Features on a torch device, in chunks so that one pass stays within a byte budget."""

    def __init__(self, device: str, max_device_bytes: int) -> None:
        import torch  # noqa: PLC0415 (optional, and heavy: only when a model asks for it)

        self._torch = torch
        self._device = torch.device(device)
        self.max_device_bytes = max_device_bytes
        self._maps: dict[int, tuple[FourierMap, Any, Any]] = {}

    @property
    def device(self) -> str:
        d = self._device
        if d.type == "cuda":
            return f"cuda:{d.index if d.index is not None else self._torch.cuda.current_device()}"
        return d.type

    def _on_device(self, fmap: FourierMap) -> tuple[Any, Any]:
        got = self._maps.get(id(fmap))
        if got is None or got[0] is not fmap:
            t = self._torch
            got = (
                fmap,
                t.from_numpy(fmap.omega).to(self._device),
                t.from_numpy(fmap.phase).to(self._device),
            )
            self._maps = {id(fmap): got}  # one map per reference: keep the latest only
        return got[1], got[2]

    def chunk_rows(self, fmap: FourierMap, gram: bool) -> int:
        """Rows per chunk: the input and its features in float32, after the fixed part (the
        map, and the float32 and float64 Gram matrices when asked for)."""
        d, n_feat = fmap.dim, fmap.n_features
        fixed = 4 * (d * n_feat + n_feat) + (12 * n_feat * n_feat if gram else 0)
        per_row = 4 * (d + 2 * n_feat)
        return max(256, (self.max_device_bytes - fixed) // per_row)

    def feature_pass(
        self, x: np.ndarray, fmap: FourierMap, witness: np.ndarray | None, gram: bool
    ) -> FeaturePass:
        t = self._torch
        omega, phase = self._on_device(fmap)
        n_feat = fmap.n_features
        dev = self._device
        sum_phi = t.zeros(n_feat, dtype=t.float64, device=dev)
        g = t.zeros((n_feat, n_feat), dtype=t.float64, device=dev) if gram else None
        w = None if witness is None else t.from_numpy(np.asarray(witness, dtype=np.float32)).to(dev)
        s1 = t.zeros((), dtype=t.float64, device=dev)
        s2 = t.zeros((), dtype=t.float64, device=dev)
        step = self.chunk_rows(fmap, gram)
        with t.inference_mode():
            for start in range(0, x.shape[0], step):
                chunk = np.ascontiguousarray(x[start : start + step], dtype=np.float32)
                xc = t.from_numpy(chunk).to(dev, non_blocking=False)
                phi = t.addmm(phase, xc, omega)
                phi.cos_().mul_(fmap.scale)
                sum_phi += phi.sum(dim=0, dtype=t.float64)
                if g is not None:
                    g += (phi.T @ phi).to(t.float64)
                if w is not None:
                    a = (phi @ w).to(t.float64)
                    s1 += a.sum()
                    s2 += a @ a
                del phi, xc
        return FeaturePass(
            rows=int(x.shape[0]),
            sum_phi=sum_phi.cpu().numpy(),
            sum_proj=float(s1.item()),
            sum_proj_sq=float(s2.item()),
            gram=None if g is None else g.cpu().numpy(),
        )


def select_backend(device: str, max_device_mb: int = 256) -> FeatureBackend:
    """The backend for a configured `device` (see the module docstring)."""
    if device not in DEVICES:
        raise EmbeddingDeviceError(f"embedding device {device!r}: expected one of {DEVICES}")
    budget = max(1, max_device_mb) << 20
    if device == "numpy" or (device == "auto" and not torch_installed()):
        # numpy chunks are bounded the same way (host memory, and no device to share)
        return NumpyBackend(chunk_rows=max(256, budget // (4 * 3 * 1024)))
    if not torch_installed():
        raise EmbeddingDeviceError(
            f"embedding device {device!r} needs torch, which is not installed "
            "(install torch, or set embedding.device: numpy or auto)"
        )
    import torch  # noqa: PLC0415 (optional, and heavy: only when a model asks for it)

    if device == "cuda" and not torch.cuda.is_available():
        raise EmbeddingDeviceError("embedding device 'cuda': no CUDA GPU is visible")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TorchBackend(device, budget)


def reference_from_rows(rows: np.ndarray, opts: EmbeddingOptions) -> EmbeddingReference:
    """The reference statistics of finite rows (n, dim); raises ValueError on too few."""
    backend = select_backend(opts.device, opts.max_device_mb)
    return build_reference(
        rows,
        backend,
        n_features=opts.n_features,
        bandwidth_rows=opts.bandwidth_rows,
        seed=opts.seed,
    )


def embedding_matrix(
    values: list[list[float] | None], dim: int
) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    """A batch's embeddings as (n, dim) float32 (NaN rows where absent) and the rows to
    reject: {index: (reason, detail)}. `embedding_dim` for a wrong length, `invalid_value`
    for a value that is not finite (NaN, inf, or beyond float32's range)."""
    n = len(values)
    out = np.full((n, dim), np.nan, dtype=np.float32)
    bad: dict[int, tuple[str, str]] = {}
    present = [i for i, v in enumerate(values) if v is not None]
    if not present:
        return out, bad
    good = []
    for i in present:
        v = values[i]
        assert v is not None
        if len(v) != dim:
            bad[i] = ("embedding_dim", f"embedding of {len(v)} values, expected {dim}")
        else:
            good.append(i)
    if good:
        rows = [values[i] for i in good]
        with np.errstate(over="ignore", invalid="ignore"):
            block = np.array(rows, dtype=np.float64).astype(np.float32)
        finite = np.isfinite(block).all(axis=1)
        idx = np.asarray(good)
        out[idx[finite]] = block[finite]
        for i in idx[~finite].tolist():
            bad[i] = ("invalid_value", "embedding holds a value that is not a finite float32")
    return out, bad

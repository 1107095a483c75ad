"""Embedding drift: speed, calibration and power of the cross-MMD on random Fourier
features, beside an exact quadratic-time MMD permutation test on subsamples.

- speed: a window of 10,000 x 768 against a 50,000 x 768 reference, per backend (numpy,
  torch on the CPU, torch on CUDA when visible): the reference's preparation once, then
  repeated checks (median, min-max).
- calibration: no-drift checks, each with a fresh reference and window, at reduced sizes
  (--calib-*); the share flagged at alpha = 0.05 should be within [0.03, 0.07].
- power: N(0, I_768), a shift of 0.02 in every dimension at 10k vs 50k, and a shift
  confined to 5% of the dimensions; one reference, fresh windows.
- side by side: the same shifts at a subsample the exact test can afford (--exact-n per
  side, --permutations), both tests on the same rows.
- memory: bytes of the window's ring buffer against the float32 rows it keeps, and of the
  reference statistics.

    python bench/embedding_bench.py [--quick] [--json FILE] [--device numpy|cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.embedding import select_backend, torch_installed
from sidecar.embedding_window import EmbeddingWindow
from sidecar.stats.mmd import (
    FeatureBackend,
    NumpyBackend,
    build_reference,
    cross_mmd_test,
    median_bandwidth,
    permutation_pvalue,
)

ALPHA = 0.05


def _normal(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((n, d), dtype=np.float32)


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def backends(which: str) -> list[FeatureBackend]:
    names = ["numpy", "cpu", "cuda"] if which == "all" else [which]
    out: list[FeatureBackend] = []
    for name in names:
        if name in ("cpu", "cuda") and not torch_installed():
            continue
        if name == "cuda":
            import torch

            if not torch.cuda.is_available():
                continue
        out.append(select_backend(name, 256))
    return out


def speed(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    ref_rows = _normal(rng, args.ref, args.dim)
    window = _normal(rng, args.window, args.dim)
    out = []
    for backend in backends(args.device):
        t0 = time.perf_counter()
        ref = build_reference(ref_rows, backend, n_features=args.features)
        prep = time.perf_counter() - t0
        cross_mmd_test(ref, window)  # warm: device transfer of the map, kernels
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cross_mmd_test(ref, window)  # ends with .cpu() copies: the GPU has finished
            times.append((time.perf_counter() - t0) * 1000)
        row = {
            "device": backend.device,
            "reference_prep_s": prep,
            "check_ms": _summary(times),
            "reference_stats_bytes": ref.nbytes,
        }
        if backend.device.startswith("cuda"):
            import torch

            row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
        out.append(row)
        print(
            f"speed  {backend.device:7s} prep {prep:6.2f} s   check median "
            f"{row['check_ms']['median']:8.1f} ms (min {row['check_ms']['min']:.1f}, "
            f"max {row['check_ms']['max']:.1f}) over {args.repeats}"
        )
    return out


def calibration(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    backend = NumpyBackend()
    p = []
    t0 = time.perf_counter()
    for _ in range(args.calib_runs):
        ref = build_reference(
            _normal(rng, args.calib_ref, args.calib_dim),
            backend,
            n_features=args.calib_features,
            seed=int(rng.integers(1 << 30)),
        )
        p.append(cross_mmd_test(ref, _normal(rng, args.calib_window, args.calib_dim)).pvalue)
    pv = np.array(p)
    rate = float((pv < ALPHA).mean())
    se = float(np.sqrt(ALPHA * (1 - ALPHA) / len(pv)))
    print(
        f"calib  {len(pv)} no-drift runs at {args.calib_window} x {args.calib_dim} vs "
        f"{args.calib_ref}: flagged {rate:.3f} at alpha {ALPHA} (binomial sd {se:.3f}); "
        f"rate at 0.01 {float((pv < 0.01).mean()):.3f}  [{time.perf_counter() - t0:.0f} s]"
    )
    return {
        "runs": len(pv),
        "window": args.calib_window,
        "reference": args.calib_ref,
        "dim": args.calib_dim,
        "features": args.calib_features,
        "alpha": ALPHA,
        "flagged_rate": rate,
        "flagged_rate_0.01": float((pv < 0.01).mean()),
        "binomial_sd": se,
    }


def _shifted(rng: np.random.Generator, n: int, d: int, shift: float, share: float) -> np.ndarray:
    x = _normal(rng, n, d)
    k = max(1, round(share * d))
    x[:, :k] += shift
    return x


def power(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    backend = backends(args.device)[0] if args.device != "all" else NumpyBackend()
    ref = build_reference(_normal(rng, args.ref, args.dim), backend, n_features=args.features)
    out = []
    for shift, share in ((0.02, 1.0), (args.sparse_shift, 0.05)):
        hits = 0
        for _ in range(args.power_runs):
            hits += (
                cross_mmd_test(ref, _shifted(rng, args.window, args.dim, shift, share)).pvalue
                < ALPHA
            )
        row = {
            "shift": shift,
            "share_of_dims": share,
            "window": args.window,
            "reference": args.ref,
            "dim": args.dim,
            "runs": args.power_runs,
            "detected_rate": hits / args.power_runs,
        }
        out.append(row)
        print(
            f"power  shift {shift} in {share:.0%} of {args.dim} dims, {args.window} vs "
            f"{args.ref}: detected {hits}/{args.power_runs}"
        )
    return out


def side_by_side(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Both tests on the same subsampled rows: power and time per test."""
    out = []
    n = args.exact_n
    for shift, share in (
        (0.0, 1.0),
        (0.02, 1.0),
        (args.sparse_shift, 0.05),
        (args.exact_shift, 1.0),
    ):
        rff_hits = exact_hits = 0
        rff_t: list[float] = []
        exact_t: list[float] = []
        for _ in range(args.exact_runs):
            y = _normal(rng, n, args.dim)
            x = _shifted(rng, n, args.dim, shift, share)
            t0 = time.perf_counter()
            ref = build_reference(
                y, NumpyBackend(), n_features=args.features, seed=int(rng.integers(1 << 30))
            )
            rff_hits += cross_mmd_test(ref, x).pvalue < ALPHA
            rff_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, p = permutation_pvalue(
                x, y, median_bandwidth(y), args.permutations, seed=int(rng.integers(1 << 30))
            )
            exact_hits += p < ALPHA
            exact_t.append(time.perf_counter() - t0)
        row = {
            "shift": shift,
            "share_of_dims": share,
            "n_per_side": n,
            "dim": args.dim,
            "runs": args.exact_runs,
            "permutations": args.permutations,
            "rff_cross_mmd_rate": rff_hits / args.exact_runs,
            "exact_permutation_rate": exact_hits / args.exact_runs,
            "rff_s": statistics.median(rff_t),
            "exact_s": statistics.median(exact_t),
        }
        out.append(row)
        print(
            f"vs     shift {shift} in {share:.0%} dims, {n} per side: rff cross-MMD "
            f"{rff_hits}/{args.exact_runs} ({row['rff_s']:.2f} s incl. prep), exact MMD "
            f"+ {args.permutations} perms {exact_hits}/{args.exact_runs} "
            f"({row['exact_s']:.2f} s)"
        )
    return out


def memory(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    w = EmbeddingWindow(args.window, args.dim)
    w.append(_normal(rng, args.window, args.dim), np.zeros(args.window))
    kept = args.window * args.dim * 4
    ratio = w.nbytes / kept
    print(
        f"memory window {w.nbytes / 2**20:.1f} MiB for {kept / 2**20:.1f} MiB of float32 "
        f"rows: {ratio:.3f}x"
    )
    return {"window_bytes": w.nbytes, "float32_bytes": kept, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--device", default="all", choices=["all", "numpy", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="only the timing (bench/gpu_check.py runs this with --device cuda)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    args.dim = 64 if q else 768
    args.ref = 5_000 if q else 50_000
    args.window = 1_000 if q else 10_000
    args.features = 256 if q else 1024
    args.repeats = 3 if q else args.repeats
    args.calib_runs = 100 if q else 600
    args.calib_dim, args.calib_ref, args.calib_window = (16, 1000, 300) if q else (64, 4000, 1000)
    args.calib_features = 64 if q else 256
    args.power_runs = 5 if q else 50
    args.sparse_shift = 0.3 if q else 0.1
    args.exact_n = 200 if q else 1000
    args.exact_runs = 3 if q else 10
    args.permutations = 49 if q else 100
    args.exact_shift = 0.3 if q else 0.1
    rng = np.random.default_rng(args.seed)
    doc: dict[str, Any] = {
        "bench": "embedding",
        "quick": q,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
    }
    if torch_installed():
        import torch

        doc["torch"] = torch.__version__
        doc["cuda"] = torch.cuda.is_available()
    doc["speed"] = speed(args, rng)
    if args.speed_only:
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2))
        return 0 if doc["speed"] else 2
    doc["calibration"] = calibration(args, rng)
    doc["power"] = power(args, rng)
    doc["side_by_side"] = side_by_side(args, rng)
    doc["memory"] = memory(args, rng)
    doc["summary"] = [
        *(
            {
                "case": f"check {args.window:,} x {args.dim} vs {args.ref:,} ({r['device']})",
                "value": r["check_ms"]["median"],
                "lo": r["check_ms"]["min"],
                "hi": r["check_ms"]["max"],
                "unit": "ms",
                "note": f"reference prep {r['reference_prep_s']:.1f} s",
            }
            for r in doc["speed"]
        ),
        {
            "case": "no-drift share flagged at 0.05",
            "value": doc["calibration"]["flagged_rate"],
            "unit": "",
            "note": f"{doc['calibration']['runs']} runs",
        },
        *(
            {
                "case": f"power, shift {r['shift']} in {r['share_of_dims']:.0%} of dims",
                "value": r["detected_rate"],
                "unit": "",
                "note": f"{r['runs']} runs",
            }
            for r in doc["power"]
        ),
        {
            "case": "window bytes / float32 rows",
            "value": doc["memory"]["ratio"],
            "unit": "x",
            "note": "",
        },
    ]
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

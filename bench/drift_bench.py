"""One full drift pass (check_model) against a plain loop of scipy.stats.ks_2samp + the guide's PSI.

Both run in the same process on the same data: a baseline of 50k rows, a window of 10k,
10, 100 and 1000 numeric features, a tenth of them shifted by 0.2 sigma. The KS
statistics and p-values of both must be equal. Prints median and min-max per side over
repeated runs, and the ratio of the medians.

    python bench/drift_bench.py [--quick] [--repeats N] [--json FILE]
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
import scipy
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.baseline import build_baseline
from sidecar.drift import DriftParams, WindowData, check_model


def guide_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """The monitoring guide's _calculate_psi, unchanged in substance."""
    _, bin_edges = np.histogram(reference, bins=bins)
    ref_percents = np.histogram(reference, bins=bin_edges)[0] / len(reference)
    curr_percents = np.histogram(current, bins=bin_edges)[0] / len(current)
    ref_percents = np.clip(ref_percents, 0.0001, 1)
    curr_percents = np.clip(curr_percents, 0.0001, 1)
    return float(np.sum((curr_percents - ref_percents) * np.log(curr_percents / ref_percents)))


def naive_pass(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature: scipy.stats.ks_2samp and the guide's PSI, in a Python loop."""
    k = ref.shape[1]
    d = np.empty(k)
    p = np.empty(k)
    psis = np.empty(k)
    for j in range(k):
        # method="asymp" is what "auto" picks above 10,000 values; explicit so that the
        # --quick sizes compare the same p-values
        r = scipy.stats.ks_2samp(ref[:, j], cur[:, j], method="asymp")
        d[j], p[j] = r.statistic, r.pvalue
        psis[j] = guide_psi(ref[:, j], cur[:, j])
    return d, p, psis


def spread(ts: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(ts) * 1e3,
        "min_ms": min(ts) * 1e3,
        "max_ms": max(ts) * 1e3,
    }


def run_case(features: int, rows: int, window: int, repeats: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(rows, features))
    cur = rng.normal(size=(window, features))
    shifted = max(1, features // 10)
    cur[:, :shifted] += 0.2
    baseline = build_baseline(
        "bench",
        numeric={f"f{j}": ref[:, j] for j in range(features)},
        categorical={},
        prediction=None,
        prediction_kind=None,
    )
    data = WindowData(numeric=cur, categorical=np.empty((window, 0), dtype=np.int32))
    params = DriftParams()

    result = check_model(baseline, data, params)  # warm-up, and the values to compare
    ours_d = np.array([f.ks_statistic for f in result.features], dtype=np.float64)
    ours_p = np.array([f.ks_pvalue for f in result.features], dtype=np.float64)
    ref_d, ref_p, _ = naive_pass(ref, cur)
    d_diff = float(np.max(np.abs(ours_d - ref_d)))
    p_diff = float(np.max(np.abs(ours_p - ref_p) / np.maximum(np.abs(ref_p), 1e-300)))
    if d_diff > 1e-12 or p_diff > 1e-12:
        raise SystemExit(f"{features} features: KS differs from scipy (D {d_diff}, p {p_diff})")

    ours: list[float] = []
    loop: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        check_model(baseline, data, params)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive_pass(ref, cur)
        loop.append(time.perf_counter() - t0)
    return {
        "features": features,
        "baseline_rows": rows,
        "window_rows": window,
        "repeats": repeats,
        "check_model": spread(ours),
        "scipy_loop": spread(loop),
        "ratio": statistics.median(ours) / statistics.median(loop),
        "ks_statistic_max_abs_diff": d_diff,
        "ks_pvalue_max_rel_diff": p_diff,
        "drifted_features": sum(f.drifted for f in result.features),
        "shifted_features": shifted,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    ap.add_argument("--features", default="10,100,1000", help="comma-separated feature counts")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)

    if args.quick:
        sizes, rows, window, repeats = [10], 5_000, 1_000, 2
    else:
        sizes = [int(x) for x in args.features.split(",")]
        rows, window, repeats = 50_000, 10_000, args.repeats

    results = [run_case(k, rows, window, repeats, args.seed) for k in sizes]

    print(f"baseline {rows} rows, window {window} rows, {repeats} repeats; times in ms")
    print(f"{'features':>8}  {'check_model median (min-max)':>30}  "
          f"{'ks_2samp+PSI loop median (min-max)':>36}  {'ratio':>6}  {'KS max |diff|':>13}")
    for r in results:
        a, b = r["check_model"], r["scipy_loop"]
        print(
            f"{r['features']:>8}  "
            f"{a['median_ms']:>12.1f} ({a['min_ms']:.1f}-{a['max_ms']:.1f})".ljust(40)
            + f"{b['median_ms']:>14.1f} ({b['min_ms']:.1f}-{b['max_ms']:.1f})".ljust(38)
            + f"{r['ratio']:>6.3f}  {r['ks_statistic_max_abs_diff']:>13.1e}"
        )
    if args.json:
        doc = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "machine": platform.machine(),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

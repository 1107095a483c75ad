"""One full drift pass (check_model) against a plain loop of scipy.stats.ks_2samp + the guide's PSI.

Both run in the same process on the same data: a baseline of 50k rows, a window of 10k,
10, 100 and 1000 numeric features, a tenth of them shifted by 0.2 sigma. The KS
statistics and p-values of both must be equal. Prints median and min-max per side over
repeated runs, and the ratio of the medians.

When Evidently is importable (the `bench` extra, best in its own environment), its
DataDriftPreset runs on the same data too: once with method="ks", whose p-values equal
ours at the full sizes (under 10,000 values scipy picks its exact method for Evidently, so
at --quick sizes they differ a little), and once with its defaults (normed Wasserstein
distance at these sizes).
Evidently takes seconds per pass, so it runs at --evidently-features sizes only.

    python bench/drift_bench.py [--quick] [--repeats N] [--json FILE]
    python bench/drift_bench.py --no-evidently
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

from sidecar.drift import DriftParams, WindowData, check_model
from sidecar.stats.reference import build_baseline


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


def evidently_pass(ref: np.ndarray, cur: np.ndarray, method: str | None) -> dict[str, float]:
    """Evidently's DataDriftPreset on the same matrices; returns its per-column values."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    cols = [f"f{j}" for j in range(ref.shape[1])]
    snapshot = Report([DataDriftPreset(method=method)]).run(
        current_data=pd.DataFrame(cur, columns=cols),
        reference_data=pd.DataFrame(ref, columns=cols),
    )
    values: dict[str, float] = {}
    for m in snapshot.dict()["metrics"]:
        column = m.get("config", {}).get("column")
        if column is not None:
            values[column] = float(m["value"])
    return values


def run_evidently(
    ref: np.ndarray, cur: np.ndarray, ours_p: np.ndarray, repeats: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, method in (("ks", "ks"), ("default", None)):
        times: list[float] = []
        values: dict[str, float] = {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            values = evidently_pass(ref, cur, method)
            times.append(time.perf_counter() - t0)
        entry: dict[str, Any] = spread(times)
        if label == "ks":
            ev_p = np.array([values[f"f{j}"] for j in range(ref.shape[1])])
            entry["pvalue_max_rel_diff"] = float(
                np.max(np.abs(ev_p - ours_p) / np.maximum(np.abs(ours_p), 1e-300))
            )
        out[label] = entry
    return out


def evidently_version() -> str | None:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import evidently
    except ImportError:
        return None
    return str(evidently.__version__)


def spread(ts: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(ts) * 1e3,
        "min_ms": min(ts) * 1e3,
        "max_ms": max(ts) * 1e3,
    }


def run_case(
    features: int, rows: int, window: int, repeats: int, seed: int, *, evidently_repeats: int = 0
) -> dict[str, Any]:
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
    evidently = run_evidently(ref, cur, ours_p, evidently_repeats) if evidently_repeats else None
    return {
        "evidently": evidently,
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
    ap.add_argument(
        "--evidently-features",
        default="10,100",
        help="feature counts at which Evidently runs too, when installed (default 10,100)",
    )
    ap.add_argument("--evidently-repeats", type=int, default=3)
    ap.add_argument("--no-evidently", action="store_true", help="leave Evidently out")
    args = ap.parse_args(argv)
    ev_version = None if args.no_evidently else evidently_version()
    ev_sizes = {int(x) for x in args.evidently_features.split(",") if x} if ev_version else set()

    if args.quick:
        sizes, rows, window, repeats = [10], 5_000, 1_000, 2
        ev_repeats = 1
    else:
        sizes = [int(x) for x in args.features.split(",")]
        rows, window, repeats = 50_000, 10_000, args.repeats
        ev_repeats = args.evidently_repeats

    results = [
        run_case(
            k,
            rows,
            window,
            repeats,
            args.seed,
            evidently_repeats=ev_repeats if k in ev_sizes else 0,
        )
        for k in sizes
    ]

    print(f"baseline {rows} rows, window {window} rows, {repeats} repeats; times in ms")
    print(
        f"{'features':>8}  {'check_model median (min-max)':>30}  "
        f"{'ks_2samp+PSI loop median (min-max)':>36}  {'ratio':>6}  {'KS max |diff|':>13}"
    )
    for r in results:
        a, b = r["check_model"], r["scipy_loop"]
        print(
            f"{r['features']:>8}  "
            f"{a['median_ms']:>12.1f} ({a['min_ms']:.1f}-{a['max_ms']:.1f})".ljust(40)
            + f"{b['median_ms']:>14.1f} ({b['min_ms']:.1f}-{b['max_ms']:.1f})".ljust(38)
            + f"{r['ratio']:>6.3f}  {r['ks_statistic_max_abs_diff']:>13.1e}"
        )
    if ev_version is None:
        print("Evidently: not installed (pip install -e '.[bench]' in a separate environment)")
    elif any(r["evidently"] for r in results):
        print(f"\nEvidently {ev_version} DataDriftPreset on the same data; times in ms")
        print(
            f"{'features':>8}  {'method=ks median (min-max)':>30}  {'ours/ks':>8}  "
            f"{'defaults median (min-max)':>30}  {'ours/defaults':>13}  "
            f"{'KS p max rel diff':>17}"
        )
        for r in results:
            ev = r["evidently"]
            if not ev:
                continue
            ours_ms = r["check_model"]["median_ms"]
            a, b = ev["ks"], ev["default"]
            print(
                f"{r['features']:>8}  "
                f"{a['median_ms']:>14.1f} ({a['min_ms']:.1f}-{a['max_ms']:.1f})".ljust(40)
                + f"{ours_ms / a['median_ms']:>8.4f}  "
                + f"{b['median_ms']:>14.1f} ({b['min_ms']:.1f}-{b['max_ms']:.1f})".ljust(32)
                + f"{ours_ms / b['median_ms']:>13.4f}  {a['pvalue_max_rel_diff']:>17.1e}"
            )
    if args.json:
        doc = {
            "evidently": ev_version,
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

"""Memory: daemon RSS against features x window size, after filling the window.

For each cell the real daemon holds one model of F numeric features with a small baseline
(1,000 rows, so the window dominates), is read for VmRSS once ready (the window's arrays are
allocated then), then receives enough events to fill its window and is read again (VmRSS
now, VmHWM the peak while ingesting). The floor is a daemon with no model at all; what a
cell costs is its filled RSS over that floor. The window's own arrays need about
window x (F + 3) x 8 bytes; the table shows how the measured cost compares with that.

Run:  python bench/memory_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_args,
    kill_quietly,
    proc_memory_kib,
    report,
    start_daemon,
    summary_row,
    table,
    wait_for,
)

MODEL = "memory"
BASELINE_ROWS = 1_000
DISTINCT_EVENTS = 1_000  # distinct encoded events, sent round-robin until the window is full
MIB = 1024.0


def encoded_events(n_features: int) -> list[bytes]:
    rng = np.random.default_rng(n_features)
    names = [f"feature_{i}" for i in range(n_features)]
    values = rng.random((DISTINCT_EVENTS, n_features)).tolist()
    enc = msgspec.json.Encoder()
    return [
        enc.encode({"model": MODEL, "features": dict(zip(names, row, strict=True)),
                    "prediction": float(i % 2), "confidence": 0.9, "latency_s": 0.01}) + b"\n"
        for i, row in enumerate(values)
    ]


def floor_kib(tmp: Path) -> int:
    """VmRSS of a ready daemon with no model: interpreter, libraries, servers."""
    d = start_daemon(tmp, {"models": [], "log": {"level": "warning"}}, wait_ready=True)
    try:
        return proc_memory_kib(d.proc.pid)["VmRSS"]
    finally:
        d.stop()
        kill_quietly(d)


def measure(tmp: Path, n_features: int, window: int, lines: list[bytes]) -> dict[str, Any]:
    from sidecar.baseline import write_baseline

    names = [f"feature_{i}" for i in range(n_features)]
    rng = np.random.default_rng(0)
    baseline = tmp / "baseline.parquet"
    write_baseline(
        baseline, MODEL,
        numeric={f: rng.random(BASELINE_ROWS) for f in names},
        categorical={}, prediction=rng.random(BASELINE_ROWS), prediction_kind="numeric",
    )
    extra = {
        "models": [{
            "name": MODEL,
            "baseline": {"path": str(baseline)},
            "features": [{"name": f, "type": "numeric"} for f in names],
            "prediction": {"type": "numeric"},
        }],
        "socket": {"max_features_per_event": max(1024, n_features)},
        # No drift pass during the measurement: this is the standing cost of the window.
        "drift": {"window_size": window, "min_samples": min(500, window), "interval_s": 3600},
        "state": {"snapshot_interval_s": 3600},
        "log": {"level": "warning"},
    }
    d = start_daemon(tmp, extra, wait_ready=True)
    try:
        idle = proc_memory_kib(d.proc.pid)
        sent = 0
        while sent < window:
            take = min(len(lines), window - sent)
            d.send(lines[:take])
            sent += take
        wait_for(
            lambda: d.scrape().value("ml_drift_window_samples", model_name=MODEL) == window,
            120, f"a full window of {window}",
        )
        full = proc_memory_kib(d.proc.pid)
    finally:
        d.stop()
        kill_quietly(d)
    arrays = window * (n_features + 3) * 8  # numeric, prediction, confidence, receive time
    return {
        "features": n_features,
        "window": window,
        "ready_rss_kib": idle["VmRSS"],
        "full_rss_kib": full["VmRSS"],
        "peak_rss_kib": full["VmHWM"],
        "window_arrays_kib": arrays / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv)
    features = (10,) if args.quick else (10, 100, 1000)
    windows = (200, 1_000) if args.quick else (1_000, 10_000)
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
        floor = floor_kib(Path(tmpdir))
    for f in features:
        lines = encoded_events(f)
        for w in windows:
            with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
                cells.append(measure(Path(tmpdir), f, w, lines))
            c = cells[-1]
            c["over_floor_kib"] = c["full_rss_kib"] - floor
            c["bytes_per_value"] = c["over_floor_kib"] * 1024 / (w * f)
            print(f"{f} features x window {w}: done", flush=True)

    rows = [[
        str(c["features"]), f"{c['window']:,}", f"{c['ready_rss_kib'] / MIB:.1f}",
        f"{c['full_rss_kib'] / MIB:.1f}", f"{c['peak_rss_kib'] / MIB:.1f}",
        f"{c['over_floor_kib'] / MIB:.1f}", f"{c['window_arrays_kib'] / MIB:.1f}",
        f"{c['bytes_per_value']:.1f}",
    ] for c in cells]
    print()
    print(table(["features", "window", "ready MiB", "filled MiB", "peak MiB",
                 "over floor MiB", "window arrays MiB", "B/value over floor"], rows))
    print(f"\nfloor (a ready daemon with no model): {floor / MIB:.1f} MiB. RSS from "
          "/proc/PID/status (VmRSS; peak = VmHWM), one daemon per cell; B/value = over floor / "
          "(window x features).")
    summary = [summary_row("RSS floor, no model", floor / MIB, "MiB")]
    summary += [
        summary_row(f"RSS {c['features']} features x window {c['window']:,}",
                    c["full_rss_kib"] / MIB, "MiB",
                    f"{c['over_floor_kib'] / MIB:.0f} over floor; window arrays "
                    f"{c['window_arrays_kib'] / MIB:.1f}; peak {c['peak_rss_kib'] / MIB:.0f}")
        for c in cells
    ]
    report("memory", args, summary, floor_rss_kib=floor, cells=cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Startup: time from process start to /readyz 200 with a 50k x 100 baseline parquet.

Variants, interleaved per repeat, each a fresh daemon on a fresh state folder:

- stored statistics: the file as `sidecar.baseline.write_baseline` writes it (quantile
  edges, shares and counts in the parquet metadata, so loading only sorts the columns);
- no stored statistics: the same columns written with plain pyarrow, so the daemon
  computes every reference statistic at load;
- no baseline: the same model capturing its baseline from live traffic, timed to
  /healthz 200 (imports, sockets, HTTP): the floor under the other two.

RSS (VmRSS) is read once the daemon is ready.

Run:  python bench/startup_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Spread,
    bench_args,
    kill_quietly,
    proc_memory_kib,
    report,
    start_daemon,
    summary_row,
    table,
    write_config,
)

MODEL = "startup"
VARIANTS = ("stored statistics", "no stored statistics", "no baseline")


def write_files(tmp: Path, rows: int, n_features: int) -> tuple[Path, Path, list[str]]:
    """The same data twice: with the sidecar's stored statistics, and as plain parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidecar.baseline import write_baseline

    names = [f"feature_{i}" for i in range(n_features)]
    rng = np.random.default_rng(0)
    numeric = {f: rng.normal(i % 7, 1 + i % 3, rows) for i, f in enumerate(names)}
    prediction = rng.random(rows)
    stored = tmp / "baseline-stored.parquet"
    write_baseline(
        stored,
        MODEL,
        numeric=numeric,
        categorical={},
        prediction=prediction,
        prediction_kind="numeric",
    )
    plain = tmp / "baseline-plain.parquet"
    pq.write_table(pa.table({**numeric, "prediction": prediction}), plain, compression="zstd")
    return stored, plain, names


def start_once(tmp: Path, baseline: Path | None, names: list[str]) -> tuple[float, dict[str, int]]:
    source: dict[str, Any] = {"path": str(baseline)} if baseline else {"capture": 1000}
    extra = {
        "models": [
            {
                "name": MODEL,
                "baseline": source,
                "features": [{"name": f, "type": "numeric"} for f in names],
                "prediction": {"type": "numeric"},
            }
        ],
        "log": {"level": "warning"},
    }
    config, _ = write_config(tmp, extra)
    t0 = time.perf_counter()
    d = start_daemon(tmp, config_path=config, wait_ready=baseline is not None)
    seconds = time.perf_counter() - t0
    try:
        mem = proc_memory_kib(d.proc.pid)
        if baseline is not None:
            info = d.scrape()
            if info.value("drift_sidecar_baseline_ready", model_name=MODEL) != 1:
                raise RuntimeError("ready without a baseline")
    finally:
        d.stop()
        kill_quietly(d)
    return seconds, mem


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, help="baseline rows (default 50000; quick 5000)")
    p.add_argument("--features", type=int, help="baseline features (default 100; quick 20)")


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv, extra_args)
    rows = args.rows or (5_000 if args.quick else 50_000)
    n_features = args.features or (20 if args.quick else 100)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rss: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmpdir:
        tmp = Path(tmpdir)
        stored, plain, names = write_files(tmp, rows, n_features)
        sizes = {
            "stored statistics": stored.stat().st_size,
            "no stored statistics": plain.stat().st_size,
        }
        files: dict[str, Path | None] = {
            "stored statistics": stored,
            "no stored statistics": plain,
            "no baseline": None,
        }
        for r in range(args.repeats):
            for v in VARIANTS:
                run_dir = tmp / f"run-{r}-{VARIANTS.index(v)}"
                run_dir.mkdir()
                s, mem = start_once(run_dir, files[v], names)
                seconds[v].append(s)
                rss[v].append(mem["VmRSS"] / 1024)

    spreads = {v: Spread.of(seconds[v]) for v in VARIANTS}
    table_rows = []
    summary = []
    for v in VARIANTS:
        what = "/healthz" if v == "no baseline" else "/readyz"
        size = f"{sizes[v] / 2**20:.1f}" if v in sizes else "-"
        table_rows.append([v, what, spreads[v].fmt(), f"{Spread.of(rss[v]).median:.0f}", size])
        summary.append(
            summary_row(
                f"startup to {what}, {v}",
                spreads[v],
                "s",
                f"{rows:,} x {n_features} baseline" if v in sizes else "",
            )
        )
    print(table(["baseline", "until", "seconds", "RSS MiB", "file MiB"], table_rows))
    print(
        f"\n{rows:,} rows x {n_features} numeric features + prediction; median (min-max) of "
        f"{args.repeats} starts, from process start to the first 200 (polled every 20 ms)."
    )
    report(
        "startup",
        args,
        summary,
        rows=rows,
        features=n_features,
        seconds={v: spreads[v] for v in VARIANTS},
        rss_mib={v: Spread.of(rss[v]) for v in VARIANTS},
        file_bytes=sizes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scrape: time and size of GET /metrics (text and OpenMetrics) for 10, 100 and 1,000 features.

For each size the real daemon holds one model with a baseline and a full window, and has
finished a drift check, so every series is present: the guide's histograms, the drift
gauges and the fleet-wide bin counters. Scrapes are timed at the client over a kept-alive
HTTP connection, right after the first drift check (checks are 4 s apart; scrapes of one
size take well under that, so they rarely overlap a check).

Loop lag: while the scrapes of a format run, a second client sends GET /healthz back to back
on its own connection. /healthz does no work, so its round trip is the wait for the event
loop plus a constant; the table gives the slowest probe during the scrapes and the median
probe while the daemon is idle. A scrape that held the loop for X ms would show a probe of
at least X ms.

Run:  python bench/scrape_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Spread,
    bench_args,
    kill_quietly,
    parse_metrics,
    report,
    start_daemon,
    summary_row,
    table,
    wait_for,
)

MODEL = "scrape"
WINDOW = 1_000
BASELINE_ROWS = 2_000
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def start(tmp: Path, n_features: int, interval_s: float) -> Any:
    from sidecar.baseline import write_baseline

    names = [f"feature_{i}" for i in range(n_features)]
    rng = np.random.default_rng(n_features)
    baseline = tmp / "baseline.parquet"
    write_baseline(
        baseline,
        MODEL,
        numeric={f: rng.random(BASELINE_ROWS) for f in names},
        categorical={},
        prediction=rng.random(BASELINE_ROWS),
        prediction_kind="numeric",
    )
    extra = {
        "models": [
            {
                "name": MODEL,
                "version": "1.0.0",
                "baseline": {"path": str(baseline)},
                "features": [{"name": f, "type": "numeric"} for f in names],
                "prediction": {"type": "numeric"},
            }
        ],
        "socket": {"max_features_per_event": max(1024, n_features)},
        "drift": {"window_size": WINDOW, "min_samples": 200, "interval_s": interval_s},
        "state": {"snapshot_interval_s": 3600},
        "log": {"level": "warning"},
    }
    d = start_daemon(tmp, extra, wait_ready=True)
    values = rng.random((WINDOW, n_features)).tolist()
    preds = rng.random(WINDOW).tolist()
    enc = msgspec.json.Encoder()
    d.send(
        enc.encode(
            {
                "model": MODEL,
                "features": dict(zip(names, row, strict=True)),
                "prediction": preds[i],
                "confidence": 0.9,
                "latency_s": 0.01,
                "trace_id": f"{i:032x}",
            }
        )
        for i, row in enumerate(values)
    )
    return d, names


def wait_checked(d: Any, n_features: int, timeout: float) -> dict[str, int]:
    """Until a drift check has filled every drift series; returns the series counts."""

    def ready() -> dict[str, int] | None:
        m = parse_metrics(d.get("/metrics")[1].decode())
        counts = {
            "psi": len(m.series("ml_feature_drift_psi")),
            "ks": len(m.series("ml_feature_drift_ks_statistic")),
            "bins": len(m.series("ml_feature_bin_events_total")),
            "histograms": len(m.series("ml_feature_value_count")),
        }
        ok = (
            counts["psi"] == counts["ks"] == counts["histograms"] == n_features
            and counts["bins"] >= n_features
            and m.value("ml_drift_window_samples", model_name=MODEL) == WINDOW
        )
        return counts if ok else None

    counts: dict[str, int] = wait_for(ready, timeout, f"a drift check over {n_features} features")
    return counts


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def scrape_once(conn: http.client.HTTPConnection, accept: str | None) -> tuple[float, bytes]:
    headers = {"Accept": accept} if accept else {}
    t0 = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    r = conn.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    if r.status != 200:
        raise RuntimeError(f"/metrics answered {r.status}")
    return dt, body


class Prober:
    """GET /healthz back to back on its own connection, timing each round trip."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                self.times.append(time.perf_counter() - t0)
        finally:
            conn.close()

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def idle_probe_s(port: int, n: int = 200) -> float:
    """Median /healthz round trip with nothing else going on."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        times.append(time.perf_counter() - t0)
    conn.close()
    return Spread.of(times).median


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scrapes", type=int, help="timed scrapes per format (default 20; quick 3)")


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv, extra_args)
    sizes = (10,) if args.quick else (10, 100, 1000)
    scrapes = args.scrapes or (3 if args.quick else 20)
    interval = 1.0 if args.quick else 4.0
    rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="scrape-bench-") as tmpdir:
            d, _ = start(Path(tmpdir), n, interval)
            try:
                counts = wait_checked(d, n, timeout=60 + n / 10)
                conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
                per_format: dict[str, Any] = {}
                idle = idle_probe_s(d.port)
                for fmt, accept in (("text", None), ("openmetrics", OPENMETRICS)):
                    scrape_once(conn, accept)  # untimed: first-use costs
                    times, body = [], b""
                    with Prober(d.port) as probe:
                        for _ in range(scrapes):
                            dt, body = scrape_once(conn, accept)
                            times.append(dt)
                    lines = body.count(b"\n")
                    samples = sum(1 for ln in body.split(b"\n") if ln and not ln.startswith(b"#"))
                    per_format[fmt] = {
                        "seconds": Spread.of(times),
                        "probe_max_s": max(probe.times, default=math.nan),
                        "probe_p99_s": percentile(probe.times, 0.99),
                        "probes": len(probe.times),
                        "probe_idle_s": idle,
                        "bytes": len(body),
                        "gzip_bytes": len(gzip.compress(body, 6)),
                        "lines": lines,
                        "samples": samples,
                    }
                conn.close()
                check_s = parse_metrics(d.get("/metrics")[1].decode()).value(
                    "drift_sidecar_drift_check_duration_seconds_sum", model_name=MODEL
                )
            finally:
                d.stop()
                kill_quietly(d)
        t, om = per_format["text"], per_format["openmetrics"]
        rows.append(
            [
                str(n),
                str(t["samples"]),
                t["seconds"].scaled(1e3).fmt(),
                f"{t['bytes'] / 1024:,.0f}",
                f"{t['gzip_bytes'] / 1024:,.0f}",
                om["seconds"].scaled(1e3).fmt(),
                f"{om['bytes'] / 1024:,.0f}",
                f"{t['probe_max_s'] * 1e3:.1f} / {om['probe_max_s'] * 1e3:.1f}",
                f"{t['probe_idle_s'] * 1e3:.2f}",
            ]
        )
        results.append(
            {
                "features": n,
                "series_counts": counts,
                "drift_check_seconds_sum": check_s,
                **per_format,
            }
        )
        summary.append(
            summary_row(
                f"scrape text, {n} features",
                t["seconds"].scaled(1e3),
                "ms",
                f"{t['bytes'] / 1024:,.0f} KiB, {t['samples']} samples",
            )
        )
        summary.append(
            summary_row(
                f"scrape OpenMetrics, {n} features",
                om["seconds"].scaled(1e3),
                "ms",
                f"{om['bytes'] / 1024:,.0f} KiB",
            )
        )
        summary.append(
            summary_row(
                f"slowest /healthz during scrapes, {n} features",
                max(t["probe_max_s"], om["probe_max_s"]) * 1e3,
                "ms",
                f"idle median {t['probe_idle_s'] * 1e3:.2f} ms",
            )
        )
        print(f"{n} features: done", flush=True)

    print()
    print(
        table(
            [
                "features",
                "samples",
                "text ms",
                "text KiB",
                "text gzip KiB",
                "OpenMetrics ms",
                "OpenMetrics KiB",
                "max /healthz ms (text / OM)",
                "idle /healthz ms",
            ],
            rows,
        )
    )
    print(
        f"\nmedian (min-max) of {scrapes} scrapes each, client-side round trip, after a "
        f"completed drift check (window {WINDOW}, baseline {BASELINE_ROWS} rows). "
        "/healthz: the slowest of the probes sent back to back during the scrapes, and "
        "the median probe with the daemon idle."
    )
    report("scrape", args, summary, sizes=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

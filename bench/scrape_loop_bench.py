"""Scrape loop turns: the longest the event loop runs without a break while /metrics is served.

In one process: a real aiohttp server with the daemon's `/metrics` handler, over one model of
F numeric features with a baseline and a finished drift check (about 51 samples a feature).
A client thread scrapes it (text, then OpenMetrics) while a task on the loop counts turns;
between two turns it records the loop thread's CPU time (`time.thread_time`), so the figure
is the work done in one go, and holds on a loaded machine where wall-clock lag mostly
measures the scheduler. The first scrape of each format (which builds the label cache) is
left out. `whole` is the handler before bodies were written in chunks: one `render` into one
buffer and one `web.Response`, for a side-by-side comparison.

Run:  python bench/scrape_loop_bench.py [--quick] [--json FILE] [--features N]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Spread, bench_args, report, summary_row, table

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def registry_for(n_features: int, window: int = 1_000) -> Any:
    from prometheus_client import CollectorRegistry

    from sidecar.config import BaselineSpec, DriftSettings, FeatureSpec, ModelSpec, PredictionSpec
    from sidecar.drift import DriftParams, check_model
    from sidecar.events import Event
    from sidecar.metrics import Health, SidecarCollector
    from sidecar.stats.reference import build_baseline
    from sidecar.tracker import ModelTracker

    names = [f"feature_{i}" for i in range(n_features)]
    rng = np.random.default_rng(n_features)
    spec = ModelSpec(
        name="scrape",
        version="1.0.0",
        baseline=BaselineSpec(capture=None),
        features=[FeatureSpec(name=f) for f in names],
        prediction=PredictionSpec(type="numeric"),
    )
    t = ModelTracker(spec, DriftSettings(window_size=window))
    t.install_baseline(
        build_baseline(
            "scrape",
            numeric={f: rng.random(2_000) for f in names},
            categorical={},
            prediction=rng.random(2_000),
            prediction_kind="numeric",
        )
    )
    values = rng.random((window, n_features))
    events = [
        Event(
            model="scrape",
            features=dict(zip(names, values[i].tolist(), strict=True)),
            prediction=float(rng.random()),
            confidence=0.9,
            latency_s=0.01,
            trace_id=f"{i:032x}",
        )
        for i in range(window)
    ]
    t.ingest(events, now=time.time())
    t.latest = check_model(
        t.baseline, t.drift_window(t.window_snapshot(time.time())), DriftParams(min_samples=50)
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(lambda: [t], Health()))
    return registry


def whole_handler(registry: Any) -> Any:
    """The /metrics handler before chunked writes: one buffer, one Response."""
    from aiohttp import web
    from prometheus_client.exposition import choose_encoder

    from sidecar.exposition import render

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        body = await render(list(registry.collect()), encoder, openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


async def measure(registry: Any, mode: str, scrapes: int) -> dict[str, Any]:
    from aiohttp import web

    from sidecar.server import Api

    handler = whole_handler(registry) if mode == "whole" else Api(registry, None).metrics  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    turns: list[float] = []
    counting = False
    stop = False

    async def ticker() -> None:
        prev = time.thread_time()
        while not stop:
            await asyncio.sleep(0)
            now = time.thread_time()
            if counting:
                turns.append(now - prev)
            prev = now

    per_format: dict[str, list[float]] = {}

    def client() -> None:
        nonlocal counting
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for fmt, accept in (("text", None), ("openmetrics", OPENMETRICS)):
            headers = {"Accept": accept} if accept else {}
            conn.request("GET", "/metrics", headers=headers)
            conn.getresponse().read()  # untimed: builds the label cache
            start = len(turns)
            counting = True
            for _ in range(scrapes):
                conn.request("GET", "/metrics", headers=headers)
                conn.getresponse().read()
            counting = False
            per_format[fmt] = turns[start:]
        conn.close()

    task = asyncio.create_task(ticker())
    try:
        await asyncio.to_thread(client)
    finally:
        stop = True
        await task
        await runner.cleanup()
    return {fmt: Spread.of(1e3 * x for x in xs) for fmt, xs in per_format.items()} | {
        "max_ms": {fmt: 1e3 * max(xs) for fmt, xs in per_format.items()},
        "turns": {fmt: len(xs) for fmt, xs in per_format.items()},
    }


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", type=int, help="numeric features (default 1,000; quick 50)")


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv, extra_args)
    n = args.features or (50 if args.quick else 1_000)
    repeats = args.repeats
    scrapes = 3 if args.quick else 20
    registry = registry_for(n)
    runs: dict[str, list[dict[str, Any]]] = {"chunked": [], "whole": []}
    for i in range(repeats):
        for mode in ("whole", "chunked"):  # alternated, so both see the same load
            runs[mode].append(asyncio.run(measure(registry, mode, scrapes)))
        print(f"repeat {i + 1}/{repeats}: done", flush=True)
    rows, summary = [], []
    for mode, label in (("whole", "one buffer (before)"), ("chunked", "chunked writes")):
        for fmt in ("text", "openmetrics"):
            worst = Spread.of(r["max_ms"][fmt] for r in runs[mode])
            rows.append([label, fmt, worst.fmt(), str(sum(r["turns"][fmt] for r in runs[mode]))])
            summary.append(
                summary_row(
                    f"longest loop turn during a scrape, {n} features, {label}, {fmt}",
                    worst,
                    "ms CPU",
                )
            )
    print()
    print(table(["handler", "format", "longest turn, ms CPU", "turns"], rows))
    print(
        f"\n{n} features; the longest turn of each run of {scrapes} scrapes, median (min-max) "
        f"over {repeats} runs; CPU time of the loop thread between two turns."
    )
    report("scrape_loop", args, summary, features=n, runs=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

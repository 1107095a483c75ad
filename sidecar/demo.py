"""`drift-sidecar demo`: the daemon, a stand-in model server, and drift appearing live.

The stand-in scores fraud on six features through the real client library and socket.
After `drift_after` seconds the traffic shifts (first `amount` and `country`, later
`age`), and the table shows each feature's PSI and KS p-value turning red as it drifts.
A classifier view of the same model gets delayed labels (sidecar.demo_labels): its
estimated and realized accuracy track each other, then part when the concept shifts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.baseline import write_baseline
from sidecar.client import Monitor
from sidecar.config import parse_config
from sidecar.daemon import Daemon
from sidecar.demo_labels import (
    FLAG_MODEL,
    AccuracyView,
    Labeller,
    flag_model,
    write_flag_baseline,
)
from sidecar.logs import configure

MODEL = "fraud-demo"
COUNTRIES = ["de", "fr", "us", "br", "in"]
COUNTRY_P = [0.3, 0.25, 0.25, 0.1, 0.1]
DRIFTED_COUNTRY_P = [0.1, 0.1, 0.2, 0.3, 0.3]
DEVICES = ["ios", "android", "web"]
EMBEDDING_DIM = 32
"""The stand-in model's representation vector: noise plus a direction that follows
log(amount), so it drifts with amount (phase 1 on)."""


class Traffic:
    """Synthetic requests; `phase` 0 is the baseline's world, 1 and 2 drift further."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.phase = 0
        direction = np.random.default_rng(0).standard_normal(EMBEDDING_DIM)
        self.direction = (direction / np.linalg.norm(direction)).astype(np.float32)

    def columns(self, n: int) -> dict[str, Any]:
        r = self.rng
        amount = r.lognormal(3.5, 0.8, n) * (1.6 if self.phase >= 1 else 1.0)
        age = r.normal(42, 12, n) + (6 if self.phase >= 2 else 0)
        score = r.uniform(0, 1, n)
        hour = r.integers(0, 24, n).astype(np.float64)
        country = r.choice(COUNTRIES, n, p=DRIFTED_COUNTRY_P if self.phase >= 1 else COUNTRY_P)
        device = r.choice(DEVICES, n, p=[0.4, 0.4, 0.2])
        z = -3 + 0.02 * (amount - 33) + 1.5 * score - 0.01 * (age - 42)
        prediction = 1 / (1 + np.exp(-z))
        missing = r.random(n) < 0.01
        score[missing] = np.nan
        embedding = r.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
        embedding += np.outer(np.log(amount) - 3.5, self.direction).astype(np.float32)
        return {
            "amount": amount,
            "age": age,
            "score": score,
            "hour": hour,
            "country": country,
            "device": device,
            "prediction": prediction,
            "embedding": embedding,
        }


def _config(folder: Path, port: int, drift_every: float) -> Any:
    return parse_config(
        {
            "socket": {"path": str(folder / "events.sock")},
            "http": {"host": "127.0.0.1", "port": port},
            "state_dir": str(folder / "state"),
            "drift": {"interval_s": drift_every, "window_size": 5000, "min_samples": 500},
            "models": [
                {
                    "name": MODEL,
                    "version": "1.0.0",
                    "baseline": {"path": str(folder / "baseline.parquet")},
                    "features": [
                        {"name": "amount"},
                        {"name": "age", "buckets": [18, 25, 35, 50, 65, 80]},
                        {"name": "score"},
                        {"name": "hour", "buckets": [3, 6, 9, 12, 15, 18, 21]},
                        {"name": "country", "type": "categorical"},
                        {"name": "device", "type": "categorical"},
                    ],
                    "prediction": {"type": "numeric"},
                    # numpy: the demo starts in a second, where importing torch takes several
                    "embedding": {"dim": EMBEDDING_DIM, "features": 256, "device": "numpy"},
                },
                flag_model(folder),
            ],
            "gpu": {"enabled": "auto"},
            "log": {"level": "warning"},
        },
        source=str(folder / "demo.yaml"),
    )


def _write_baseline(folder: Path) -> None:
    cols = Traffic(seed=1).columns(20_000)
    write_baseline(
        folder / "baseline.parquet",
        MODEL,
        numeric={k: cols[k] for k in ("amount", "age", "score", "hour")},
        categorical={k: list(cols[k]) for k in ("country", "device")},
        prediction=cols["prediction"],
        prediction_kind="numeric",
        embedding=cols["embedding"],
    )
    write_flag_baseline(folder, cols, np.random.default_rng(2))


def _send(
    monitor: Monitor,
    traffic: Traffic,
    rate: float,
    stop: threading.Event,
    labeller: Labeller | None = None,
) -> None:
    """The stand-in model server: `rate` predictions a second through the client."""
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    next_t = time.monotonic()
    while not stop.is_set():
        cols = traffic.columns(per_tick)
        for i in range(per_tick):
            monitor.record(
                {
                    k: (float(cols[k][i]) if k not in ("country", "device") else str(cols[k][i]))
                    for k in ("amount", "age", "score", "hour", "country", "device")
                },
                prediction=float(cols["prediction"][i]),
                confidence=float(max(cols["prediction"][i], 1 - cols["prediction"][i])),
                latency_s=float(traffic.rng.gamma(2.0, 0.01)),
                embedding=cols["embedding"][i],
            )
        if labeller is not None:
            labeller.record(cols, traffic.phase)
        next_t += tick
        stop.wait(max(0.0, next_t - time.monotonic()))


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _table(
    daemon: Daemon,
    started: float,
    traffic: Traffic,
    url: str,
    tty: bool,
    *,
    accuracy: AccuracyView | None = None,
) -> str:
    t = daemon.pipeline.trackers[MODEL]
    r = t.latest
    red, green, reset = ("\x1b[31m", "\x1b[32m", "\x1b[0m") if tty else ("", "", "")
    phase = ["baseline traffic", "amount and country drifting", "age drifting too"][traffic.phase]
    lines = [
        f"drift-sidecar demo  t={time.monotonic() - started:5.0f}s  phase: {phase}",
        f"metrics: {url}   events accepted: {t.accepted}   window: {len(t.window)}",
        "",
        f"{'feature':<10} {'PSI':>8} {'KS / chi2':>10} {'p-value':>10}  drift",
    ]
    if r is None:
        lines.append("(waiting for the first drift check)")
    elif not r.sufficient:
        lines.append(f"(insufficient data: {r.samples} of {t.drift.min_samples} samples)")
    else:

        def row(name: str, psi: str, stat: str, p: float | None, drifted: bool) -> str:
            mark = f"{red}DRIFT{reset}" if drifted else f"{green}ok{reset}"
            return f"{name:<10} {psi} {stat} {_fmt(p, '10.2e')}  {mark}"

        for f in r.features:
            stat = f.ks_statistic if f.ks_statistic is not None else f.chi2_statistic
            p = f.ks_pvalue if f.ks_pvalue is not None else f.chi2_pvalue
            lines.append(row(f.name, _fmt(f.psi, "8.3f"), _fmt(stat, "10.4f"), p, f.drifted))
        q = r.prediction
        if q is not None and q.sufficient:
            lines.append(
                row(
                    "prediction",
                    _fmt(q.psi, "8.3f"),
                    _fmt(q.ks_statistic, "10.4f"),
                    q.ks_pvalue,
                    q.drifted,
                )
            )
        e = r.embedding
        if e is not None and e.sufficient:
            mmd = _fmt(e.statistic, "10.2f")
            lines.append(row("embedding", f"{'':>8}", mmd, e.pvalue, e.drifted))
            lines[-1] += f"  (cross-MMD on {e.device})"
        drifted = [f.name for f in r.features if f.drifted]
        if drifted:  # where to look next: the feature's bins beside its reference
            base = url.removesuffix("/metrics")
            lines += ["", f"see the bins: drift-sidecar status --url {base} --feature {drifted[0]}"]
    if accuracy is not None:
        lines += ["", accuracy.line(daemon)]
    return "\n".join(lines)


def run_demo(
    duration: float | None = None,
    port: int = 9108,
    drift_after: float = 20.0,
    rate: float = 500.0,
    quiet: bool = False,
) -> int:
    configure("warning", "console" if sys.stderr.isatty() else "json")
    # On Ctrl-C the daemon may stop before the stand-in; its reconnect notices are noise here.
    logging.getLogger("sidecar.client").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="drift-sidecar-demo-") as tmp:
        folder = Path(tmp)
        _write_baseline(folder)
        config = _config(folder, port, drift_every=2.0)
        return asyncio.run(_main(config, duration, drift_after, rate, quiet))


async def _main(
    config: Any, duration: float | None, drift_after: float, rate: float, quiet: bool
) -> int:
    daemon = Daemon(config)
    traffic = Traffic()
    stop = threading.Event()
    tty = sys.stdout.isatty() and not quiet
    url = f"http://{config.http.host}:{config.http.port}/metrics"
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    accuracy = AccuracyView()

    async def drive() -> None:
        await daemon.started.wait()
        monitor = Monitor(config.socket_path, model=MODEL, version="1.0.0")
        flags = Monitor(config.socket_path, model=FLAG_MODEL, version="1.0.0")
        labeller = Labeller(flags)
        sender = threading.Thread(
            target=_send, args=(monitor, traffic, rate, stop, labeller), daemon=True
        )
        sender.start()
        if not quiet:
            print(
                f"drift-sidecar demo: sending {rate:.0f} predictions/s; metrics at {url}"
                f"\nPress Ctrl-C to stop.",
                flush=True,
            )
        try:
            while True:
                elapsed = time.monotonic() - started
                traffic.phase = (
                    0 if elapsed < drift_after else (1 if elapsed < 2 * drift_after else 2)
                )
                if duration is not None and elapsed >= duration:
                    break
                if not quiet:
                    table = _table(daemon, started, traffic, url, tty, accuracy=accuracy)
                    print(("\x1b[2J\x1b[H" if tty else "\n") + table, flush=True)
                await asyncio.sleep(2.0 if not tty else 1.0)
        finally:
            # The stand-in stops and flushes before the daemon does, as a model server's
            # pod would; the daemon then drains what it was sent.
            stop.set()
            await loop.run_in_executor(None, sender.join, 5)
            await loop.run_in_executor(None, monitor.close, 2.0)
            await loop.run_in_executor(None, flags.close, 2.0)
        daemon.request_stop()

    task = asyncio.create_task(drive(), name="demo-driver")
    try:
        code = await daemon.run()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if not quiet:
        t = daemon.pipeline.trackers[MODEL]
        r = t.latest
        drifted = [f.name for f in r.features if f.drifted] if r is not None else []
        if r is not None and r.embedding is not None and r.embedding.drifted:
            drifted.append("embedding")
        print(
            f"\ndemo finished: {t.accepted} events accepted; drifted features: "
            f"{', '.join(drifted) or 'none yet'}\n{accuracy.line(daemon)}",
            flush=True,
        )
    return code

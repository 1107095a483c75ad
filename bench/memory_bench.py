"""Memory: the footprint of one model with a large baseline, and RSS against features x window.

The footprint workload is one model of 100 numeric features with a 50,000-row baseline
parquet (plain columns: the statistics are computed at load) and a window of 10,000 events.
Each run reads /proc/PID/status of a fresh daemon once ready (VmHWM then is the peak while
the baseline loaded) and again after the window has filled, a drift check has run over it
and /metrics has been scraped. VmRSS is split into RssAnon, the daemon's own memory, and
RssFile, the mapped libraries (shared, and moving with the page cache). The floor is a ready
daemon with no model, measured the same way, with GPU monitoring off (as in the tests) and
with `gpu.enabled: auto`, the default. "As installed" runs the daemon as a wheel
installs it: the package's bytecode compiled (pip compiles it at install, whatever
PYTHONDONTWRITEBYTECODE says; an editable checkout under that variable compiles every
module from source at each start, about 0.5 MiB that stays) and without `rich`.

In the grid, for each cell the real daemon holds one model of F numeric features with a
small baseline (1,000 rows, so the window dominates), is read for VmRSS once ready (the
window's arrays are allocated then), then receives enough events to fill its window and is
read again (VmRSS now, VmHWM the peak while ingesting). The floor is a daemon with no model
at all; what a cell costs is its filled RSS over that floor. The window's own arrays need
about window x (F + 3) x 8 bytes; the table shows how the measured cost compares with that.

Run:  python bench/memory_bench.py [--quick] [--json FILE] [--only footprint|floor|grid]
(`--only floor`: the no-model floor alone, both ways, in seconds.)
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    Spread,
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
FOOTPRINT = {"features": 100, "rows": 50_000, "window": 10_000}
FOOTPRINT_QUICK = {"features": 10, "rows": 2_000, "window": 500}
KEYS = ("RssAnon", "RssFile", "VmRSS")


def encoded_events(n_features: int) -> list[bytes]:
    rng = np.random.default_rng(n_features)
    names = [f"feature_{i}" for i in range(n_features)]
    values = rng.random((DISTINCT_EVENTS, n_features)).tolist()
    enc = msgspec.json.Encoder()
    return [
        enc.encode(
            {
                "model": MODEL,
                "features": dict(zip(names, row, strict=True)),
                "prediction": float(i % 2),
                "confidence": 0.9,
                "latency_s": 0.01,
            }
        )
        + b"\n"
        for i, row in enumerate(values)
    ]


def floor_kib(tmp: Path, gpu: bool | str = False) -> dict[str, int]:
    """/proc/PID/status of a ready daemon with no model: interpreter, libraries, servers.
    (A config with no model must turn auto-registration on, or it would refuse every event.)
    `gpu` is `gpu.enabled`: off as in the tests, or "auto", the default."""
    d = start_daemon(
        tmp,
        {
            "models": [],
            "auto_register": {"enabled": True},
            "gpu": {"enabled": gpu},
            "log": {"level": "warning"},
        },
        wait_ready=True,
    )
    try:
        d.get("/metrics")
        return proc_memory_kib(d.proc.pid)
    finally:
        d.stop()
        kill_quietly(d)


def one_model_config(
    names: list[str], baseline: Path, window: int, *, interval_s: float
) -> dict[str, Any]:
    """The daemon config of one numeric model over `names`, with `baseline` and a window."""
    return {
        "models": [
            {
                "name": MODEL,
                "baseline": {"path": str(baseline)},
                "features": [{"name": f, "type": "numeric"} for f in names],
                "prediction": {"type": "numeric"},
            }
        ],
        "socket": {"max_features_per_event": max(1024, len(names))},
        "drift": {"window_size": window, "min_samples": min(500, window), "interval_s": interval_s},
        "state": {"snapshot_interval_s": 3600},
        "log": {"level": "warning"},
    }


def footprint_run(tmp: Path, features: int, rows: int, window: int) -> dict[str, Any]:
    """One daemon with the footprint workload: memory at ready and after the first check."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"feature_{i}" for i in range(features)]
    rng = np.random.default_rng(7)
    baseline = tmp / "baseline.parquet"
    columns = {f: pa.array(rng.normal(size=rows)) for f in names}
    columns["prediction"] = pa.array(rng.random(rows))
    pq.write_table(pa.table(columns), baseline)  # plain columns: no stored statistics
    del columns
    extra = one_model_config(names, baseline, window, interval_s=1.0)
    enc = msgspec.json.Encoder()
    values = rng.normal(0.1, 1.0, size=(window, features)).tolist()
    lines = [
        enc.encode(
            {
                "model": MODEL,
                "features": dict(zip(names, row, strict=True)),
                "prediction": float(i % 7) / 7,
                "confidence": 0.9,
                "latency_s": 0.01,
            }
        )
        + b"\n"
        for i, row in enumerate(values)
    ]
    del values
    d = start_daemon(tmp, extra, wait_ready=True)
    try:
        ready = proc_memory_kib(d.proc.pid)
        for i in range(0, len(lines), 1_000):
            d.send(lines[i : i + 1_000])
        filled_at = time.time()

        def checked() -> bool:
            m = d.json("/v1/drift")["models"].get(MODEL, {})
            return (
                m.get("window_samples") == window
                and m.get("status") == "ok"
                and m.get("checked_at", 0) >= filled_at
            )

        wait_for(checked, 120, f"a drift check over a full window of {window}")
        d.get("/metrics")
        after = proc_memory_kib(d.proc.pid)
    finally:
        d.stop()
        kill_quietly(d)
    return {"ready": ready, "checked": after}


def nvml_library_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def as_installed() -> Iterator[None]:
    """Daemons started inside run as a wheel installs them: the sidecar package from a copy
    whose bytecode is compiled (pip compiles it at install time), and `rich` hidden, which
    structlog imports when it is there but which comes with the dev tools (import-linter),
    not with the sidecar (about 3 MiB)."""
    with tempfile.TemporaryDirectory(prefix="memory-bench-site-") as site:
        (Path(site) / "rich").mkdir()
        (Path(site) / "rich" / "__init__.py").write_text(
            'raise ImportError("hidden by bench/memory_bench.py: not a sidecar dependency")\n'
        )
        package = Path(site) / "sidecar"
        shutil.copytree(
            ROOT / "sidecar", package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        if not compileall.compile_dir(package, quiet=1):
            raise RuntimeError(f"cannot compile the copy of the sidecar package in {package}")
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, before]))
        try:
            # the copy, not this checkout (an editable install's finder comes after it)
            where = subprocess.run(
                [sys.executable, "-c", "import sidecar; print(sidecar.__file__)"],
                capture_output=True,
                text=True,
                check=True,
                cwd=site,
            ).stdout.strip()
            if Path(where).parent != package:
                raise RuntimeError(f"the daemon would import {where}, not the copy in {package}")
            yield
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before


def footprint(args: argparse.Namespace) -> dict[str, Any]:
    w = FOOTPRINT_QUICK if args.quick else FOOTPRINT
    out: dict[str, Any] = {"workload": w}
    for env, hidden in (("installed", True), ("dev", False)):
        floors: list[dict[str, int]] = []
        auto_floors: list[dict[str, int]] = []
        runs: list[dict[str, Any]] = []
        for i in range(args.repeats):
            with contextlib.ExitStack() as stack:
                if hidden:
                    stack.enter_context(as_installed())
                with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
                    floors.append(floor_kib(Path(tmpdir)))
                with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
                    auto_floors.append(floor_kib(Path(tmpdir), gpu="auto"))
                if args.only != "floor":  # the floor alone
                    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
                        runs.append(
                            footprint_run(Path(tmpdir), w["features"], w["rows"], w["window"])
                        )
            print(f"footprint ({env}) run {i + 1}/{args.repeats}: done", flush=True)
        out[env] = summarize(floors, runs)
        out[env]["floors_gpu_auto"] = auto_floors
        out[env]["floor_gpu_auto"] = {k: Spread.of(s[k] / MIB for s in auto_floors) for k in KEYS}
    return out


def summarize(floors: list[dict[str, int]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    def mib(samples: list[dict[str, int]], key: str) -> Spread:
        return Spread.of(s[key] / MIB for s in samples)

    out: dict[str, Any] = {"runs": runs, "floors": floors}
    out["floor"] = {k: mib(floors, k) for k in KEYS}
    if not runs:  # --only floor
        return out
    out["ready"] = {k: mib([r["ready"] for r in runs], k) for k in KEYS}
    out["checked"] = {k: mib([r["checked"] for r in runs], k) for k in KEYS}
    out["load_peak"] = mib([r["ready"] for r in runs], "VmHWM")
    out["peak"] = mib([r["checked"] for r in runs], "VmHWM")
    # peak while loading over the steady state, paired per run
    out["load_peak_over_steady"] = Spread.of(
        r["ready"]["VmHWM"] / r["checked"]["VmRSS"] for r in runs
    )
    return out


def measure(tmp: Path, n_features: int, window: int, lines: list[bytes]) -> dict[str, Any]:
    from sidecar.baseline import write_baseline

    names = [f"feature_{i}" for i in range(n_features)]
    rng = np.random.default_rng(0)
    baseline = tmp / "baseline.parquet"
    write_baseline(
        baseline,
        MODEL,
        numeric={f: rng.random(BASELINE_ROWS) for f in names},
        categorical={},
        prediction=rng.random(BASELINE_ROWS),
        prediction_kind="numeric",
    )
    # No drift pass during the measurement: this is the standing cost of the window.
    extra = one_model_config(names, baseline, window, interval_s=3600)
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
            120,
            f"a full window of {window}",
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
        "full_anon_kib": full["RssAnon"],
        "window_arrays_kib": arrays / 1024,
    }


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        choices=("footprint", "floor", "grid"),
        help="run only the footprint workload, only its no-model floor, or only the grid",
    )


def print_footprint(fp: dict[str, Any]) -> list[dict[str, Any]]:
    w = fp["workload"]
    rows = []
    for env, label in (("installed", "as installed"), ("dev", "dev venv (+rich)")):
        e = fp[env]
        rows += [
            [f"{what}, {label}", *(e[key][k].fmt() for k in KEYS)]
            for what, key in (
                ("no model, ready", "floor"),
                ("no model, gpu: auto, ready", "floor_gpu_auto"),
                ("model, ready", "ready"),
                ("model, after a check", "checked"),
            )
            if key in e
        ]
    print()
    print(table(["daemon", "RssAnon MiB", "RssFile MiB", "VmRSS MiB"], rows))
    print(
        f"\n'gpu: auto' is the default; the NVIDIA driver's library "
        f"{'loads' if nvml_library_loads() else 'does not load'} here, so NVML "
        f"{'is' if nvml_library_loads() else 'is not'} in use. The other rows turn it off."
    )
    e = fp["installed"]
    if "checked" not in e:  # --only floor
        print(
            f"\nno-model floor: median (min-max) of {len(e['floors'])} daemons each. 'as "
            "installed': compiled bytecode, no rich; 'dev venv': this checkout as it runs."
        )
        return [
            summary_row(f"RssAnon, no model{gpu} ({env})", fp[env][key]["RssAnon"], "MiB")
            for env in ("installed", "dev")
            for gpu, key in (("", "floor"), (", gpu: auto", "floor_gpu_auto"))
        ]
    print(
        f"\nfootprint workload: {w['features']} numeric features, a {w['rows']:,}-row "
        f"baseline, a window of {w['window']:,}; median (min-max) of {len(e['runs'])} "
        "daemons each. 'as installed' runs compiled bytecode and hides rich, which "
        "structlog imports when the dev tools brought it. Peak while loading (VmHWM at "
        "ready, as installed): "
        f"{e['load_peak'].fmt()} MiB, {e['load_peak_over_steady'].fmt()} x the VmRSS after "
        f"the check; peak over the whole run: {e['peak'].fmt()} MiB."
    )
    summary = []
    for env in ("installed", "dev"):
        e = fp[env]
        summary += [
            summary_row(f"RssAnon, no model ({env})", e["floor"]["RssAnon"], "MiB"),
            summary_row(
                f"RssAnon, no model, gpu: auto ({env})", e["floor_gpu_auto"]["RssAnon"], "MiB"
            ),
            summary_row(
                f"RssAnon, {w['features']} features, {w['rows']:,}-row baseline, "
                f"after a check ({env})",
                e["checked"]["RssAnon"],
                "MiB",
                f"RssFile {e['checked']['RssFile'].median:.0f}",
            ),
            summary_row(f"VmRSS, same ({env})", e["checked"]["VmRSS"], "MiB"),
        ]
    summary.append(
        summary_row(
            "peak while loading / VmRSS after the check (installed)",
            fp["installed"]["load_peak_over_steady"],
            "x",
        )
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv, extra_args)
    summary: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if args.only in (None, "footprint", "floor"):
        fp = footprint(args)
        summary += print_footprint(fp)
        extra["footprint"] = fp
    if args.only in (None, "grid"):
        summary += grid(args, extra)
    report("memory", args, summary, **extra)
    return 0


def grid(args: argparse.Namespace, extra: dict[str, Any]) -> list[dict[str, Any]]:
    features = (10,) if args.quick else (10, 100, 1000)
    windows = (200, 1_000) if args.quick else (1_000, 10_000)
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
        floor_status = floor_kib(Path(tmpdir))
    floor, floor_anon = floor_status["VmRSS"], floor_status["RssAnon"]
    for f in features:
        lines = encoded_events(f)
        for w in windows:
            with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmpdir:
                cells.append(measure(Path(tmpdir), f, w, lines))
            c = cells[-1]
            c["over_floor_kib"] = c["full_rss_kib"] - floor
            # the daemon's own memory: VmRSS also counts the libraries the baseline load maps
            c["anon_over_floor_kib"] = c["full_anon_kib"] - floor_anon
            c["bytes_per_value"] = c["anon_over_floor_kib"] * 1024 / (w * f)
            print(f"{f} features x window {w}: done", flush=True)

    rows = [
        [
            str(c["features"]),
            f"{c['window']:,}",
            f"{c['ready_rss_kib'] / MIB:.1f}",
            f"{c['full_rss_kib'] / MIB:.1f}",
            f"{c['peak_rss_kib'] / MIB:.1f}",
            f"{c['over_floor_kib'] / MIB:.1f}",
            f"{c['full_anon_kib'] / MIB:.1f}",
            f"{c['anon_over_floor_kib'] / MIB:.1f}",
            f"{c['window_arrays_kib'] / MIB:.1f}",
            f"{c['bytes_per_value']:.1f}",
        ]
        for c in cells
    ]
    print()
    print(
        table(
            [
                "features",
                "window",
                "ready MiB",
                "filled MiB",
                "peak MiB",
                "over floor MiB",
                "filled RssAnon MiB",
                "RssAnon over floor MiB",
                "window arrays MiB",
                "B/value (RssAnon) over floor",
            ],
            rows,
        )
    )
    print(
        f"\nfloor (a ready daemon with no model): {floor / MIB:.1f} MiB, RssAnon "
        f"{floor_anon / MIB:.1f} MiB. RSS from "
        "/proc/PID/status (VmRSS; peak = VmHWM), one daemon per cell; B/value = over floor / "
        "(window x features)."
    )
    summary = [summary_row("RSS floor, no model", floor / MIB, "MiB")]
    summary += [
        summary_row(
            f"RSS {c['features']} features x window {c['window']:,}",
            c["full_rss_kib"] / MIB,
            "MiB",
            f"{c['over_floor_kib'] / MIB:.0f} over floor; window arrays "
            f"{c['window_arrays_kib'] / MIB:.1f}; peak {c['peak_rss_kib'] / MIB:.0f}",
        )
        for c in cells
    ]
    extra.update(floor_rss_kib=floor, floor_anon_kib=floor_anon, cells=cells)
    return summary


if __name__ == "__main__":
    sys.exit(main())

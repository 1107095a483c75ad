"""Cost of sidecar.client on the caller's thread, and the example server's latency with it.

Part 1 times every call of `Monitor.record()` (one event), `Monitor.record_batch()` (256
rows of numpy columns) and `sidecar.client.torch.record_batch()` (256 rows of logits) on
the caller's thread, in three cases: sidecar up (a reader process that reads as fast as
it can), sidecar down (no socket), sidecar stalled (a process that accepts and never
reads). Each run makes a fresh Monitor; medians and p99 are per run, shown as the median
over runs with the min-max spread. A tight loop offers events far faster than any model
server, so the buffer fills and the drop path is part of what is measured (see "drop%").

Part 2 starts examples/model_server twice (with and without the client, the client
sending to a reader process) and sends the same requests to both, interleaved, from one
aiohttp session: p50 and p99 request latency side by side.

    python bench/client_bench.py            # full run
    python bench/client_bench.py --quick    # seconds; what the smoke test runs
    python bench/client_bench.py --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.client import Monitor  # noqa: E402 - after the path set-up for a fresh clone

READER = """
import socket, sys
path, mode = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(64)
print("ready", flush=True)
conns = []
while True:
    c, _ = srv.accept()
    conns.append(c)  # stalled: keep it open, never read
    if mode == "up":
        import threading
        def drain(c=c):
            while c.recv(1 << 20):
                pass
        threading.Thread(target=drain, daemon=True).start()
"""


@contextmanager
def reader(path: str, mode: str) -> Iterator[None]:
    """A sidecar stand-in in its own process, so it never competes for our GIL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, path, mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("reader did not start")
        yield
    finally:
        proc.kill()
        proc.wait()
        if os.path.exists(path):
            os.unlink(path)


def wait_connected(m: Monitor, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not m.stats.connected:
        if time.monotonic() > deadline:
            raise RuntimeError("client did not connect")
        time.sleep(0.005)


def timer_overhead_ns() -> float:
    pc = time.perf_counter_ns
    d = np.empty(100_000, dtype=np.int64)
    for i in range(len(d)):
        t0 = pc()
        d[i] = pc() - t0
    return float(np.median(d))


def time_calls(call: Callable[[], Any], n: int) -> np.ndarray:
    pc = time.perf_counter_ns
    d = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = pc()
        call()
        d[i] = pc() - t0
    return d


def workloads(quick: bool) -> dict[str, tuple[Callable[[Monitor], Callable[[], Any]], int, int]]:
    """name -> (make the call for a monitor, calls per run, events per call)."""
    feats = {f"f{i}": float(i) * 0.5 for i in range(8)} | {"country": "de", "segment": "b"}
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=256)
    preds, conf = probs.argmax(axis=1), probs.max(axis=1)
    xs = rng.normal(size=(256, 10))
    names = [f"f{i}" for i in range(10)]
    single_n, batch_n = (20_000, 300) if quick else (200_000, 3_000)

    def single(m: Monitor) -> Callable[[], Any]:
        return lambda: m.record(feats, prediction=1.0, confidence=0.9, latency_s=0.004)

    def batch(m: Monitor) -> Callable[[], Any]:
        return lambda: m.record_batch(
            predictions=preds,
            probabilities=probs,
            confidences=conf,
            features=xs,
            feature_names=names,
            latency_s=0.01,
        )

    out = {"record (1 event)": (single, single_n, 1), "record_batch (256)": (batch, batch_n, 256)}
    try:
        import torch

        from sidecar.client.torch import record_batch

        torch.set_num_threads(1)
        logits = torch.randn(256, 5)
        tx = torch.randn(256, 10)

        def torch_batch(m: Monitor) -> Callable[[], Any]:
            return lambda: record_batch(m, logits, features=tx, feature_names=names, latency_s=0.01)

        def torch_alone(m: Monitor) -> Callable[[], Any]:
            # The same tensor math with no client: torch's own cost and tail, for reference.
            def call() -> None:
                with torch.no_grad():
                    probs = torch.softmax(logits.float(), dim=1)
                    conf, _ = probs.max(dim=1)
                    conf.clamp(0.0, 1.0)
                    tx.to("cpu", copy=True)

            return call

        out["torch record_batch (256)"] = (torch_batch, batch_n, 256)
        out["  same torch ops, no client"] = (torch_alone, batch_n, 256)
    except ImportError:
        print("torch not installed: skipping the torch helper", file=sys.stderr)
    return out


def run_case(
    case: str, make: Callable[[Monitor], Callable[[], Any]], n: int, runs: int, tmp: str
) -> list[dict[str, float]]:
    results = []
    for r in range(runs):
        path = os.path.join(tmp, f"{case}-{r}.sock")

        def one(path: str = path) -> dict[str, float]:
            m = Monitor(path, model="bench", version="1")
            if case != "down":
                wait_connected(m)
            else:
                time.sleep(0.05)  # let the first connect attempt fail, as in production
            call = make(m)
            call()  # warm-up
            gc.collect()
            d = time_calls(call, n)
            s = m.stats
            offered = s.sent + s.dropped_total + s.buffered + s.pending
            m.close(0.2)
            return {
                "median_ns": float(np.median(d)),
                "p99_ns": float(np.percentile(d, 99)),
                "max_ns": float(d.max()),
                "drop_pct": 100.0 * (s.dropped_total / offered) if offered else 0.0,
            }

        if case == "down":
            results.append(one())
        else:
            with reader(path, "up" if case == "up" else "stalled"):
                results.append(one())
    return results


def spread(values: list[float], scale: float) -> str:
    med = statistics.median(values) / scale
    lo, hi = min(values) / scale, max(values) / scale
    return f"{med:8.2f} ({lo:.2f}-{hi:.2f})"


# ---- part 2: the example server ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def model_server(port: int, sock: str | None) -> Iterator[None]:
    args = [
        sys.executable,
        str(ROOT / "examples" / "model_server" / "server.py"),
        "--port",
        str(port),
    ]
    args += ["--socket", sock] if sock else ["--no-monitor"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "model server on" not in line:
            raise RuntimeError(f"model server did not start: {line!r}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def drive(
    ports: dict[str, int], requests: int, runs: int
) -> dict[str, list[dict[str, float]]]:
    import aiohttp

    body = {
        "features": {
            "sepal_length": 5.1,
            "sepal_width": 3.5,
            "petal_length": 1.4,
            "petal_width": 0.2,
        }
    }
    out: dict[str, list[dict[str, float]]] = {k: [] for k in ports}
    async with aiohttp.ClientSession() as session:

        async def once(port: int) -> float:
            t0 = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/predict", json=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"/predict answered {resp.status}")
            return time.perf_counter() - t0

        for port in ports.values():
            for _ in range(50):  # warm-up: connections, torch dispatch
                await once(port)
        for _ in range(runs):
            lat: dict[str, list[float]] = {k: [] for k in ports}
            for _ in range(requests):
                for name, port in ports.items():  # interleaved, so drift hits both alike
                    lat[name].append(await once(port))
            for name, v in lat.items():
                a = np.array(v)
                out[name].append(
                    {
                        "p50_ms": float(np.median(a)) * 1e3,
                        "p99_ms": float(np.percentile(a, 99)) * 1e3,
                    }
                )
    return out


def server_part(requests: int, runs: int, tmp: str) -> dict[str, list[dict[str, float]]] | None:
    try:
        import aiohttp  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        print("torch or aiohttp not installed: skipping the example server", file=sys.stderr)
        return None
    sock = os.path.join(tmp, "server.sock")
    ports = {"without client": free_port(), "with client": free_port()}
    with (
        reader(sock, "up"),
        model_server(ports["without client"], None),
        model_server(ports["with client"], sock),
    ):
        return asyncio.run(drive(ports, requests, runs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for the smoke test")
    p.add_argument("--runs", type=int, default=None, help="repeated runs per case")
    p.add_argument("--requests", type=int, default=None, help="requests per server per run")
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    args = p.parse_args(argv)
    # Drops are the point of two of the cases; their warnings would drown the table.
    logging.getLogger("sidecar.client").setLevel(logging.ERROR)
    runs = args.runs or (2 if args.quick else 5)
    requests = args.requests or (100 if args.quick else 1000)

    overhead = timer_overhead_ns()
    results: dict[str, Any] = {"timer_overhead_ns": overhead, "runs": runs, "record": {}}
    print(f"per-call cost on the caller's thread, µs: median over {runs} runs (min-max);")
    print(f"timer overhead ({overhead:.0f} ns per call) included; goal: median <= 2, p99 <= 20\n")
    header = (
        f"{'call':26} {'sidecar':8} {'median µs':>22} {'p99 µs':>22} {'max ms':>8} {'drop%':>6}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="dscb-", dir="/tmp") as tmp:
        for wname, (make, n, per_call) in workloads(args.quick).items():
            cases = ("up",) if wname.startswith("  ") else ("up", "down", "stalled")
            for case in cases:
                rs = run_case(case, make, n, runs, tmp)
                results["record"][f"{wname} / {case}"] = {"events_per_call": per_call, "runs": rs}
                print(
                    f"{wname:26} {case:8} "
                    f"{spread([r['median_ns'] for r in rs], 1e3):>22} "
                    f"{spread([r['p99_ns'] for r in rs], 1e3):>22} "
                    f"{max(r['max_ns'] for r in rs) / 1e6:8.2f} "
                    f"{statistics.median(r['drop_pct'] for r in rs):6.1f}"
                )
        srv = server_part(requests, runs, tmp)
    if srv is not None:
        results["server"] = srv
        print(f"\nexample server /predict, {requests} requests x {runs} runs each, interleaved; ms")
        print(f"{'':16} {'p50 ms':>22} {'p99 ms':>22}")
        for name, rs in srv.items():
            print(
                f"{name:16} {spread([r['p50_ms'] for r in rs], 1):>22} "
                f"{spread([r['p99_ms'] for r in rs], 1):>22}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

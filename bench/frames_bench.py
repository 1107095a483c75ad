"""Columnar frames (Arrow IPC) against JSON lines, side by side in one run, end to end.

- numeric: 16 numeric features, a prediction and a confidence per event. Frames: record
  batches of 4,096 rows; JSON: arrays of 256 events per line (what the client sends). One
  connection each, to the same daemon (one model, a baseline, window 10k), as in
  bench/ingest_bench.py: events/s from the first byte sent until the daemon's own
  `drift_sidecar_events_accepted_total` reaches the total (the poll errs slow).
- embedding: 768-dim float32 embeddings (and one feature), 1,024 rows per batch, to a
  daemon whose model has `embedding: {dim: 768}`; JSON lines of 64 events.
- ceilings: the same numeric frames sent to a bare server that reads them as the daemon
  does (the same reader, reading into each message's own buffer) and only counts rows:
  the most any Python server of frames does on this machine; and np.sort of a batch's
  16 x 4,096 features in process, what the per-bin counters are counted from: events/s
  if that sort were the only work.
- client: the caller-thread cost of `Monitor.record_batch` for 4,096 rows given as numpy
  arrays (16 features, prediction, confidence), with the flusher sending frames to the
  daemon meanwhile: per call, median and min-max.

Goals (issue: columnar frames): numeric >= 5M events/s and >= 10x JSON; embedding >= 100k
events/s and >= 20x JSON; record_batch <= 20 us median.

Run:  python bench/frames_bench.py [--quick] [--json FILE] [--repeats N]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CountingServer,
    DaemonProcess,
    Spread,
    bench_args,
    kill_quietly,
    now_s,
    ratio,
    report,
    sample_value,
    serve_counting,
    start_daemon,
    summary_row,
    table,
)

N_FEATURES = 16
FEATURES = [f"feature_{i}" for i in range(N_FEATURES)]
ROWS = 4096
EMB_DIM = 768
EMB_ROWS = 1024
JSON_BATCH = 256
JSON_EMB_BATCH = 64
WINDOW = 10_000
ACCEPTED = "drift_sidecar_events_accepted_total"
SEND_CHUNK = 4 << 20
GOALS = {"numeric": (5e6, 10.0), "embedding": (1e5, 20.0), "client_us": 20.0}


class ReadOnly:
    """The ceiling for a Python server of frames on this machine: `--serve read` of this
    file in a subprocess, reading the stream as the daemon does (the same reader, the same
    buffered reads straight into each message's buffer) and counting the rows of each
    record batch, folding nothing. `run` returns seconds from the first byte sent until it
    has counted the running total."""

    def __init__(self, tmp: Path) -> None:
        self.socket_path = str(tmp / "read.sock")
        self.server = CountingServer(__file__, "read", self.socket_path)

    def run(self, data: bytes, events: int) -> float:
        self.server.expect(events)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.socket_path)
            t0 = now_s()
            view = memoryview(data)
            for off in range(0, len(view), SEND_CHUNK):
                s.sendall(view[off : off + SEND_CHUNK])
        return self.server.counted_at() - t0

    def close(self) -> None:
        self.server.close()


def serve_read(path: str) -> None:
    """`--serve read`: count the rows of the record batches of every connection."""
    import asyncio

    from sidecar.frames import FrameReader

    class Proto(asyncio.BufferedProtocol):
        def __init__(self, add: Callable[[int], None]) -> None:
            self.reader = FrameReader(1 << 30)
            self.add = add

        def get_buffer(self, sizehint: int) -> memoryview:
            return self.reader.get_buffer()

        def buffer_updated(self, nbytes: int) -> None:
            frames, err = self.reader.received(nbytes)
            if err is not None:
                raise RuntimeError(err.detail)
            self.add(sum(f.batch.num_rows for f in frames))

    serve_counting(path, Proto)


def sort_floor(repeats: int) -> Spread:
    """Events/s if sorting a batch's numeric features (what the per-bin counters are
    counted from) were the only work: np.sort of a (16, 4096) float64 block, in process."""
    block = np.random.default_rng(2).random((N_FEATURES, ROWS))
    rates = []
    for _ in range(max(repeats, 5)):
        t0 = time.perf_counter()
        for _ in range(50):
            np.sort(block, axis=1)
        rates.append(50 * ROWS / (time.perf_counter() - t0))
    return Spread.of(rates)


class Daemon:
    """A daemon with one model; `run` sends bytes on one connection and returns seconds
    until its accepted counter reaches the running total."""

    def __init__(self, tmp: Path, model: dict[str, Any], name: str) -> None:
        extra = {
            "models": [model],
            "drift": {"window_size": WINDOW, "interval_s": 3600},
            "state": {"snapshot_interval_s": 3600},
            "log": {"level": "warning"},
            "socket": {"queue_max_bytes": 256 << 20},
        }
        self.name = name
        self.d: DaemonProcess = start_daemon(tmp, extra, wait_ready=True)
        self.expected = 0
        self._http = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=30)

    def accepted(self) -> float:
        self._http.request("GET", f"/metrics?name[]={ACCEPTED}")
        r = self._http.getresponse()
        body = r.read().decode()
        v = sample_value(body, ACCEPTED, f'model_name="{self.name}"')
        return -1.0 if v is None else v

    def run(self, data: bytes, events: int) -> float:
        before = self.expected
        self.expected += events
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.d.socket_path)
            t0 = now_s()
            view = memoryview(data)
            for off in range(0, len(view), SEND_CHUNK):
                s.sendall(view[off : off + SEND_CHUNK])
        deadline = time.monotonic() + 300
        while True:
            got = self.accepted()
            t1 = now_s()
            if got >= self.expected:
                break
            if time.monotonic() > deadline or self.d.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: accepted {got:.0f} of {self.expected}")
            done = got - before
            left = (t1 - t0) * (events - done) / done if done > 0 else 0.0
            time.sleep(min(max(0.002, 0.8 * left), 0.5))
        if got != self.expected:
            raise RuntimeError(f"{self.name}: accepted {got:.0f}, expected {self.expected}")
        return t1 - t0

    def close(self) -> None:
        self._http.close()
        kill_quietly(self.d)


def arrow_stream(batches: list[pa.RecordBatch], model: str) -> bytes:
    sink = pa.BufferOutputStream()
    schema = batches[0].schema.with_metadata({"model": model})
    with pa.ipc.new_stream(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    return sink.getvalue().to_pybytes()


def numeric_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "features": rng.random((n, N_FEATURES)),
        "prediction": rng.integers(0, 2, n).astype(np.float64),
        "confidence": 0.5 + rng.random(n) / 2,
    }


def numeric_batch(cols: dict[str, np.ndarray], lo: int, hi: int) -> pa.RecordBatch:
    feats = np.ascontiguousarray(cols["features"][lo:hi].T)
    return pa.record_batch(
        {
            "features": pa.StructArray.from_arrays(
                [pa.array(feats[j]) for j in range(N_FEATURES)], names=FEATURES
            ),
            "prediction": pa.array(cols["prediction"][lo:hi]),
            "confidence": pa.array(cols["confidence"][lo:hi]),
        }
    )


def numeric_json(cols: dict[str, np.ndarray], n: int) -> bytes:
    enc = msgspec.json.Encoder()
    feats = cols["features"][:n].tolist()
    pred, conf = cols["prediction"][:n].tolist(), cols["confidence"][:n].tolist()
    events = [
        {
            "model": "num",
            "features": dict(zip(FEATURES, feats[i], strict=True)),
            "prediction": pred[i],
            "confidence": conf[i],
        }
        for i in range(n)
    ]
    return b"".join(enc.encode(events[i : i + JSON_BATCH]) + b"\n" for i in range(0, n, JSON_BATCH))


def embedding_batch(emb: np.ndarray, a: np.ndarray) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "features": pa.StructArray.from_arrays([pa.array(a)], names=["a"]),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), EMB_DIM),
        }
    )


def embedding_json(emb: np.ndarray, a: np.ndarray) -> bytes:
    enc = msgspec.json.Encoder()
    rows, av = emb.tolist(), a.tolist()
    events = [
        {"model": "emb", "features": {"a": av[i]}, "embedding": rows[i]} for i in range(len(rows))
    ]
    return b"".join(
        enc.encode(events[i : i + JSON_EMB_BATCH]) + b"\n"
        for i in range(0, len(events), JSON_EMB_BATCH)
    )


def client_cost(socket_path: str, calls: int, cols: dict[str, np.ndarray]) -> Spread:
    """Microseconds per record_batch call of ROWS rows, with frames going out meanwhile."""
    from sidecar.client import Monitor

    feats, pred, conf = (
        cols["features"][:ROWS],
        cols["prediction"][:ROWS],
        cols["confidence"][:ROWS],
    )
    times: list[float] = []
    with Monitor(socket_path, model="num", buffer_size=ROWS * 64, trace_ids=False) as m:
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            m.record_batch(
                predictions=pred, confidences=conf, features=feats, feature_names=FEATURES
            )
            times.append((time.perf_counter_ns() - t0) / 1000)
            if m.stats.buffered > ROWS * 32:
                m.flush(10)  # outside the timed call: keep the buffer from filling
        m.flush(30)
        if not m.stats.frames:
            raise RuntimeError("the client did not send frames")
    return Spread.of(times)


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batches", type=int, help="numeric record batches per run (default 100)")
    p.add_argument("--json-events", type=int, help="numeric JSON events per run (default 51200)")
    p.add_argument("--emb-batches", type=int, help="embedding batches per run (default 40)")
    p.add_argument("--emb-json-events", type=int, help="embedding JSON events (default 2048)")
    p.add_argument("--calls", type=int, help="record_batch calls timed (default 500)")
    p.add_argument("--serve", choices=["read"], help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv, extra_args)
    if args.serve:
        serve_read(args.socket)
        return 0
    q = args.quick
    n_batches = args.batches or (3 if q else 100)
    n_json = args.json_events or (2 * JSON_BATCH if q else 51_200)
    n_emb = args.emb_batches or (2 if q else 40)
    n_emb_json = args.emb_json_events or (2 * JSON_EMB_BATCH if q else 2048)
    calls = args.calls or (20 if q else 500)
    rng = np.random.default_rng(0)

    cols = numeric_columns(rng, ROWS * n_batches)
    num_frames = arrow_stream(
        [numeric_batch(cols, i * ROWS, (i + 1) * ROWS) for i in range(n_batches)], "num"
    )
    num_json = numeric_json(cols, n_json)
    emb = rng.standard_normal((EMB_ROWS, EMB_DIM), dtype=np.float32)
    a = rng.random(EMB_ROWS)
    emb_frames = arrow_stream([embedding_batch(emb, a)] * n_emb, "emb")
    emb_json = embedding_json(
        np.tile(emb, (-(-n_emb_json // EMB_ROWS), 1))[:n_emb_json], np.resize(a, n_emb_json)
    )
    print(
        f"workload: numeric {n_batches} x {ROWS} rows ({len(num_frames) / 1e6:.1f} MB) vs "
        f"{n_json} JSON events ({len(num_json) / 1e6:.1f} MB); embedding {n_emb} x {EMB_ROWS} "
        f"rows ({len(emb_frames) / 1e6:.1f} MB) vs {n_emb_json} JSON events "
        f"({len(emb_json) / 1e6:.1f} MB); {args.repeats} repeats",
        flush=True,
    )

    from sidecar.baseline import write_baseline

    seconds: dict[str, list[float]] = {
        k: [] for k in ("num_f", "num_j", "emb_f", "emb_j", "num_read")
    }
    with tempfile.TemporaryDirectory(prefix="frames-bench-") as tmpdir:
        tmp = Path(tmpdir)
        base = tmp / "num.parquet"
        write_baseline(
            base,
            "num",
            numeric={f: rng.random(WINDOW) for f in FEATURES},
            categorical={},
            prediction=rng.integers(0, 2, WINDOW).astype(float),
            prediction_kind="numeric",
        )
        emb_base = tmp / "emb.parquet"
        write_baseline(
            emb_base,
            "emb",
            numeric={"a": rng.random(2000)},
            categorical={},
            prediction=None,
            prediction_kind=None,
            embedding=rng.standard_normal((2000, EMB_DIM), dtype=np.float32),
        )
        (tmp / "n").mkdir()
        (tmp / "e").mkdir()
        daemons: list[Daemon] = []
        try:
            num = Daemon(
                tmp / "n",
                {
                    "name": "num",
                    "baseline": {"path": str(base)},
                    "features": [{"name": f} for f in FEATURES],
                    "prediction": {"type": "numeric"},
                },
                "num",
            )
            daemons.append(num)
            embd = Daemon(
                tmp / "e",
                {
                    "name": "emb",
                    "baseline": {"path": str(emb_base)},
                    "features": [{"name": "a"}],
                    "embedding": {"dim": EMB_DIM, "device": "numpy"},
                },
                "emb",
            )
            daemons.append(embd)
            read = ReadOnly(tmp)
            read.run(num_frames, ROWS * n_batches)
            # one untimed pass each: imports (pyarrow loads with the first stream), allocator
            num.run(num_frames, ROWS * n_batches)
            num.run(num_json, n_json)
            embd.run(emb_frames, EMB_ROWS * n_emb)
            embd.run(emb_json, n_emb_json)
            for _ in range(args.repeats):
                seconds["num_f"].append(num.run(num_frames, ROWS * n_batches))
                seconds["num_read"].append(read.run(num_frames, ROWS * n_batches))
                seconds["num_j"].append(num.run(num_json, n_json))
                seconds["emb_f"].append(embd.run(emb_frames, EMB_ROWS * n_emb))
                seconds["emb_j"].append(embd.run(emb_json, n_emb_json))
            client = client_cost(num.d.socket_path, calls, cols)
        finally:
            for d in daemons:
                d.close()
            if "read" in locals():
                read.close()
    floor = sort_floor(args.repeats)

    def rate(key: str, n: int) -> Spread:
        return Spread.of(n / s for s in seconds[key])

    nf, nj = rate("num_f", ROWS * n_batches), rate("num_j", n_json)
    ef, ej = rate("emb_f", EMB_ROWS * n_emb), rate("emb_j", n_emb_json)
    rn, re_ = ratio(nf, nj), ratio(ef, ej)
    nr = rate("num_read", ROWS * n_batches)
    rr = ratio(nf, nr)
    rows = [
        ["numeric, 4096 rows/batch", nf.fmt(), nj.fmt(), rn.fmt(2), "5M ev/s, 10x"],
        ["embedding 768-d, 1024 rows/batch", ef.fmt(), ej.fmt(), re_.fmt(2), "100k ev/s, 20x"],
    ]
    print()
    print(table(["case", "frames ev/s", "JSON ev/s", "frames/JSON", "goal"], rows))
    print()
    print(
        f"numeric frames against the ceiling: read-only server {nr.fmt()} ev/s; the daemon "
        f"is {rr.fmt(2)} of it (paired per repeat). Sorting the features alone: "
        f"{floor.fmt()} ev/s."
    )
    print(
        f"client record_batch, 4096 rows from numpy: {client.fmt()} us per call "
        f"(goal <= {GOALS['client_us']:g} us median, {client.n} calls)"
    )
    summary = [
        summary_row("frames numeric 4096/batch", nf, "events/s", f"{rn.median:.1f}x JSON"),
        summary_row("JSON numeric 256/line", nj, "events/s"),
        summary_row("frames numeric, read-only ceiling", nr, "events/s", f"{rr.median:.2f}x"),
        summary_row("sort of 16x4096 features alone", floor, "events/s"),
        summary_row("frames embedding 768-d", ef, "events/s", f"{re_.median:.1f}x JSON"),
        summary_row("JSON embedding 768-d", ej, "events/s"),
        summary_row("client record_batch 4096 rows", client, "us/call"),
    ]
    report(
        "frames",
        args,
        summary,
        numeric={
            "frames": nf,
            "json": nj,
            "ratio": rn,
            "read_only": nr,
            "of_read_only": rr,
            "sort_only": floor,
        },
        embedding={"frames": ef, "json": ej, "ratio": re_},
        client_us=client,
        seconds=seconds,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest end to end: the real daemon against the decode-only ceiling and seed-style metrics.

Workload: events of 16 numeric features (plus prediction, confidence and latency), encoded
once in memory, sent one per line and in batches of 256 per line, over 1 and over 4
connections, as fast as the sockets take them. Three servers get the same bytes from the
same client:

- daemon: `drift-sidecar run` with one 16-feature model, window 10k and a baseline, so the
  per-bin counters run too. Events/s are measured from the first byte sent until the
  daemon's own `drift_sidecar_events_accepted_total` reaches the total, polled on
  `/metrics?name[]=...`; the time is taken when the poll that sees it returns, so it errs
  slow. Polls are paced by the progress seen so far (a handful per run rather than one
  every few ms), since each one is work the daemon's loop does instead of ingest.
- decode-only: a bare asyncio Unix-socket server that splits lines and decodes each with
  msgspec into the daemon's `Event | list[Event]`, as the daemon's fast path does, and
  counts: the ceiling for any server that decodes these events in Python.
- seed-style: the same bare server, then per event the monitoring guide's instrumented
  endpoint: `Counter.labels().inc()`, `Histogram.labels().observe()` for latency and
  confidence, `Summary.observe()` for the prediction, one feature histogram observe per
  feature. It runs on a prefix of the workload (it is ~10x slower); events/s stay comparable.

Run:  python bench/ingest_bench.py [--quick] [--json FILE]
One case alone (the goal's, say): --batch 256 --conns 1 --no-seed
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CountingServer,
    DaemonProcess,
    Spread,
    bench_args,
    kill_quietly,
    now_s,
    parse_metrics,
    report,
    sample_value,
    serve_counting,
    start_daemon,
    summary_row,
    table,
)

MODEL = "bench"
N_FEATURES = 16
FEATURES = [f"feature_{i}" for i in range(N_FEATURES)]
BATCH = 256
WINDOW = 10_000
SEND_CHUNK = 4 << 20  # bytes per sendall: large, so the client is never the bottleneck
POLL_S = 0.005  # the shortest pause between polls, near the end of a run
ACCEPTED = "drift_sidecar_events_accepted_total"
GOAL_DECODE = 0.7
GOAL_SEED = 5.0


# --------------------------------------------------------------------------- workload


def make_events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n classification events with 16 full-precision features in [0, 1)."""
    rng = np.random.default_rng(seed)
    feats = rng.random((n, N_FEATURES)).tolist()
    conf = (0.5 + rng.random(n) / 2).tolist()
    lat = (rng.random(n) * 0.1).tolist()
    pred = rng.integers(0, 2, n).astype(float).tolist()
    return [
        {
            "model": MODEL,
            "features": dict(zip(FEATURES, row, strict=True)),
            "prediction": pred[i],
            "confidence": conf[i],
            "latency_s": lat[i],
        }
        for i, row in enumerate(feats)
    ]


def encode_lines(events: list[dict[str, Any]], batch: int) -> list[bytes]:
    """NDJSON lines: one event per line (batch 1) or JSON arrays of `batch` events."""
    enc = msgspec.json.Encoder()
    if batch == 1:
        return [enc.encode(e) + b"\n" for e in events]
    return [enc.encode(events[i : i + batch]) + b"\n" for i in range(0, len(events), batch)]


@dataclass
class Workload:
    """Pre-encoded bytes for one case, split at line boundaries into one part per connection."""

    name: str
    batch: int
    conns: int
    events: int
    parts: list[memoryview]
    nbytes: int


def make_workload(lines: list[bytes], per_line: int, conns: int, label: str) -> Workload:
    blob = b"".join(lines)
    view = memoryview(blob)
    parts: list[memoryview] = []
    bounds = [round(i * len(lines) / conns) for i in range(conns + 1)]
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    for a, b in itertools.pairwise(bounds):
        parts.append(view[offsets[a] : offsets[b]])
    return Workload(
        label,
        per_line,
        conns,
        len(lines) * per_line if per_line > 1 else len(lines),
        parts,
        len(blob),
    )


# --------------------------------------------------------------------------- client


def _sendall(path: str, part: memoryview, sock: socket.socket) -> None:
    for off in range(0, len(part), SEND_CHUNK):
        sock.sendall(part[off : off + SEND_CHUNK])
    sock.close()


def send(path: str, w: Workload) -> float:
    """Connect, then send every part on its own connection; returns the first-byte time."""
    socks = []
    for _ in w.parts:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        socks.append(s)
    t0 = now_s()
    if len(socks) == 1:
        _sendall(path, w.parts[0], socks[0])
        return t0
    threads = [
        threading.Thread(target=_sendall, args=(path, p, s), daemon=True)
        for p, s in zip(w.parts, socks, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return t0


# --------------------------------------------------------------------------- targets


class Target:
    """A server under test: `run` sends one workload and returns seconds to fully counted."""

    name = ""
    socket_path = ""

    def run(self, w: Workload) -> float:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class DaemonTarget(Target):
    """The real daemon; done when its own accepted counter reaches the cumulative total."""

    name = "daemon"

    def __init__(self, tmp: Path) -> None:
        from sidecar.baseline import write_baseline

        rng = np.random.default_rng(1)
        baseline = tmp / "baseline.parquet"
        write_baseline(
            baseline,
            MODEL,
            numeric={f: rng.random(WINDOW) for f in FEATURES},
            categorical={},
            prediction=rng.integers(0, 2, WINDOW).astype(float),
            prediction_kind="numeric",
        )
        extra = {
            "models": [
                {
                    "name": MODEL,
                    "version": "1.0.0",
                    "baseline": {"path": str(baseline)},
                    "features": [{"name": f, "type": "numeric"} for f in FEATURES],
                    "prediction": {"type": "numeric"},
                }
            ],
            # No drift pass or snapshot during the runs: this measures ingest alone.
            "drift": {"window_size": WINDOW, "interval_s": 3600},
            "state": {"snapshot_interval_s": 3600},
            "log": {"level": "warning"},
        }
        self.d: DaemonProcess = start_daemon(tmp, extra, wait_ready=True)
        self.socket_path = self.d.socket_path
        self.expected = 0
        self.polls = 0
        self._http = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=30)

    def scrape(self, path: str = "/metrics") -> str:
        for attempt in range(2):
            try:
                self._http.request("GET", path)
                r = self._http.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError(f"/metrics answered {r.status}")
                return body.decode()
            except (http.client.HTTPException, OSError):
                self._http.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def accepted(self) -> float:
        v = sample_value(
            self.scrape(f"/metrics?name[]={ACCEPTED}"), ACCEPTED, f'model_name="{MODEL}"'
        )
        return -1.0 if v is None else v

    def run(self, w: Workload) -> float:
        before = self.expected
        self.expected += w.events
        t0 = send(self.socket_path, w)
        deadline = time.monotonic() + 120
        while True:
            got = self.accepted()
            t1 = now_s()
            self.polls += 1
            if got >= self.expected:
                break
            if time.monotonic() > deadline or self.d.proc.poll() is not None:
                raise RuntimeError(f"daemon accepted {got:.0f} of {self.expected} events")
            # Sleep through most of the time the rate so far says is left, then poll often.
            done = got - before
            left = (t1 - t0) * (w.events - done) / done if done > 0 else 0.0
            time.sleep(min(max(POLL_S, 0.8 * left), 1.0))
        if got != self.expected:
            raise RuntimeError(f"daemon accepted {got:.0f}, expected exactly {self.expected}")
        return t1 - t0

    def verify(self) -> dict[str, Any]:
        """Every total of the run, from the daemon's own /metrics; raises on any mismatch."""
        m = parse_metrics(self.scrape())
        n = self.expected
        problems = []

        def expect(what: str, got: float | None, want: float) -> None:
            if got != want:
                problems.append(f"{what}: {got} != {want}")

        expect("received", m.value("drift_sidecar_events_received_total", transport="socket"), n)
        rejected = sum(m.series("drift_sidecar_events_rejected_total").values())
        dropped = sum(m.series("drift_sidecar_events_dropped_total").values())
        expect("rejected", rejected, 0)
        expect("dropped", dropped, 0)
        expect(
            "requests",
            m.value(
                "ml_prediction_requests_total",
                model_name=MODEL,
                model_version="1.0.0",
                status="success",
            ),
            n,
        )
        expect("latency count", m.value("ml_prediction_latency_seconds_count", model_name=MODEL), n)
        expect("window", m.value("ml_drift_window_samples", model_name=MODEL), min(n, WINDOW))
        bins: dict[str, float] = {}
        for labels, v in m.series("ml_feature_bin_events_total").items():
            f = dict(labels)["feature_name"]
            bins[f] = bins.get(f, 0.0) + v
        for f in FEATURES:
            expect(
                f"{f} histogram count",
                m.value("ml_feature_value_count", model_name=MODEL, feature_name=f),
                n,
            )
            expect(f"{f} bin counts", bins.get(f), n)
        if problems:
            raise RuntimeError("daemon totals do not match: " + "; ".join(problems))
        return {"events": n, "features_checked": len(FEATURES), "polls": self.polls}

    def close(self) -> None:
        self._http.close()
        try:
            self.d.stop()
        finally:
            kill_quietly(self.d)


class BareTarget(Target):
    """`--serve MODE` of this file in a subprocess (`common.serve_counting`)."""

    def __init__(self, mode: str, tmp: Path) -> None:
        self.name = mode
        self.socket_path = str(tmp / f"{mode}.sock")
        self.server = CountingServer(__file__, mode, self.socket_path)

    def run(self, w: Workload) -> float:
        self.server.expect(w.events)
        t0 = send(self.socket_path, w)
        return self.server.counted_at() - t0

    def close(self) -> None:
        self.server.close()


# --------------------------------------------------------------------------- bare servers


def _seed_instrumentation() -> Callable[[list[Any]], int]:
    """The monitoring guide's metric definitions and per-event calls, on a fresh registry."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

    reg = CollectorRegistry()
    requests = Counter(
        "ml_prediction_requests_total",
        "Total prediction requests",
        ["model_name", "model_version", "status"],
        registry=reg,
    )
    latency = Histogram(
        "ml_prediction_latency_seconds",
        "Prediction latency in seconds",
        ["model_name"],
        buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0],
        registry=reg,
    )
    confidence = Histogram(
        "ml_prediction_confidence",
        "Model prediction confidence scores",
        ["model_name", "predicted_class"],
        buckets=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
        registry=reg,
    )
    value = Summary(
        "ml_prediction_value", "Distribution of prediction values", ["model_name"], registry=reg
    )
    feature = Histogram(
        "ml_feature_value",
        "Feature value distribution",
        ["feature_name"],
        buckets=np.linspace(0, 1, 11).tolist(),
        registry=reg,
    )

    def handle(events: list[Any]) -> int:
        for ev in events:
            for name, v in (ev.features or {}).items():
                feature.labels(feature_name=name).observe(v)
            requests.labels(
                model_name=ev.model, model_version=ev.version or "1.0.0", status=ev.status
            ).inc()
            confidence.labels(model_name=ev.model, predicted_class=str(int(ev.prediction))).observe(
                ev.confidence
            )
            value.labels(model_name=ev.model).observe(ev.prediction)
            latency.labels(model_name=ev.model).observe(ev.latency_s)
        return len(events)

    return handle


def serve(mode: str, path: str) -> None:
    """A bare Unix-socket server: split lines, decode like the daemon, count (and instrument)."""
    import asyncio

    from sidecar.events import Event

    # One typed decode per line, as the daemon's fast path (faster than joining the lines
    # into one array and decoding that).
    decode = msgspec.json.Decoder(Event | list[Event]).decode
    instrument = _seed_instrumentation() if mode == "seed" else None

    class Proto(asyncio.Protocol):
        def __init__(self, add: Callable[[int], None]) -> None:
            self.buf = bytearray()
            self.add = add

        def data_received(self, data: bytes) -> None:
            last = data.rfind(b"\n")
            if last < 0:
                self.buf += data
                return
            head = bytes(self.buf) + data[: last + 1] if self.buf else data[: last + 1]
            self.buf = bytearray(data[last + 1 :])
            lines = head.split(b"\n")
            lines.pop()
            events: list[Any] = []
            for line in lines:
                item = decode(line)
                if isinstance(item, list):
                    events.extend(item)
                else:
                    events.append(item)
            self.add(len(events) if instrument is None else instrument(events))

    serve_counting(path, Proto)


# --------------------------------------------------------------------------- main


@dataclass
class Case:
    workload: Workload
    seed_workload: Workload
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def rates(self, target: str) -> list[float]:
        n = self.seed_workload.events if target == "seed" else self.workload.events
        return [n / s for s in self.seconds[target]]

    def rate(self, target: str) -> Spread:
        return Spread.of(self.rates(target))

    def ratio(self, a: str, b: str) -> Spread:
        """a / b paired by repeat: the two ran back to back, so they saw the same noise."""
        return Spread.of(x / y for x, y in zip(self.rates(a), self.rates(b), strict=True))


class Profiler:
    """py-spy sampling the daemon process for the whole measured phase (raw collapsed stacks)."""

    def __init__(self, pid: int, out: Path) -> None:
        import shutil

        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.out = out
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy attaches asynchronously; let it find the interpreter

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        if not self.out.exists():
            return f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"
        return summarize_profile(self.out)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Inclusive and self share of samples per function from py-spy's collapsed stacks."""
    incl: dict[str, int] = {}
    self_: dict[str, int] = {}
    total = 0
    for ln in path.read_text().splitlines():
        stack, _, count = ln.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        self_[frames[-1]] = self_.get(frames[-1], 0) + n
    if not total:
        return "no samples"
    lines = [
        f"{total} samples (non-idle) of the daemon during the measured runs",
        "inclusive%  self%  function",
    ]
    for f, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:9.1f}  {100 * self_.get(f, 0) / total:5.1f}  {f}")
    lines.append("top self time:")
    for f, n in sorted(self_.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:9.1f}  {f}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py:123)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else name


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, help="events per run (default 102400; quick 2560)")
    p.add_argument(
        "--seed-events", type=int, help="events per seed-style run (default 20480; quick 1024)"
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the daemon with py-spy during the runs; print a summary",
    )
    p.add_argument(
        "--batch",
        type=int,
        action="append",
        choices=[1, BATCH],
        help=f"events per line; repeat for several (default: 1 and {BATCH})",
    )
    p.add_argument(
        "--conns",
        type=int,
        action="append",
        choices=[1, 4],
        help="connections; repeat for several (default: 1 and 4)",
    )
    p.add_argument(
        "--no-seed",
        action="store_true",
        help="skip the seed-style server (its column and ratio are then absent)",
    )
    p.add_argument("--serve", choices=["decode", "seed"], help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n\n")[0], argv, extra_args)
    if args.serve:
        serve(args.serve, args.socket)
        return 0
    n = args.events or (2560 if args.quick else 102_400)
    n_seed = args.seed_events or (1024 if args.quick else 20_480)
    n, n_seed = _round_up(n, BATCH * 4), _round_up(min(n_seed, n), BATCH * 4)

    t_enc = time.perf_counter()
    events = make_events(n)
    cases: list[Case] = []
    for batch in args.batch or (1, BATCH):
        lines = encode_lines(events, batch)
        per_line = batch
        seed_lines = lines[: n_seed // per_line]
        for conns in args.conns or (1, 4):
            label = f"{'1/line' if batch == 1 else f'{batch}/line'} x{conns} conn"
            cases.append(
                Case(
                    make_workload(lines, per_line, conns, label),
                    make_workload(seed_lines, per_line, conns, label),
                )
            )
    del events
    print(
        f"workload: {n} events ({cases[0].workload.nbytes / n:.0f} B/event one per line), "
        f"seed-style {n_seed}; encoded in {time.perf_counter() - t_enc:.1f}s; "
        f"{args.repeats} repeats",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmpdir:
        tmp = Path(tmpdir)
        targets: list[Target] = []
        try:
            targets.append(DaemonTarget(tmp / "daemon"))
            targets.append(BareTarget("decode", tmp))
            if not args.no_seed:
                targets.append(BareTarget("seed", tmp))
            # One untimed pass warms every server (imports, allocator, code paths).
            for t in targets:
                t.run(cases[-1].seed_workload)
            daemon = targets[0]
            assert isinstance(daemon, DaemonTarget)
            profiler = Profiler(daemon.d.proc.pid, args.profile) if args.profile else None
            profile = ""
            for _ in range(args.repeats):
                for case in cases:
                    for t in targets:
                        w = case.seed_workload if t.name == "seed" else case.workload
                        case.seconds.setdefault(t.name, []).append(t.run(w))
            if profiler is not None:
                profile = profiler.stop()
            verified = daemon.verify()
        finally:
            for t in targets:
                t.close()

    rows = []
    summary = []
    results = []
    with_seed = not args.no_seed
    for case in cases:
        d, dec = case.rate("daemon"), case.rate("decode")
        r_dec = case.ratio("daemon", "decode")
        seed = case.rate("seed") if with_seed else None
        r_seed = case.ratio("daemon", "seed") if with_seed else None
        row = [case.workload.name, d.fmt(), dec.fmt(), r_dec.fmt(2)]
        if seed is not None and r_seed is not None:
            row += [seed.fmt(), r_seed.fmt(2)]
        rows.append(row)
        results.append(
            {
                "case": case.workload.name,
                "batch": case.workload.batch,
                "connections": case.workload.conns,
                "events": case.workload.events,
                "seed_events": case.seed_workload.events,
                "bytes": case.workload.nbytes,
                "daemon_events_per_s": d,
                "decode_only_events_per_s": dec,
                "seed_style_events_per_s": seed,
                "daemon_over_decode": r_dec,
                "daemon_over_seed": r_seed,
                "seconds": case.seconds,
            }
        )
        note = f"{r_dec.median:.2f}x decode-only"
        if r_seed is not None:
            note += f", {r_seed.median:.1f}x seed-style"
        summary.append(summary_row(f"daemon {case.workload.name}", d, "events/s", note))
        if case.workload.batch == BATCH and case.workload.conns == 1:
            summary.append(summary_row(f"decode-only {case.workload.name}", dec, "events/s"))
            if seed is not None:
                summary.append(summary_row(f"seed-style {case.workload.name}", seed, "events/s"))

    print()
    if args.profile:
        print(profile + "\n")
    print(
        table(
            [
                "case",
                "daemon ev/s",
                "decode-only ev/s",
                "daemon/decode",
                *(["seed-style ev/s", "daemon/seed"] if with_seed else []),
            ],
            rows,
        )
    )
    print(
        f"\nmedian (min-max) over {args.repeats} repeats; ratios are paired per repeat; "
        f"goals: daemon/decode >= {GOAL_DECODE}, daemon/seed >= {GOAL_SEED}. Daemon totals "
        f"verified on /metrics: {verified['events']} events, per-feature histograms and bin "
        "counters exact."
    )
    report(
        "ingest",
        args,
        summary,
        cases=results,
        verified=verified,
        goals={"daemon_over_decode": GOAL_DECODE, "daemon_over_seed": GOAL_SEED},
    )
    return 0


def _round_up(x: int, k: int) -> int:
    return max(k, (x + k - 1) // k * k)


if __name__ == "__main__":
    sys.exit(main())

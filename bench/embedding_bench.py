"""Embedding drift: speed, calibration and power of the cross-MMD on random Fourier
features, beside an exact quadratic-time MMD permutation test on subsamples.

- speed: a window of 10,000 x 768 against a 50,000 x 768 reference, per backend (numpy,
  torch on the CPU, torch on CUDA when visible): the reference's preparation once, then
  repeated checks (median, min-max).
- calibration: no-drift checks, each with a fresh reference and window, at reduced sizes
  (--calib-*); the share flagged at alpha = 0.05 should be within [0.03, 0.07].
- power: N(0, I_768), a shift of 0.02 in every dimension at 10k vs 50k, and a shift
  confined to 5% of the dimensions; one reference, fresh windows.
- side by side: the same shifts at a subsample the exact test can afford (--exact-n per
  side, --permutations), both tests on the same rows.
- memory: bytes of the window's ring buffer against the float32 rows it keeps, and of the
  reference statistics.
- ingest: the real daemon (`drift-sidecar run`) takes the same events over its socket with
  and without a 768-dim embedding, in one run, repeats interleaved: events/s of each (median,
  min-max), their ratio paired by repeat, and the JSON decode alone of the very same lines
  (msgspec into the daemon's `Event`), so that the extra cost of an embedding in the daemon
  can be set against the extra cost of decoding it. Two models in one daemon: `plain` (16
  numeric features) gets the events without, `emb` (the same features, `embedding: {dim:
  768}`) the same events with an embedding (float32 values, as `tolist()` gives them).
  Drift checks and snapshots are off during the runs: this is ingest alone.

    python bench/embedding_bench.py [--quick] [--json FILE] [--device numpy|cpu|cuda|all]
    python bench/embedding_bench.py --ingest-only [--quick]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py

from sidecar.embedding import select_backend, torch_installed
from sidecar.embedding_window import EmbeddingWindow
from sidecar.stats.mmd import (
    FeatureBackend,
    NumpyBackend,
    build_reference,
    cross_mmd_test,
    median_bandwidth,
    permutation_pvalue,
)

ALPHA = 0.05
INGEST_DIM = 768
INGEST_FEATURES = [f"f{i}" for i in range(16)]
INGEST_WINDOW = 10_000
ACCEPTED = "drift_sidecar_events_accepted_total"


def _normal(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((n, d), dtype=np.float32)


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def unavailable(device: str) -> str | None:
    """Why the one `device` asked for cannot run on this machine, or None."""
    if device not in ("cpu", "cuda"):
        return None
    if not torch_installed():
        return "torch is not installed"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return (
            f"torch {torch.__version__} sees no CUDA GPU "
            f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'})"
        )
    return None


def backends(which: str) -> list[FeatureBackend]:
    names = ["numpy", "cpu", "cuda"] if which == "all" else [which]
    out: list[FeatureBackend] = []
    for name in names:
        if name in ("cpu", "cuda") and not torch_installed():
            continue
        if name == "cuda":
            import torch

            if not torch.cuda.is_available():
                continue
        out.append(select_backend(name, 256))
    return out


def speed(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    ref_rows = _normal(rng, args.ref, args.dim)
    window = _normal(rng, args.window, args.dim)
    out = []
    for backend in backends(args.device):
        t0 = time.perf_counter()
        ref = build_reference(ref_rows, backend, n_features=args.features)
        prep = time.perf_counter() - t0
        cross_mmd_test(ref, window)  # warm: device transfer of the map, kernels
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cross_mmd_test(ref, window)  # ends with .cpu() copies: the GPU has finished
            times.append((time.perf_counter() - t0) * 1000)
        row = {
            "device": backend.device,
            "window": args.window,
            "reference": args.ref,
            "dim": args.dim,
            "features": args.features,
            "reference_prep_s": prep,
            "check_ms": _summary(times),
            "reference_stats_bytes": ref.nbytes,
        }
        if backend.device.startswith("cuda"):
            import torch

            row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
        out.append(row)
        print(
            f"speed  {backend.device:7s} {args.window:,} x {args.dim} vs {args.ref:,}: "
            f"prep {prep:6.2f} s   check median "
            f"{row['check_ms']['median']:8.1f} ms (min {row['check_ms']['min']:.1f}, "
            f"max {row['check_ms']['max']:.1f}) over {args.repeats}"
        )
    return out


def calibration(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    backend = NumpyBackend()
    p = []
    t0 = time.perf_counter()
    for _ in range(args.calib_runs):
        ref = build_reference(
            _normal(rng, args.calib_ref, args.calib_dim),
            backend,
            n_features=args.calib_features,
            seed=int(rng.integers(1 << 30)),
        )
        p.append(cross_mmd_test(ref, _normal(rng, args.calib_window, args.calib_dim)).pvalue)
    pv = np.array(p)
    rate = float((pv < ALPHA).mean())
    se = float(np.sqrt(ALPHA * (1 - ALPHA) / len(pv)))
    print(
        f"calib  {len(pv)} no-drift runs at {args.calib_window} x {args.calib_dim} vs "
        f"{args.calib_ref} ({args.calib_features} features): flagged {rate:.3f} at alpha "
        f"{ALPHA} (binomial sd {se:.3f}); "
        f"rate at 0.01 {float((pv < 0.01).mean()):.3f}  [{time.perf_counter() - t0:.0f} s]"
    )
    return {
        "runs": len(pv),
        "window": args.calib_window,
        "reference": args.calib_ref,
        "dim": args.calib_dim,
        "features": args.calib_features,
        "alpha": ALPHA,
        "flagged_rate": rate,
        "flagged_rate_0.01": float((pv < 0.01).mean()),
        "binomial_sd": se,
    }


def _shifted(rng: np.random.Generator, n: int, d: int, shift: float, share: float) -> np.ndarray:
    x = _normal(rng, n, d)
    k = max(1, round(share * d))
    x[:, :k] += shift
    return x


def power(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    backend = backends(args.device)[0] if args.device != "all" else NumpyBackend()
    ref = build_reference(_normal(rng, args.ref, args.dim), backend, n_features=args.features)
    out = []
    for shift, share in ((0.02, 1.0), (args.sparse_shift, 0.05)):
        hits = 0
        for _ in range(args.power_runs):
            hits += (
                cross_mmd_test(ref, _shifted(rng, args.window, args.dim, shift, share)).pvalue
                < ALPHA
            )
        row = {
            "shift": shift,
            "share_of_dims": share,
            "window": args.window,
            "reference": args.ref,
            "dim": args.dim,
            "runs": args.power_runs,
            "detected_rate": hits / args.power_runs,
        }
        out.append(row)
        print(
            f"power  shift {shift} in {share:.0%} of {args.dim} dims, {args.window} vs "
            f"{args.ref}: detected {hits}/{args.power_runs}"
        )
    return out


def side_by_side(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Both tests on the same subsampled rows: power and time per test."""
    out = []
    n = args.exact_n
    for shift, share in (
        (0.0, 1.0),
        (0.02, 1.0),
        (args.sparse_shift, 0.05),
        (args.exact_shift, 1.0),
    ):
        rff_hits = exact_hits = 0
        rff_t: list[float] = []
        exact_t: list[float] = []
        for _ in range(args.exact_runs):
            y = _normal(rng, n, args.dim)
            x = _shifted(rng, n, args.dim, shift, share)
            t0 = time.perf_counter()
            ref = build_reference(
                y, NumpyBackend(), n_features=args.features, seed=int(rng.integers(1 << 30))
            )
            rff_hits += cross_mmd_test(ref, x).pvalue < ALPHA
            rff_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, p = permutation_pvalue(
                x, y, median_bandwidth(y), args.permutations, seed=int(rng.integers(1 << 30))
            )
            exact_hits += p < ALPHA
            exact_t.append(time.perf_counter() - t0)
        row = {
            "shift": shift,
            "share_of_dims": share,
            "n_per_side": n,
            "dim": args.dim,
            "runs": args.exact_runs,
            "permutations": args.permutations,
            "rff_cross_mmd_rate": rff_hits / args.exact_runs,
            "exact_permutation_rate": exact_hits / args.exact_runs,
            "rff_s": statistics.median(rff_t),
            "exact_s": statistics.median(exact_t),
        }
        out.append(row)
        print(
            f"vs     shift {shift} in {share:.0%} dims, {n} per side: rff cross-MMD "
            f"{rff_hits}/{args.exact_runs} ({row['rff_s']:.2f} s incl. prep), exact MMD "
            f"+ {args.permutations} perms {exact_hits}/{args.exact_runs} "
            f"({row['exact_s']:.2f} s)"
        )
    return out


def power_table(power_rows: list[dict[str, Any]], sbs_rows: list[dict[str, Any]]) -> None:
    """One table: each shift's detection rate at full size (rff cross-MMD only) beside both
    tests on the same subsampled rows, so the figures are read side by side."""
    from common import table

    full = {(r["shift"], r["share_of_dims"]): r for r in power_rows}
    rows = []
    for r in sbs_rows:
        f = full.get((r["shift"], r["share_of_dims"]))
        rows.append(
            [
                f"{r['shift']} in {r['share_of_dims']:.0%} of {r['dim']} dims",
                f"{f['detected_rate']:.2f} ({f['runs']} runs)" if f else "-",
                f"{r['rff_cross_mmd_rate']:.2f}",
                f"{r['exact_permutation_rate']:.2f}",
                f"{r['rff_s']:.2f} / {r['exact_s']:.2f}",
            ]
        )
    r0 = sbs_rows[0]
    f0 = power_rows[0]
    print(
        f"power side by side at alpha {ALPHA}: rff cross-MMD at {f0['window']:,} vs "
        f"{f0['reference']:,}; both tests on the same {r0['n_per_side']:,} per side "
        f"({r0['runs']} runs, exact with {r0['permutations']} permutations)"
    )
    print(
        table(
            [
                "shift",
                "rff full size",
                "rff subsample",
                "exact subsample",
                "s per test rff / exact",
            ],
            rows,
        )
    )


def memory(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    w = EmbeddingWindow(args.window, args.dim)
    w.append(_normal(rng, args.window, args.dim), np.zeros(args.window))
    kept = args.window * args.dim * 4
    ratio = w.nbytes / kept
    print(
        f"memory window {w.nbytes / 2**20:.1f} MiB for {kept / 2**20:.1f} MiB of float32 "
        f"rows: {ratio:.3f}x"
    )
    return {"window_bytes": w.nbytes, "float32_bytes": kept, "ratio": ratio}


# ------------------------------------------------------------------ ingest


def _ingest_lines(n: int, batch: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """The same n events as NDJSON lines of `batch` events: for `plain`, and for `emb`
    with a 768-dim embedding each. Built `batch` events at a time: the embeddings exist as
    Python floats only for the line being encoded."""
    import msgspec

    rng = np.random.default_rng(seed)
    feats = rng.random((n, len(INGEST_FEATURES))).tolist()
    emb = rng.standard_normal((n, INGEST_DIM), dtype=np.float32)
    conf = (0.5 + rng.random(n) / 2).tolist()
    lat = (rng.random(n) * 0.1).tolist()
    enc = msgspec.json.Encoder()
    plain_lines: list[bytes] = []
    emb_lines: list[bytes] = []
    for start in range(0, n, batch):
        plain = [
            {
                "model": "plain",
                "features": dict(zip(INGEST_FEATURES, feats[i], strict=True)),
                "prediction": float(i % 2),
                "confidence": conf[i],
                "latency_s": lat[i],
            }
            for i in range(start, min(start + batch, n))
        ]
        rows = emb[start : start + batch].tolist()  # float32 values, as a client sends them
        with_emb = [
            {**ev, "model": "emb", "embedding": row} for ev, row in zip(plain, rows, strict=True)
        ]
        if batch == 1:
            plain_lines.append(enc.encode(plain[0]) + b"\n")
            emb_lines.append(enc.encode(with_emb[0]) + b"\n")
        else:
            plain_lines.append(enc.encode(plain) + b"\n")
            emb_lines.append(enc.encode(with_emb) + b"\n")
    return plain_lines, emb_lines


def _decode_rate(lines: list[bytes], events: int, repeats: int) -> list[float]:
    """Events/s of the JSON decode alone: msgspec into the daemon's Event, line by line."""
    import msgspec

    from sidecar.events import Event

    decode = msgspec.json.Decoder(Event | list[Event]).decode
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for ln in lines:
            decode(ln)
        rates.append(events / (time.perf_counter() - t0))
    return rates


def _to_array_rate(lines: list[bytes], events: int, repeats: int) -> list[float]:
    """Events/s of the step after the decode: the decoded embeddings (Python lists) into
    the window's float32 rows, checked, as the daemon's tracker does it."""
    from sidecar.embedding import embedding_matrix
    from sidecar.events import decode_lines

    # the first 2,000 events or so: a per-event cost, without holding every list at once
    per_line = max(1, events // max(1, len(lines)))
    values = [ev.embedding for ev in decode_lines(lines[: -(-2_000 // per_line)], 1 << 20).events]
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedding_matrix(values, INGEST_DIM)
        rates.append(len(values) / (time.perf_counter() - t0))
    return rates


class _IngestDaemon:
    """The real daemon with the models `plain` and `emb`; a run sends one model's lines
    and ends when the daemon's accepted counter for it reaches the cumulative total."""

    def __init__(self, tmp: Path, seed: int) -> None:
        from common import start_daemon  # bench/common.py: the tests' daemon harness

        from sidecar.baseline import write_baseline

        rng = np.random.default_rng(seed)
        rows = 2_000
        numeric = {f: rng.random(rows) for f in INGEST_FEATURES}
        paths = {}
        for name, emb in (
            ("plain", None),
            ("emb", rng.standard_normal((rows, INGEST_DIM), dtype=np.float32)),
        ):
            paths[name] = tmp / f"{name}.parquet"
            write_baseline(
                paths[name],
                name,
                numeric=numeric,
                categorical={},
                prediction=rng.integers(0, 2, rows).astype(float),
                prediction_kind="numeric",
                embedding=emb,
            )
        features = [{"name": f, "type": "numeric"} for f in INGEST_FEATURES]
        models: list[dict[str, Any]] = [
            {
                "name": name,
                "version": "1",
                "baseline": {"path": str(paths[name])},
                "features": features,
                "prediction": {"type": "numeric"},
            }
            for name in ("plain", "emb")
        ]
        # numpy: the reference loads without importing torch; ingest does not use either
        models[1]["embedding"] = {"dim": INGEST_DIM, "device": "numpy", "features": 256}
        extra = {
            "models": models,
            "drift": {"window_size": INGEST_WINDOW, "interval_s": 3600},
            "state": {"snapshot_interval_s": 3600},
            "log": {"level": "warning"},
        }
        self.d = start_daemon(tmp, extra, wait_ready=True)
        self.expected = {"plain": 0, "emb": 0}

    def accepted(self, model: str) -> float:
        from common import sample_value

        status, body = self.d.get(f"/metrics?name[]={ACCEPTED}")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        v = sample_value(body.decode(), ACCEPTED, f'model_name="{model}"')
        return -1.0 if v is None else v

    def run(self, model: str, blob: bytes, events: int) -> float:
        """Seconds from the first byte sent until the daemon counted every event."""
        import socket

        before = self.expected[model]
        self.expected[model] += events
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.d.socket_path)
            t0 = time.monotonic()
            s.sendall(blob)
        deadline = t0 + 300
        while True:
            got = self.accepted(model)
            t1 = time.monotonic()
            if got >= self.expected[model]:
                break
            if t1 > deadline or self.d.proc.poll() is not None:
                raise RuntimeError(f"{model}: accepted {got:.0f} of {self.expected[model]}")
            # pace the polls by the rate so far: each one is work taken from ingest
            done = got - before
            left = (t1 - t0) * (events - done) / done if done > 0 else 0.0
            time.sleep(min(max(0.005, 0.8 * left), 0.5))
        if got != self.expected[model]:
            raise RuntimeError(f"{model}: accepted {got:.0f}, expected {self.expected[model]}")
        return t1 - t0

    def verify(self) -> None:
        """Nothing rejected or dropped; the embedding window holds what it should."""
        m = self.d.scrape()
        bad = sum(m.series("drift_sidecar_events_rejected_total").values()) + sum(
            m.series("drift_sidecar_events_dropped_total").values()
        )
        window = m.value("ml_embedding_window_samples", model_name="emb")
        want = min(self.expected["emb"], INGEST_WINDOW)
        if bad or window != want:
            raise RuntimeError(f"rejected/dropped {bad}, embedding window {window} != {want}")

    def close(self) -> None:
        from common import kill_quietly

        try:
            self.d.stop()
        finally:
            kill_quietly(self.d)


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from common import Spread, ratio, table

    out: dict[str, Any] = {"events": args.ingest_events, "dim": INGEST_DIM, "cases": []}
    rows = []
    with tempfile.TemporaryDirectory(prefix="emb-ingest-") as tmp:
        daemon = _IngestDaemon(Path(tmp), args.seed)
        try:
            for batch in args.ingest_batches:
                plain, emb = _ingest_lines(args.ingest_events, batch, args.seed + batch)
                blobs = {"plain": b"".join(plain), "emb": b"".join(emb)}
                n = args.ingest_events
                daemon.run("plain", blobs["plain"], n)  # warm: first-time paths, page faults
                daemon.run("emb", blobs["emb"], n)
                rates: dict[str, list[float]] = {"plain": [], "emb": []}
                for _ in range(args.ingest_repeats):  # interleaved: both see the same noise
                    for model in ("plain", "emb"):
                        rates[model].append(n / daemon.run(model, blobs[model], n))
                dec = {
                    "plain": _decode_rate(plain, n, args.ingest_repeats),
                    "emb": _decode_rate(emb, n, args.ingest_repeats),
                }
                daemon_plain, daemon_emb = Spread.of(rates["plain"]), Spread.of(rates["emb"])
                paired = Spread.of(e / p for e, p in zip(rates["emb"], rates["plain"], strict=True))
                dec_plain, dec_emb = Spread.of(dec["plain"]), Spread.of(dec["emb"])
                to_array = Spread.of(_to_array_rate(emb, n, args.ingest_repeats))
                # What an embedding adds per event, in the daemon and in the decode alone
                extra_daemon_us = (1 / daemon_emb.median - 1 / daemon_plain.median) * 1e6
                extra_decode_us = (1 / dec_emb.median - 1 / dec_plain.median) * 1e6
                to_array_us = 1e6 / to_array.median
                case = {
                    "batch": batch,
                    "bytes_per_event": {k: len(v) / n for k, v in blobs.items()},
                    "daemon_plain": daemon_plain.to_json(),
                    "daemon_embedding": daemon_emb.to_json(),
                    "ratio_embedding_to_plain": paired.to_json(),
                    "decode_plain": dec_plain.to_json(),
                    "decode_embedding": dec_emb.to_json(),
                    "decode_ratio": ratio(dec_emb, dec_plain).to_json(),
                    "extra_us_per_event_daemon": extra_daemon_us,
                    "extra_us_per_event_decode": extra_decode_us,
                    "us_per_event_to_float32": to_array_us,
                    "decode_share_of_extra": (
                        extra_decode_us / extra_daemon_us if extra_daemon_us > 0 else None
                    ),
                }
                out["cases"].append(case)
                share = case["decode_share_of_extra"]
                rows.append(
                    [
                        f"{batch} per line",
                        daemon_plain.fmt(),
                        daemon_emb.fmt(),
                        paired.fmt(2),
                        dec_plain.fmt(),
                        dec_emb.fmt(),
                        f"{extra_daemon_us:.1f}",
                        f"{extra_decode_us:.1f}",
                        f"{to_array_us:.1f}",
                        "n/a" if share is None else f"{share:.0%}",
                    ]
                )
            daemon.verify()
        finally:
            daemon.close()
    print(
        f"ingest {args.ingest_events:,} events of 16 features, with and without a "
        f"{INGEST_DIM}-dim embedding, {args.ingest_repeats} interleaved repeats "
        "(events/s, median (min-max)); +us/ev: what the embedding adds per event in the "
        "daemon and in the JSON decode alone; float32: the decoded lists into the "
        "window's rows; decode share: decode's part of the daemon's extra"
    )
    print(
        table(
            [
                "lines",
                "daemon plain",
                "daemon +emb",
                "ratio",
                "decode plain",
                "decode +emb",
                "+us/ev daemon",
                "+us/ev decode",
                "us/ev float32",
                "decode share",
            ],
            rows,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--device", default="all", choices=["all", "numpy", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="only the timing (bench/gpu_check.py runs this with --device cuda)",
    )
    ap.add_argument("--ingest-only", action="store_true", help="only the ingest section")
    ap.add_argument("--ingest-events", type=int, help="events per ingest run")
    args = ap.parse_args(argv)
    q = args.quick
    args.dim = 64 if q else 768
    args.ref = 5_000 if q else 50_000
    args.window = 1_000 if q else 10_000
    args.features = 256 if q else 1024
    args.repeats = 3 if q else args.repeats
    args.calib_runs = 100 if q else 600
    args.calib_dim, args.calib_ref, args.calib_window = (16, 1000, 300) if q else (64, 4000, 1000)
    args.calib_features = 64 if q else 256
    args.power_runs = 5 if q else 50
    args.sparse_shift = 0.3 if q else 0.1
    args.exact_n = 200 if q else 1000
    args.exact_runs = 3 if q else 10
    args.permutations = 49 if q else 100
    args.exact_shift = 0.3 if q else 0.1
    args.ingest_events = args.ingest_events or (64 if q else 10_000)
    args.ingest_batches = [1, 8] if q else [1, 32]  # 32 x ~15 kB stays under 1 MiB a line
    args.ingest_repeats = 2 if q else args.repeats
    why = unavailable(args.device)
    if why is not None and not args.ingest_only:
        print(f"embedding_bench: device {args.device!r} cannot run here: {why}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    doc: dict[str, Any] = {
        "bench": "embedding",
        "quick": q,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
    }
    if torch_installed():
        import torch

        doc["torch"] = torch.__version__
        doc["cuda"] = torch.cuda.is_available()
    if args.ingest_only:
        doc["ingest"] = ingest(args)
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2))
        return 0
    doc["speed"] = speed(args, rng)
    if args.speed_only:
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2))
        return 0 if doc["speed"] else 2
    doc["calibration"] = calibration(args, rng)
    doc["power"] = power(args, rng)
    doc["side_by_side"] = side_by_side(args, rng)
    power_table(doc["power"], doc["side_by_side"])
    doc["memory"] = memory(args, rng)
    doc["ingest"] = ingest(args)
    doc["summary"] = [
        *(
            {
                "case": f"check {args.window:,} x {args.dim} vs {args.ref:,} ({r['device']})",
                "value": r["check_ms"]["median"],
                "lo": r["check_ms"]["min"],
                "hi": r["check_ms"]["max"],
                "unit": "ms",
                "note": f"reference prep {r['reference_prep_s']:.1f} s",
            }
            for r in doc["speed"]
        ),
        {
            "case": "no-drift share flagged at 0.05",
            "value": doc["calibration"]["flagged_rate"],
            "unit": "",
            "note": f"{doc['calibration']['runs']} runs at {args.calib_window:,} x "
            f"{args.calib_dim} vs {args.calib_ref:,}, {args.calib_features} features",
        },
        *(
            {
                "case": f"power, shift {r['shift']} in {r['share_of_dims']:.0%} of dims",
                "value": r["detected_rate"],
                "unit": "",
                "note": f"{r['runs']} runs",
            }
            for r in doc["power"]
        ),
        *(
            {
                "case": f"power at {r['n_per_side']:,} per side, shift {r['shift']} in "
                f"{r['share_of_dims']:.0%} of dims: rff / exact permutation",
                "value": r["rff_cross_mmd_rate"],
                "unit": "",
                "note": f"exact {r['exact_permutation_rate']:.2f}, {r['runs']} runs",
            }
            for r in doc["side_by_side"]
        ),
        {
            "case": "window bytes / float32 rows",
            "value": doc["memory"]["ratio"],
            "unit": "x",
            "note": "",
        },
        *(
            {
                "case": f"ingest with a {INGEST_DIM}-dim embedding / without "
                f"({c['batch']} per line)",
                "value": c["ratio_embedding_to_plain"]["median"],
                "lo": c["ratio_embedding_to_plain"]["min"],
                "hi": c["ratio_embedding_to_plain"]["max"],
                "unit": "x",
                "note": f"{c['daemon_embedding']['median']:,.0f} vs "
                f"{c['daemon_plain']['median']:,.0f} events/s",
            }
            for c in doc["ingest"]["cases"]
        ),
    ]
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

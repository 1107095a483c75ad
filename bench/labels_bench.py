"""Labels: join throughput with a million predictions waiting, and CBPE's accuracy.

1. Join. The store holds 1,000,000 predictions waiting for their label (each re-added
   after its label, so the store stays full); labels are scored in batches of 1,000
   through `LabelBook.score` (hash the ids, find and take the rows, score the classes),
   as the pipeline calls it after decoding. Reported: labels joined per second, the
   store's bytes per waiting prediction, and the store's own take() alone.
2. Estimation. Synthetic classifiers whose probabilities are calibrated (the truth is drawn
   from them), binary and 5-class, go through the real pipeline in chunks of 5,000
   predictions: each chunk's estimated accuracy (the sum of its predicted classes'
   probabilities over its predictions, `ml_prediction_expected_correct_total`) is compared
   with its realized accuracy (from self-contained labels, `ml_labeled_correct_total`).
   Then the same with probabilities sharpened by a temperature of 0.5 (an over-confident
   model), without calibration and with calibration learned from a labeled baseline of
   10,000 rows (the parquet's `label` and `probabilities` columns).

    python bench/labels_bench.py [--quick] [--json FILE] [--repeats N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Spread, bench_args, report, summary_row

from sidecar.config import parse_config
from sidecar.events import Decoded, Event
from sidecar.health import Health
from sidecar.label_store import KIND_CLASS, PendingStore, id_hashes
from sidecar.loading import load_baselines
from sidecar.pipeline import Pipeline

BATCH = 1_000
CHUNK = 5_000


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


# ------------------------------------------------------------------ join


def join_case(waiting: int, labels: int, repeats: int, seed: int) -> dict[str, Any]:
    cfg = parse_config(
        {
            "labels": {"max_pending": waiting},
            "models": [
                {
                    "name": "clf",
                    "baseline": {"capture": 10**9},
                    "prediction": {"type": "categorical"},
                }
            ],
        }
    )
    pipe = Pipeline(cfg, Health())
    t = pipe.trackers["clf"]
    book = pipe.labels
    rng = np.random.default_rng(seed)
    ids = [f"req-{i:09d}" for i in range(waiting)]
    model = book.model_code("clf")
    assert model is not None
    classes = np.array([book.class_code("0"), book.class_code("1")], dtype=np.float64)
    t.class_vocab.code("0")
    t.class_vocab.code("1")
    now = time.time()

    def add(rows: list[str]) -> None:
        values = classes[rng.integers(0, 2, len(rows))]
        kinds = np.full(len(rows), KIND_CLASS, np.uint8)
        book.store.add(id_hashes("clf", rows), model, np.full(len(rows), now), values, kinds)

    for start in range(0, waiting, 100_000):
        add(ids[start : start + 100_000])
    assert len(book.store) == waiting
    bytes_per = book.store.nbytes() / len(book.store)

    rates = []
    for _ in range(repeats):
        pick = rng.choice(waiting, labels, replace=False)
        chosen = [ids[i] for i in pick]
        events = [
            Event(model="clf", kind="label", id=i, label=str(int(j % 2)))
            for j, i in enumerate(chosen)
        ]
        before = t.performance.results["joined"]
        t0 = time.perf_counter()
        for s in range(0, labels, BATCH):
            book.score(t, events[s : s + BATCH], now)
        rates.append(labels / (time.perf_counter() - t0))
        assert t.performance.results["joined"] - before == labels
        add(chosen)  # back to `waiting`
    # the store alone: take() with the hashes already made
    store = book.store
    take_rates = []
    for _ in range(repeats):
        pick = rng.choice(waiting, labels, replace=False)
        keys = id_hashes("clf", [ids[i] for i in pick])
        t0 = time.perf_counter()
        for s in range(0, labels, BATCH):
            store.take(keys[s : s + BATCH])
        take_rates.append(labels / (time.perf_counter() - t0))
        add([ids[i] for i in pick])
    return {
        "waiting": waiting,
        "labels": labels,
        "batch": BATCH,
        "joined_per_s": Spread.of(rates).to_json(),
        "take_per_s": Spread.of(take_rates).to_json(),
        "bytes_per_waiting": bytes_per,
        "store_bytes": store.nbytes(),
        "_spreads": (Spread.of(rates), Spread.of(take_rates)),
    }


def empty_store_bytes(n: int) -> float:
    """Bytes per row of a store grown to `n` rows (its index is at least twice as big)."""
    store = PendingStore(n)
    store._grow(n)
    return store.nbytes() / n


# ------------------------------------------------------------------ ingest


def ingest_case(n: int, repeats: int) -> dict[str, Any]:
    """Decoded predictions per second through `Pipeline.handle`, with and without what the
    labels feature reads (an `id`: the event waits in the store; `probabilities`: the
    expected confusion): what the feature costs the ingest path."""
    import json

    from sidecar.events import decode_lines

    cfg = parse_config(
        {
            "models": [
                {
                    "name": "m",
                    "baseline": {"capture": 10**9},
                    "features": [{"name": f"f{i}"} for i in range(10)],
                    "prediction": {"type": "categorical"},
                }
            ]
        }
    )
    out: dict[str, Any] = {}
    for with_id, with_probs in ((False, False), (True, False), (False, True), (True, True)):
        lines = []
        for b in range(n // 500):
            batch = []
            for i in range(500):
                ev: dict[str, Any] = {
                    "model": "m",
                    "features": {f"f{j}": float(j) for j in range(10)},
                    "prediction": "ab"[i % 2],
                    "latency_s": 0.01,
                }
                if with_id:
                    ev["id"] = f"{b}-{i}"
                if with_probs:
                    ev["probabilities"] = [0.3, 0.7]
                batch.append(ev)
            lines.append(json.dumps(batch).encode())
        rates = []
        for _ in range(repeats):
            pipe = Pipeline(cfg, Health())
            decoded = decode_lines(lines, 10_000)
            t0 = time.perf_counter()
            pipe.handle(decoded, "socket")
            rates.append(n / (time.perf_counter() - t0))
        key = ("id" if with_id else "no id") + (", probabilities" if with_probs else "")
        out[key] = Spread.of(rates)
    return out


# ------------------------------------------------------------------ estimation


def stream(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated model (its softmax is the truth's law) and the truth."""
    scale = 2.5 if k == 2 else 2.0
    logits = rng.normal(0.0, scale, (n, k))
    p = softmax(logits)
    truth = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return logits, np.minimum(truth, k - 1)


def baseline_file(folder: Path, rng: np.random.Generator, k: int, temp: float, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    logits, truth = stream(rng, rows, k)
    probs = softmax(logits / temp)
    path = folder / f"base-{k}-{temp}.parquet"
    pq.write_table(
        pa.table(
            {
                "x": rng.random(rows),
                "prediction": [str(c) for c in probs.argmax(axis=1)],
                "label": truth.tolist(),
                "probabilities": probs.tolist(),
            }
        ),
        path,
    )
    return path


def estimation_case(
    k: int, temp: float, *, calibrate: bool, chunks: int, chunk: int, seed: int, folder: Path
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    model: dict[str, Any] = {
        "name": "clf",
        "prediction": {"type": "categorical"},
        "features": [{"name": "x"}],
    }
    if calibrate:
        model["baseline"] = {"path": str(baseline_file(folder, rng, k, temp, 10_000))}
    else:
        model["baseline"] = {"capture": 10**9}
    cfg = parse_config({"models": [model]}, source=str(folder / "bench.yaml"))
    pipe = Pipeline(cfg, Health())
    t = pipe.trackers["clf"]
    for name, b in load_baselines(cfg).items():
        pipe.trackers[name].install_baseline(b)
    errors = []
    for _ in range(chunks):
        logits, truth = stream(rng, chunk, k)
        probs = softmax(logits / temp)
        pred = probs.argmax(axis=1)
        names = [str(c) for c in pred]
        events = [
            Event(model="clf", prediction=n, probabilities=row, features={"x": 0.5})
            for n, row in zip(names, probs.tolist(), strict=True)
        ]
        labels = [
            Event(model="clf", kind="label", prediction=n, label=str(y))
            for n, y in zip(names, truth.tolist(), strict=True)
        ]
        perf = t.performance
        e0, c0, l0, r0 = perf.expected_correct, perf.estimated, perf.correct, perf.labeled
        pipe.handle(Decoded(events=events + labels), "socket")
        est = (perf.expected_correct - e0) / (perf.estimated - c0)
        real = (perf.correct - l0) / (perf.labeled - r0)
        assert perf.estimated - c0 == chunk and perf.labeled - r0 == chunk
        errors.append(abs(est - real))
    return {
        "classes": k,
        "temperature": temp,
        "calibrated": calibrate,
        "chunks": chunks,
        "chunk": chunk,
        "mean_abs_error": float(np.mean(errors)),
        "max_abs_error": float(np.max(errors)),
    }


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__.splitlines()[0], argv)
    waiting, labels = (20_000, 5_000) if args.quick else (1_000_000, 100_000)
    chunks, chunk = (2, 1_000) if args.quick else (20, CHUNK)
    join = join_case(waiting, labels, args.repeats, 0)
    joined, taken = join.pop("_spreads")
    print(f"join: {waiting:,} waiting, {labels:,} labels per run in batches of {BATCH}")
    print(f"  LabelBook.score  {joined.fmt()} labels/s")
    print(f"  store.take       {taken.fmt()} labels/s")
    print(f"  memory           {join['bytes_per_waiting']:.1f} bytes per waiting prediction")
    ingest = ingest_case(2_000 if args.quick else 20_000, args.repeats)
    print("\nPipeline.handle, 10 numeric features, batches of 500, events/s:")
    for key, spread in ingest.items():
        print(f"  {key:<20} {spread.fmt()}")
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (2, 5):
            for temp, cal in ((1.0, False), (0.5, False), (0.5, True)):
                cases.append(
                    estimation_case(
                        k,
                        temp,
                        calibrate=cal,
                        chunks=chunks,
                        chunk=chunk,
                        seed=10 + k,
                        folder=Path(tmp),
                    )
                )
    print(f"\nestimated vs realized accuracy, {chunks} chunks of {chunk:,} predictions")
    print(f"{'classes':>7} {'temperature':>11} {'calibrated':>10} {'mean |diff|':>12} {'max':>8}")
    for c in cases:
        print(
            f"{c['classes']:>7} {c['temperature']:>11} {c['calibrated']!s:>10} "
            f"{c['mean_abs_error']:>12.4f} {c['max_abs_error']:>8.4f}"
        )
    summary = [
        summary_row("labels joined/s (1M waiting)", joined, "labels/s"),
        summary_row("bytes per waiting prediction", join["bytes_per_waiting"], "bytes"),
    ]
    for c in cases:
        what = (
            "calibrated model"
            if c["temperature"] == 1.0
            else ("sharpened, calibration on" if c["calibrated"] else "sharpened, no calibration")
        )
        summary.append(
            summary_row(
                f"CBPE |est - real|, {c['classes']} classes, {what}", c["mean_abs_error"], ""
            )
        )
    for key, spread in ingest.items():
        summary.append(summary_row(f"ingest events/s ({key})", spread, "events/s"))
    report(
        "labels",
        args,
        summary,
        join=join,
        estimation=cases,
        ingest={k: v.to_json() for k, v in ingest.items()},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

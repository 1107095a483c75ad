"""Coverage-guided fuzzing of the frame reader (Arrow IPC streams) with atheris.

Run for a fixed time (libFuzzer flags pass through):

    python tests/fuzz/fuzz_frames.py -max_total_time=60
    python tests/fuzz/fuzz_frames.py --write-seeds corpus-frames/   # valid streams to start from

Each input is split at its first byte into a read size and a stream that follows the
`FF FF FF FF` marker; the stream is read read by read, and every batch the reader yields
is folded into a pipeline (a configured model with an embedding, and auto-registration).
A crash is any exception escaping, a stream that reads differently depending on how it
is cut into reads, a reason outside FRAME_ERRORS or REASONS, or a row not counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import atheris
except ImportError:
    sys.exit(
        "atheris is not installed: `pip install atheris` (Linux, CPython 3.8-3.11), "
        "then run this file again"
    )

with atheris.instrument_imports():
    import pyarrow as pa

    from sidecar.config import parse_config
    from sidecar.events import REASONS
    from sidecar.frame_ingest import handle_frame
    from sidecar.frames import FRAME_ERRORS, MARKER, FrameReader
    from sidecar.health import Health
    from sidecar.pipeline import Pipeline

CONFIG = parse_config(
    {
        "auto_register": {"enabled": True},
        "models": [
            {
                "name": "m",
                "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
                "prediction": {"type": "categorical"},
                "embedding": {"dim": 4, "device": "numpy"},
                "baseline": {"capture": 1_000_000},
            }
        ],
    }
)
LIMIT = 1 << 16


def read(chunks: list[bytes]) -> tuple[list[bytes], str | None]:
    reader = FrameReader(LIMIT)
    got: list[bytes] = []
    for c in chunks:
        frames, err = reader.feed(c)
        got += [f.batch.serialize().to_pybytes() for f in frames]
        if err is not None:
            return got, err.reason
    end = reader.finish()
    return got, end.reason if end else None


def test_one_input(data: bytes) -> None:
    if not data:
        return
    step, stream = data[0] + 1, MARKER + data[1:]
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    got, reason = read(chunks)
    if (got, reason) != read([stream]):
        raise AssertionError("reading depends on how the stream is cut into reads")
    if reason is not None and reason not in FRAME_ERRORS:
        raise AssertionError(f"unknown frame error {reason}")
    reader = FrameReader(LIMIT)
    frames, _ = reader.feed(stream)
    health = Health()
    pipeline = Pipeline(CONFIG, health)
    rows = sum(f.batch.num_rows for f in frames)
    accepted = sum(handle_frame(pipeline, f, "socket", now=1.0) for f in frames)
    if accepted + sum(health.rejected.values()) != rows or set(health.rejected) - set(REASONS):
        raise AssertionError(f"rows not counted: {rows} {accepted} {dict(health.rejected)}")


def write_seeds(folder: Path) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = 5
    feats = pa.StructArray.from_arrays(
        [pa.array(rng.normal(size=n)), pa.array(["a", "b", None, "a", "c"])], names=["x", "c"]
    )
    emb = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=4 * n), pa.float32()), 4)
    batch = pa.record_batch(
        {
            "features": feats,
            "prediction": pa.array(["p", "q", None, "p", "q"]),
            "probabilities": pa.array([[0.2, 0.8]] * n, pa.list_(pa.float64())),
            "latency_s": pa.array(rng.random(n)),
            "status": pa.array(["success", "error", None, "success", "x"]),
            "embedding": emb,
        }
    )
    for model in ("m", "auto"):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema.with_metadata({"model": model})) as w:
            w.write_batch(batch)
            w.write_batch(batch.slice(1, 3))
        stream = sink.getvalue().to_pybytes()
        # the seed is what the target reads: a read size, then the stream after the marker
        (folder / f"stream-{model}").write_bytes(b"\x3f" + stream[len(MARKER) :])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        write_seeds(Path(sys.argv[2]))
        sys.exit(0)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

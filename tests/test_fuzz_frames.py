"""Property-based fuzzing of the frame reader (Arrow IPC streams on the socket).

Invariants: reading never raises, whatever follows the marker; a stream reads the same
however it is cut into reads; a stream cut anywhere yields the batches before the cut and
says `truncated` only when the cut is inside a message; a message over the limit and a
second schema stop the stream with their reason; and any batch the reader yields, of any
column types, is folded without raising, every row counted as accepted or rejected with a
known reason.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import parse_config
from sidecar.events import REASONS
from sidecar.frame_ingest import handle_frame
from sidecar.frames import FIELDS, FRAME_ERRORS, MARKER, Frame, FrameReader, message_length
from sidecar.health import Health
from sidecar.pipeline import Pipeline

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 1 << 20


def stream_bytes(batches: list[pa.RecordBatch], meta: dict[str, str] | None = None) -> bytes:
    sink = io.BytesIO()
    schema = batches[0].schema.with_metadata(meta or {"model": "m"})
    with pa.ipc.new_stream(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    return sink.getvalue()


def message_ends(data: bytes) -> list[int]:
    """Offsets where each message of a well-formed stream ends."""
    ends, pos = [], 0
    while pos < len(data):
        n = message_length(data, pos, LIMIT)
        assert n is not None
        pos += n
        ends.append(pos)
    return ends


def read_in_chunks(data: bytes, cuts: list[int]) -> tuple[list[Frame], Any, Any]:
    """The frames of `data` fed in reads cut at `cuts`, the error, and finish()'s."""
    reader = FrameReader(LIMIT)
    got: list[Frame] = []
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(bounds):
        frames, err = reader.feed(data[a:b])
        got += frames
        if err is not None:
            return got, err, None
    return got, None, reader.finish()


def config() -> Any:
    return parse_config(
        {
            "auto_register": {"enabled": True},
            "models": [
                {
                    "name": "m",
                    "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
                    "prediction": {"type": "numeric"},
                    "embedding": {"dim": 3, "device": "numpy"},
                    "baseline": {"capture": 50},
                }
            ],
        }
    )


numbers = st.lists(st.one_of(st.none(), st.floats(allow_nan=True)), min_size=1, max_size=12)


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    """A batch of random columns: v1 field names and others, of fitting and unfitting types."""
    n = draw(st.integers(1, 12))

    def column() -> pa.Array:
        kind = draw(
            st.sampled_from(["float", "int", "str", "dict", "bool", "list", "fixed", "struct"])
        )
        if kind == "dict":
            values = draw(
                st.lists(st.one_of(st.none(), st.text(max_size=3)), min_size=n, max_size=n)
            )
            return pa.array(values, pa.string()).dictionary_encode()
        if kind == "float":
            return pa.array(
                draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n)),
                pa.float64(),
            )
        if kind == "int":
            return pa.array(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), pa.int64()
            )
        if kind == "str":
            return pa.array(
                draw(st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=n, max_size=n)),
                pa.string(),
            )
        if kind == "bool":
            return pa.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        if kind == "list":
            return pa.array(
                draw(
                    st.lists(
                        st.one_of(
                            st.none(), st.lists(st.one_of(st.none(), st.floats()), max_size=4)
                        ),
                        min_size=n,
                        max_size=n,
                    )
                ),
                pa.list_(pa.float64()),
            )
        if kind == "fixed":
            vals = draw(st.lists(st.floats(width=32), min_size=3 * n, max_size=3 * n))
            return pa.FixedSizeListArray.from_arrays(pa.array(vals, pa.float32()), 3)
        names = draw(
            st.lists(st.sampled_from(["x", "c", "y", "zz"]), min_size=1, max_size=3, unique=True)
        )
        children = [
            pa.array(
                draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n)),
                pa.float64(),
            )
            if draw(st.booleans())
            else pa.array(
                draw(st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=n, max_size=n)),
                pa.string(),
            )
            for _ in names
        ]
        return pa.StructArray.from_arrays(children, names=names)

    fields = draw(
        st.lists(
            st.sampled_from([*FIELDS, "other"]),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    return pa.record_batch({f: column() for f in fields})


@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=6))
def test_random_bytes_after_the_marker_never_raise(tail: bytes, cuts: list[int]) -> None:
    got, err, end = read_in_chunks(MARKER + tail, cuts)
    assert err is None or err.reason in FRAME_ERRORS
    assert end is None or end.reason == "truncated"
    health = Health()
    pipeline = Pipeline(config(), health)
    rows = sum(f.batch.num_rows for f in got)
    accepted = sum(handle_frame(pipeline, f, "socket") for f in got)
    assert accepted + sum(health.rejected.values()) == rows == health.received["socket"]


@FUZZ
@given(batches(), st.integers(1, 3), st.lists(st.integers(0, 1 << 16), max_size=8))
def test_any_batch_reads_the_same_however_cut_and_folds_without_raising(
    batch: pa.RecordBatch, copies: int, cuts: list[int]
) -> None:
    data = stream_bytes([batch] * copies)
    whole, err, end = read_in_chunks(data, [])
    assert err is None and end is None and len(whole) == copies
    cut, err2, end2 = read_in_chunks(data, cuts)
    assert err2 is None and end2 is None
    same = batch.serialize().to_pybytes()  # byte equality: NaN is not equal to itself
    assert [f.batch.serialize().to_pybytes() == same for f in cut] == [True] * copies
    health = Health()
    pipeline = Pipeline(config(), health)
    reader = FrameReader(LIMIT)
    frames, _ = reader.feed(data)
    accepted = sum(handle_frame(pipeline, f, "socket") for f in frames)
    assert health.received["socket"] == copies * batch.num_rows
    assert accepted + sum(health.rejected.values()) == copies * batch.num_rows
    assert set(health.rejected) <= set(REASONS)
    assert health.dropped == {}


@FUZZ
@given(st.integers(1, 20), st.integers(0, 10_000))
def test_a_cut_stream_keeps_the_batches_before_the_cut(n_batches: int, at: int) -> None:
    batch = pa.record_batch({"prediction": np.arange(5.0)})
    data = stream_bytes([batch] * n_batches)
    ends = message_ends(data)
    cut = at % (len(data) + 1)
    reader = FrameReader(LIMIT)
    frames, err = reader.feed(data[:cut])
    assert err is None
    whole = sum(1 for e in ends[1 : 1 + n_batches] if e <= cut)
    assert len(frames) == whole
    end = reader.finish()
    assert (end is None) == (cut in {0, *ends})
    assert end is None or end.reason == "truncated"


@FUZZ
@given(st.integers(1, 4), st.integers(64, 4096))
def test_an_oversized_message_stops_the_stream(rows: int, limit: int) -> None:
    big = pa.record_batch({"prediction": np.arange(float(rows * 1000))})
    small = pa.record_batch({"prediction": np.arange(float(rows * 1000))[:1]})
    data = stream_bytes([small, big])
    reader = FrameReader(limit + 600)
    frames, err = reader.feed(data)
    if len(data) - 8 > limit + 600:  # the big batch (or more) is beyond the limit
        assert err is not None and err.reason == "too_large"
    assert len(frames) <= 1


@FUZZ
@given(st.integers(0, 3), st.booleans())
def test_a_schema_change_mid_stream_stops_it(before: int, same_schema: bool) -> None:
    a = pa.record_batch({"prediction": np.arange(3.0)})
    b = a if same_schema else pa.record_batch({"confidence": np.linspace(0, 1, 3)})
    # no end-of-stream marker: the second schema follows the batches (or the first schema)
    if before:
        first = stream_bytes([a] * before)[:-8]
    else:
        first = a.schema.with_metadata({"model": "m"}).serialize().to_pybytes()
    data = first + stream_bytes([b])
    reader = FrameReader(LIMIT)
    frames, err = reader.feed(data)
    assert err is not None and err.reason == "schema_change"
    assert len(frames) == before


def read_buffered(data: bytes, head: int, reads: list[int]) -> tuple[list[Frame], Any, Any]:
    """As `read_in_chunks`, the way a socket connection reads: the first `head` bytes fed
    (the bytes that told the stream apart), the rest written where `get_buffer` says, at
    most `reads[i]` bytes at a time, as a kernel fills a receive buffer."""
    reader = FrameReader(LIMIT)
    got, err = reader.feed(data[:head])
    if err is not None:
        return got, err, None
    pos, i = head, 0
    while pos < len(data):
        buf = reader.get_buffer()
        assert len(buf) > 0
        k = min(len(buf), len(data) - pos, max(1, reads[i % len(reads)]))
        buf[:k] = data[pos : pos + k]
        pos += k
        i += 1
        frames, err = reader.received(k)
        got += frames
        if err is not None:
            return got, err, None
    return got, None, reader.finish()


@FUZZ
@given(
    st.lists(st.integers(0, 30_000), min_size=1, max_size=5),
    st.integers(0, 200),
    st.lists(st.integers(1, 200_000), min_size=1, max_size=6),
    st.integers(0, 2),
)
def test_buffered_reads_give_what_fed_reads_give(
    sizes: list[int], head: int, reads: list[int], damage: int
) -> None:
    """Batches small and larger than the scratch buffer, read however the kernel splits
    them, whole, cut short (truncated) or with a damaged byte (malformed, or a batch
    pyarrow refuses): the same batches, the same error and the same end as one feed."""
    rng = np.random.default_rng(len(sizes) * 7 + head)
    data = stream_bytes([pa.record_batch({"prediction": rng.random(n)}) for n in sizes])
    if damage == 1:
        data = data[: len(data) * 2 // 3]
    elif damage == 2:
        at = len(data) // 2
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    head = min(head, len(data))
    whole, err, end = read_in_chunks(data, [])
    got, err2, end2 = read_buffered(data, head, reads)
    assert [f.batch.serialize().to_pybytes() for f in got] == [
        f.batch.serialize().to_pybytes() for f in whole
    ]
    assert (err and err.reason) == (err2 and err2.reason)
    assert (end and end.reason) == (end2 and end2.reason)

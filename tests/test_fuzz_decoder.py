"""Property-based fuzzing of the event decoder and the socket line framer.

Invariants: decoding never raises; every good event comes out, in order; every non-blank
line yields at least one event or rejection (an empty batch `[]` yields neither); the
framer hands the same lines to the decoder however the byte stream is cut into reads; and
one set of rules holds whatever else a line holds (NaN and Infinity tokens read as null).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hostile import (
    NON_FINITE,
    Tok,
    class1_expected,
    class1_lines,
    hostile_event,
    judged_by_the_model,
    render,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import Config, SocketSettings
from sidecar.events import MAX_ABS_VALUE, MAX_TS, REASONS, Decoded, decode_lines
from sidecar.health import Health
from sidecar.ingest import EventProtocol, IngestServer
from sidecar.pipeline import Pipeline

MAX_BATCH = 20
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(min_size=1, max_size=12)
numbers = st.one_of(st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE), st.integers(-(2**53), 2**53))
good_events = st.fixed_dictionaries(
    {"model": names},
    optional={
        "version": st.text(max_size=8),
        "features": st.dictionaries(
            names, st.one_of(numbers, st.text(max_size=8), st.booleans(), st.none()), max_size=5
        ),
        "prediction": st.one_of(numbers, st.text(max_size=8)),
        "confidence": st.floats(0, 1),
        "latency_s": st.floats(0, 1e6),
        "status": st.sampled_from(["success", "error"]),
        "ts": st.floats(0, MAX_TS),
        "id": st.text(max_size=16),
        "trace_id": st.text("0123456789abcdef", min_size=32, max_size=32),
        "unknown_field": st.integers(),
    },
)


def good_line(ev: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    return json.dumps(ev).encode()


good_lines = st.one_of(
    good_events.map(lambda e: (good_line(e), 1)),
    st.lists(good_events, min_size=1, max_size=MAX_BATCH).map(lambda b: (good_line(b), len(b))),
)

json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def bad_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # random bytes, no newline (a newline would make two lines)
        return draw(st.binary(min_size=1, max_size=200)).replace(b"\n", b" ")
    if kind == 1:  # a good line cut short, maybe inside a UTF-8 sequence
        raw = good_line(draw(good_events)) + "é€😀".encode()
        return raw[: draw(st.integers(1, len(raw) - 1))]
    if kind == 2:  # deep nesting
        depth = draw(st.integers(100, 3_000))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"model": "m", "features": {"x":']))
        return opener * depth
    if kind == 3:  # huge numbers, NaN and Infinity tokens where fields expect numbers
        token = draw(
            st.sampled_from(
                [
                    b"NaN",
                    b"Infinity",
                    b"-Infinity",
                    b"1e999",
                    b"-1e999",
                    b"1" + b"0" * 400,
                    b"1" + b"0" * 5000,
                    b"1e-999",
                ]
            )
        )
        field = draw(st.sampled_from([b"confidence", b"latency_s", b"ts", b"prediction"]))
        return b'{"model": "m", "' + field + b'": ' + token + b"}"
    if kind == 4:  # wrong types in every field
        field = draw(
            st.sampled_from(
                [
                    "model",
                    "version",
                    "features",
                    "prediction",
                    "probabilities",
                    "confidence",
                    "embedding",
                    "status",
                    "trace_id",
                    "kind",
                    "model_memory_bytes",
                ]
            )
        )
        return json.dumps({"model": "m", field: draw(json_values)}).encode()
    if kind == 5:  # duplicate keys
        return b'{"model": "a", "model": ' + json.dumps(draw(json_values)).encode() + b"}"
    if kind == 6:  # any JSON value at all
        return json.dumps(draw(json_values)).encode()
    if kind == 7:  # two objects on one line
        return good_line(draw(good_events)) + b"," + good_line(draw(good_events))
    if kind == 8:  # an over-long batch
        return good_line([{"model": "m"}] * (MAX_BATCH + draw(st.integers(1, 5))))
    return draw(st.text(max_size=50)).replace("\n", " ").encode("utf-8", "surrogatepass")


def _is_empty_batch(line: bytes) -> bool:
    try:
        return bool(json.loads(line) == [])
    except (ValueError, RecursionError):
        return False


def _model_names(events: list[Any]) -> list[str]:
    return [e.model for e in events]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise(lines: list[bytes]) -> None:
    out = decode_lines(lines, MAX_BATCH)
    assert {r.reason for r in out.rejections} <= set(REASONS)


@FUZZ
@given(
    st.lists(
        st.one_of(good_lines.map(lambda g: ("good", g)), bad_lines().map(lambda b: ("bad", b))),
        max_size=25,
    )
)
def test_good_events_survive_any_neighbours(items: list[tuple[str, Any]]) -> None:
    lines = [g[0] if kind == "good" else g for kind, g in items]
    out = decode_lines(lines, MAX_BATCH)
    assert {r.reason for r in out.rejections} <= set(REASONS)
    expected: list[str] = []
    for kind, g in items:
        if kind == "good":
            value = json.loads(g[0])
            expected.extend(e["model"] for e in (value if isinstance(value, list) else [value]))
    got = [e.model for e in out.events]
    # Good events come out in order; events decoded from odd lines may sit between them.
    it = iter(got)
    assert all(any(x == want for x in it) for want in expected)
    # Each line decoded alone gives the same outcome as the lines decoded together.
    alone_events, alone_rejections = [], []
    for line in lines:
        one = decode_lines([line], MAX_BATCH)
        alone_events.extend(one.events)
        alone_rejections.extend(r.reason for r in one.rejections)
        if line.strip() and not _is_empty_batch(line):
            assert one.events or one.rejections, line
    assert _model_names(alone_events) == got
    assert sorted(alone_rejections) == sorted(r.reason for r in out.rejections)


# ---------------------------------------------------------------------- framing
class _Framer:
    """Our own protocol class over a real (never started) IngestServer."""

    def __init__(self, max_line_bytes: int) -> None:
        cfg = Config(socket=SocketSettings(path="unused.sock", max_line_bytes=max_line_bytes))
        self.health = Health()
        self.server = IngestServer(cfg, Pipeline(cfg, self.health), self.health)
        self.proto = EventProtocol(self.server)

    def feed(self, chunks: list[bytes]) -> tuple[list[bytes], int]:
        for c in chunks:
            self.proto.data_received(c)
        self.proto.connection_lost(None)
        lines: list[bytes] = []
        while len(self.server.queue):
            lines.extend(self.server.queue.take())
        return lines, self.health.rejected["line_too_long"]


def reference_framing(stream: bytes, limit: int) -> tuple[list[bytes], int]:
    parts = stream.split(b"\n")
    tail = parts.pop()
    kept = [p for p in parts if len(p) <= limit]
    too_long = len(parts) - len(kept)
    if tail:
        if len(tail) <= limit:
            kept.append(tail)
        else:
            too_long += 1
    return kept, too_long


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes], int]:
    limit = draw(st.integers(8, 400))
    pieces = draw(
        st.lists(
            st.one_of(
                good_lines.map(lambda g: g[0] + b"\n"),
                bad_lines().map(lambda b: b[:600] + b"\n"),
                st.binary(max_size=50),
                st.just(b"\n"),
            ),
            max_size=30,
        )
    )
    stream = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    return stream, chunks, limit


@FUZZ
@given(chunked())
def test_framing_is_independent_of_how_reads_are_cut(case: tuple[bytes, list[bytes], int]) -> None:
    stream, chunks, limit = case
    want = reference_framing(stream, limit)
    assert _Framer(limit).feed(chunks) == want
    assert _Framer(limit).feed([stream]) == want
    one_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert _Framer(limit).feed(one_byte) == want
    # And what the decoder makes of it does not depend on the cut either.
    lines = want[0]
    whole = decode_lines(lines, MAX_BATCH)
    halves = [
        decode_lines(lines[: len(lines) // 2], MAX_BATCH),
        decode_lines(lines[len(lines) // 2 :], MAX_BATCH),
    ]
    assert _model_names(whole.events) == [e.model for h in halves for e in h.events]
    assert sorted(r.reason for r in whole.rejections) == sorted(
        r.reason for h in halves for r in h.rejections
    )


# ---------------------------------------------------------------- one set of rules
# A line that holds NaN or Infinity takes a second step through the decoder (the tokens are
# rewritten to null); it must end in the same verdicts as a line without them.
NEIGHBOUR = {"model": "n", "features": {"v": NON_FINITE[0]}}


def _outcome(out: Decoded) -> tuple[list[Any], list[str]]:
    return list(out.events), [r.reason for r in out.rejections]


def _decode(obj: Any) -> tuple[list[Any], list[str]]:
    return _outcome(decode_lines([render(obj)], MAX_BATCH))


@FUZZ
@given(hostile_event(["m"]), st.sampled_from(NON_FINITE))
def test_an_events_verdict_ignores_non_finite_tokens_elsewhere_on_its_line(
    ev: dict[str, Any], tok: Tok
) -> None:
    events, reasons = _decode([ev])
    neighbour = decode_lines([render([NEIGHBOUR])], MAX_BATCH).events
    assert len(neighbour) == 1
    # Beside an event holding a token, before or after it.
    assert _decode([ev, NEIGHBOUR]) == (events + neighbour, reasons)
    assert _decode([NEIGHBOUR, ev]) == (neighbour + events, reasons)
    # With a token in a field nobody reads.
    assert _decode({**ev, "zz_unknown": tok}) == _decode(ev)
    assert _decode([{**ev, "zz_unknown": [tok, {"a": tok}]}]) == (events, reasons)


@FUZZ
@given(hostile_event(["m"]), st.sampled_from(NON_FINITE), st.data())
def test_a_non_finite_token_reads_as_null_wherever_it_stands(
    ev: dict[str, Any], tok: Tok, data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(sorted(set(ev) | {"features", "latency_s", "ts"})))
    if field == "model":
        return
    assert _decode({**ev, field: tok}) == _decode({**ev, field: None})
    features = ev.get("features")
    if isinstance(features, dict) and features:
        name = data.draw(st.sampled_from(sorted(features)))
        assert _decode({**ev, "features": {**features, name: tok}}) == _decode(
            {**ev, "features": {**features, name: None}}
        )


def test_class1_lines_get_their_verdicts_alone_and_in_one_chunk() -> None:
    lines = [
        (line, None if judged_by_the_model(line) else reason)
        for line, reason in class1_lines("fraud", "auto")
    ]
    for line, reason in lines:
        events, reasons = _outcome(decode_lines([line], MAX_BATCH))
        if line.startswith(b"["):
            assert (len(events), reasons) == (1, [reason]), line
        elif reason is None:
            assert (len(events), reasons) == (1, []), line
        else:
            assert (events, reasons) == ([], [reason]), line
    out = decode_lines([line for line, _ in lines], MAX_BATCH)
    accepted, rejected = class1_expected(lines)
    assert len(out.events) == accepted
    got: dict[str, int] = {}
    for r in out.rejections:
        got[r.reason] = got.get(r.reason, 0) + 1
    assert got == rejected
    # No exemplar timestamp that is not a finite Unix time gets through.
    assert all(e.ts is None or 0 <= e.ts <= MAX_TS for e in out.events)

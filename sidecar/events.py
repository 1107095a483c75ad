"""The wire schema (protocol v1) and its decoding: NDJSON lines of events or event batches.

There is one set of rules, the typed decoder below, whatever a line holds. A line that
carries `NaN`, `Infinity` or `-Infinity` tokens (Python's `json.dumps` writes them) is not
JSON to that decoder; the tokens are rewritten to `null` outside strings, and the line goes
through the same decoder. So such a token reads as a missing value wherever it stands, and
nothing else on the line changes any event's verdict. A number literal too large for a
double (`1e400`) is not such a token: it is `out_of_range` where a number is expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

MAX_ABS_VALUE = 1e100
"""Largest magnitude of a number in an event. Far beyond any real feature, prediction or
latency, it keeps every sum the sidecar exposes (and their squares) finite for far more
events than a process will ever see; a larger number is rejected as `out_of_range`."""
MAX_TS = 1e11
"""Latest `ts` accepted, in Unix seconds (the year 5138): a larger one is not seconds (often
milliseconds) and is rejected as `out_of_range`, as is a negative one."""

Number = Annotated[float, msgspec.Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
FeatureValue = Number | str | bool | None
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_ABS_VALUE)]
_HEX32 = "^[0-9a-fA-F]{32}$"


class Event(msgspec.Struct, gc=False):
    """One prediction as the model server saw it; unknown fields are ignored."""

    model: str
    version: str | None = None
    features: dict[str, FeatureValue] | None = None
    prediction: Number | str | None = None
    probabilities: list[Probability] | dict[str, Probability] | None = None
    """Each in [0, 1]; so the confidence derived from them (their maximum) is one too."""
    confidence: Probability | None = None
    embedding: list[Number] | None = None
    latency_s: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_ABS_VALUE)] | None = None
    status: Literal["success", "error"] = "success"
    ts: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TS)] | None = None
    id: str | None = None
    trace_id: Annotated[str, msgspec.Meta(pattern=_HEX32)] | None = None
    kind: Literal["prediction", "stats"] = "prediction"
    """`stats` events carry telemetry (model_memory_bytes) and are not counted as predictions."""
    model_memory_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    stages: dict[str, Seconds] | None = None
    """Seconds per stage of the prediction (preprocess, inference, ...); sidecar.stages."""


REASONS = (
    "invalid_json",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "unknown_model",
    "label_too_long",
    "too_many_features",
    "batch_too_large",
    "line_too_long",
    "body_too_large",
    "embedding_dim",
)

_line_decoder = msgspec.json.Decoder(Event | list[Event])
_event_decoder = msgspec.json.Decoder(Event)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])

# msgspec raises UnicodeDecodeError for a string that is not UTF-8 and RecursionError for
# deep nesting, not DecodeError; neither may escape, or one bad line would stop the processor.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_DecodeFailure = msgspec.DecodeError | UnicodeDecodeError | RecursionError

# A JSON string (escapes included); what lies between two of them is the rest of the line.
_STRING = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")', re.DOTALL)


@dataclass(slots=True)
class Rejection:
    reason: str
    detail: str


@dataclass(slots=True)
class Decoded:
    """What a chunk of lines decoded to: the good events in order, and each rejection."""

    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def classify(exc: _DecodeFailure) -> str:
    """Map a msgspec error to a rejection reason (the `reason` label)."""
    if not isinstance(exc, msgspec.ValidationError):
        return "invalid_json"
    msg = str(exc)
    if msg.startswith("Object missing required field"):
        return "missing_field"
    if "out of range" in msg or ">=" in msg or "<=" in msg:
        return "out_of_range"
    if msg.startswith(("Invalid enum value", "Expected `str` matching")):
        return "invalid_value"
    if "got `null`" in msg and ("$.embedding[" in msg or "$.stages[" in msg):
        # a NaN or Infinity token read as null: an embedding has no missing components,
        # and a stage's seconds no missing value
        return "invalid_value"
    return "wrong_type"


def decode_lines(lines: Iterable[bytes], max_batch_events: int) -> Decoded:
    """Decode NDJSON lines; one bad event never costs the others of its line or chunk."""
    out = Decoded()
    decode = _line_decoder.decode
    for line in lines:
        # One typed decode per line is the fast path (faster here than joining lines into
        # one array); anything that fails takes the careful path, alone.
        try:
            item = decode(line)
        except _DECODE_ERRORS:
            if line and not line.isspace():
                _decode_line(line, max_batch_events, out)
            continue
        if isinstance(item, list):
            _add(item, max_batch_events, out)
        else:
            out.events.append(item)
    return out


def non_finite_as_null(line: bytes) -> bytes:
    """The line with `NaN`, `Infinity` and `-Infinity` rewritten to `null` outside strings;
    every other byte is kept as it is."""
    parts = _STRING.split(line)  # strings at odd positions, the rest at even ones
    between = b'"'.join(parts[0::2])
    if b"NaN" not in between and b"Infinity" not in between:
        return line
    # "-Infinity" before "Infinity", as a regex would match it; bytes.replace is C-fast
    rewritten = between.replace(b"-Infinity", b"null").replace(b"Infinity", b"null")
    pieces = rewritten.replace(b"NaN", b"null").split(b'"')
    if len(pieces) != len(parts[0::2]):
        return line  # an unterminated string: not JSON either way, leave it to the decoder
    parts[0::2] = pieces
    return b"".join(parts)


def _decode_line(line: bytes, max_batch_events: int, out: Decoded) -> None:
    line = non_finite_as_null(line)
    try:
        item = _line_decoder.decode(line)
    except _DECODE_ERRORS as exc:
        _decode_elementwise(line, exc, max_batch_events, out)
        return
    _add(item, max_batch_events, out)


def _add(item: Event | list[Event], max_batch_events: int, out: Decoded) -> None:
    if isinstance(item, list):
        if len(item) > max_batch_events:
            out.rejections.append(
                Rejection("batch_too_large", f"{len(item)} events > {max_batch_events}")
            )
        else:
            out.events.extend(item)
    else:
        out.events.append(item)


def _decode_elementwise(
    line: bytes, err: _DecodeFailure, max_batch_events: int, out: Decoded
) -> None:
    """A line that failed as a whole: reject it, or each bad element of its batch alone."""
    if line.lstrip()[:1] != b"[":
        out.rejections.append(Rejection(classify(err), str(err)))
        return
    try:
        raws = _raw_list_decoder.decode(line)
    except _DECODE_ERRORS as exc:
        out.rejections.append(Rejection("invalid_json", str(exc)))
        return
    if len(raws) > max_batch_events:
        out.rejections.append(
            Rejection("batch_too_large", f"{len(raws)} events > {max_batch_events}")
        )
        return
    for i, raw in enumerate(raws):
        try:
            out.events.append(_event_decoder.decode(raw))
        except _DECODE_ERRORS as exc:
            out.rejections.append(Rejection(classify(exc), f"[{i}]: {exc}"))


def decode_body(body: bytes, max_batch_events: int) -> Decoded:
    """An HTTP body: one object, an array, or NDJSON; the same rules as the socket."""
    return decode_lines(body.split(b"\n"), max_batch_events)

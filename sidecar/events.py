"""The wire schema (protocol v1) and its decoding: NDJSON lines of events or event batches."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

FeatureValue = float | str | bool | None
_HEX32 = "^[0-9a-fA-F]{32}$"


class Event(msgspec.Struct, gc=False):
    """One prediction as the model server saw it; unknown fields are ignored."""

    model: str
    version: str | None = None
    features: dict[str, FeatureValue] | None = None
    prediction: float | str | None = None
    probabilities: list[float] | dict[str, float] | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    embedding: list[float] | None = None
    latency_s: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    status: Literal["success", "error"] = "success"
    ts: float | None = None
    id: str | None = None
    trace_id: Annotated[str, msgspec.Meta(pattern=_HEX32)] | None = None
    kind: Literal["prediction", "stats"] = "prediction"
    """`stats` events carry telemetry (model_memory_bytes) and are not counted as predictions."""
    model_memory_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None


REASONS = (
    "invalid_json",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "unknown_model",
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


def _decode_line(line: bytes, max_batch_events: int, out: Decoded) -> None:
    try:
        item = _line_decoder.decode(line)
    except _DECODE_ERRORS as exc:
        if (b"NaN" in line or b"Infinity" in line or "Number out of range" in str(exc)) and (
            _decode_python_json(line, max_batch_events, out)
        ):
            return
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


def _decode_python_json(line: bytes, max_batch_events: int, out: Decoded) -> bool:
    """Python's json.dumps writes NaN and Infinity tokens, and big numbers overflow to inf:
    take such lines with the json module (the values then count as missing) rather than
    reject otherwise good events. Returns False when the line is not JSON even so."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    items = obj if isinstance(obj, list) else [obj]
    if len(items) > max_batch_events:
        out.rejections.append(
            Rejection("batch_too_large", f"{len(items)} events > {max_batch_events}")
        )
        return True
    for i, x in enumerate(items):
        try:
            out.events.append(msgspec.convert(x, Event, strict=False))
        except msgspec.ValidationError as exc:
            out.rejections.append(Rejection(classify(exc), f"[{i}]: {exc}"))
    return True


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

"""Turning what callers passed into protocol v1 event objects, on the flusher thread.

Everything here runs off the caller's thread, so it can afford to look at every value.
A value that cannot be sent raises `Invalid`, which drops that one event.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# The fields of a record() tuple, in order; record() builds the tuple positionally.
FIELDS = (
    "ts",
    "features",
    "prediction",
    "probabilities",
    "confidence",
    "latency_s",
    "status",
    "trace_id",
    "id",
    "embedding",
    "stages",
)
RecordTuple = tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any, Any, Any]

_PLAIN_FEATURE = frozenset({int, float, str, bool, type(None)})
_HEX = frozenset("0123456789abcdef")


class Invalid(Exception):
    """One event cannot be sent as it is; the message names the field and why."""


def _scalar(value: Any) -> Any:
    """Unwrap numpy and torch scalars (anything with `.item()`) into plain Python values."""
    item = getattr(value, "item", None)
    if item is None or isinstance(value, (list, tuple, dict, str)):
        return value
    try:
        return item()
    except (TypeError, ValueError, RuntimeError) as exc:
        # A multi-element array has .item() too; it is not a scalar.
        raise Invalid(f"expected a scalar, got {type(value).__name__}") from exc


def _number(value: Any, name: str) -> float | int:
    value = _scalar(value)
    if type(value) is int:
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise Invalid(f"{name}: not a finite number ({value})")
        return value
    raise Invalid(f"{name}: expected a number, got {type(value).__name__}")


def _features(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid(f"features: expected a mapping of name to value, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        v = raw
        if type(key) is not str:
            raise Invalid(f"features: names must be strings, got {type(key).__name__}")
        if type(v) not in _PLAIN_FEATURE:
            v = _scalar(v)
            if type(v) not in _PLAIN_FEATURE:
                raise Invalid(
                    f"features.{key}: expected a number, string, bool or null,"
                    f" got {type(v).__name__}"
                )
        if type(v) is float and not math.isfinite(v):
            # NaN is how pandas and numpy spell "missing"; infinity is a bug upstream.
            if math.isnan(v):
                v = None
            else:
                raise Invalid(f"features.{key}: infinite value")
        out[key] = v
    return out


_PLAIN_NUMBERS = frozenset({float, int})


def _number_list(value: Any, name: str) -> list[float | int]:
    tolist = getattr(value, "tolist", None)
    if tolist is not None and not isinstance(value, (list, tuple)):
        value = tolist()  # numpy arrays and tensors: one C-level conversion
    if not isinstance(value, (list, tuple)):
        raise Invalid(f"{name}: expected a list of numbers, got {type(value).__name__}")
    # Two C-level passes decide the common case (plain finite floats, as tolist() gives);
    # only a list that fails them is checked value by value for the error message.
    if set(map(type, value)) <= _PLAIN_NUMBERS and all(map(math.isfinite, value)):
        return value if isinstance(value, list) else list(value)
    return [_number(v, name) for v in value]


def _probabilities(value: Any) -> list[float | int] | dict[str, float | int]:
    if isinstance(value, Mapping):
        out: dict[str, float | int] = {}
        for k, v in value.items():
            out[str(k)] = _number(v, "probabilities")
        return out
    return _number_list(value, "probabilities")


def _stages(value: Any) -> dict[str, float | int]:
    if not isinstance(value, Mapping):
        raise Invalid(f"stages: expected a mapping of name to seconds, got {type(value).__name__}")
    out: dict[str, float | int] = {}
    for name, raw in value.items():
        if type(name) is not str:
            raise Invalid(f"stages: names must be strings, got {type(name).__name__}")
        s = _number(raw, f"stages.{name}")
        if s < 0:
            raise Invalid(f"stages.{name}: {s} is negative")
        out[name] = s
    return out


def _trace_id(value: Any) -> str:
    if type(value) is int:
        if not 0 < value < 1 << 128:
            raise Invalid("trace_id: integer out of the 128-bit range")
        return format(value, "032x")
    if type(value) is str:
        tid = value.lower()
        if len(tid) == 32 and _HEX.issuperset(tid):
            return tid
        raise Invalid("trace_id: expected 32 hex characters")
    raise Invalid(f"trace_id: expected a string, got {type(value).__name__}")


def build_event(model: str, version: str | None, rec: Sequence[Any]) -> dict[str, Any]:
    """One event object from a record() tuple; raise Invalid naming the first bad field."""
    (
        ts,
        features,
        prediction,
        probabilities,
        confidence,
        latency_s,
        status,
        tid,
        eid,
        emb,
        stages,
    ) = rec
    ev: dict[str, Any] = {"model": model}
    if version is not None:
        ev["version"] = version
    if features is not None:
        ev["features"] = _features(features)
    if prediction is not None:
        prediction = _scalar(prediction)
        if type(prediction) is bool:
            prediction = int(prediction)
        if type(prediction) is not str:
            prediction = _number(prediction, "prediction")
        ev["prediction"] = prediction
    if probabilities is not None:
        ev["probabilities"] = _probabilities(probabilities)
    if confidence is not None:
        c = _number(confidence, "confidence")
        if not 0.0 <= c <= 1.0:
            raise Invalid(f"confidence: {c} is outside [0, 1]")
        ev["confidence"] = c
    if latency_s is not None:
        lat = _number(latency_s, "latency_s")
        if lat < 0:
            raise Invalid(f"latency_s: {lat} is negative")
        ev["latency_s"] = lat
    if status != "success":
        if status != "error":
            raise Invalid(f"status: expected 'success' or 'error', got {status!r}")
        ev["status"] = status
    if tid is not None:
        ev["trace_id"] = _trace_id(tid)
    if eid is not None:
        eid = _scalar(eid)
        if type(eid) is int:
            eid = str(eid)
        if type(eid) is not str:
            raise Invalid(f"id: expected a string, got {type(eid).__name__}")
        ev["id"] = eid
    if emb is not None:
        ev["embedding"] = _number_list(emb, "embedding")
    if stages is not None:
        ev["stages"] = _stages(stages)
    ev["ts"] = _number(ts, "ts")
    return ev


def _column(value: Any, n: int, name: str) -> list[Any]:
    """A per-row column as a plain list (numpy and torch through one `.tolist()`)."""
    tolist = getattr(value, "tolist", None)
    rows = tolist() if tolist is not None and not isinstance(value, (list, tuple)) else value
    if not isinstance(rows, list):
        rows = list(rows)
    if len(rows) != n:
        raise Invalid(f"{name}: {len(rows)} rows, expected {n}")
    return rows


class Batch:
    """Columns for n events, kept as the caller gave them until the flusher expands them."""

    __slots__ = (
        "class_names",
        "columns",
        "feature_names",
        "n",
        "rows",
        "shared",
    )

    def __init__(
        self,
        n: int,
        columns: dict[str, Any],
        shared: dict[str, Any],
        *,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.n = n
        self.columns = columns
        self.shared = shared
        self.feature_names = feature_names
        self.class_names = class_names
        self.rows = rows

    def expand(self) -> Iterator[RecordTuple | Invalid]:
        """Yield one record tuple per row, or an Invalid in place of a row that cannot be."""
        if self.rows is not None:
            yield from self._expand_rows(self.rows)
            return
        n = self.n
        try:
            # One C-level conversion per column; the per-row work below stays lazy so
            # the flusher can hand the GIL back between rows of a large batch.
            cols = {name: _column(value, n, name) for name, value in self.columns.items()}
        except Exception as exc:
            err = exc if isinstance(exc, Invalid) else Invalid(f"{type(exc).__name__}: {exc}")
            for _ in range(n):
                yield err
            return
        names = list(self.feature_names) if self.feature_names is not None else None
        classes = list(self.class_names) if self.class_names is not None else None
        shared = self.shared
        base = [shared.get(f) for f in FIELDS]
        if base[6] is None:
            base[6] = "success"
        per_row = [(FIELDS.index(name), name, col) for name, col in cols.items()]
        for i in range(n):
            rec = list(base)
            try:
                for idx, name, col in per_row:
                    value = col[i]
                    if name == "features" and names is not None:
                        value = _feature_row(value, names)
                    elif name == "prediction" and classes is not None:
                        value = _class_name(value, classes)
                    elif name == "probabilities" and classes is not None:
                        value = _class_probs(value, classes)
                    rec[idx] = value
            except Invalid as exc:
                yield exc
                continue
            yield tuple(rec)  # type: ignore[misc]

    def _expand_rows(self, rows: Sequence[Mapping[str, Any]]) -> Iterator[RecordTuple | Invalid]:
        shared = self.shared
        for row in rows:
            if not isinstance(row, Mapping):
                kind = type(row).__name__
                yield Invalid(f"record_many: expected a mapping per event, got {kind}")
                continue
            unknown = [k for k in row if k not in _FIELD_SET]
            if unknown:
                yield Invalid(f"record_many: unknown field {unknown[0]!r}")
                continue
            yield (
                row.get("ts", shared["ts"]),
                row.get("features"),
                row.get("prediction"),
                row.get("probabilities"),
                row.get("confidence"),
                row.get("latency_s"),
                row.get("status", "success"),
                row.get("trace_id", shared["trace_id"]),
                row.get("id"),
                row.get("embedding"),
                row.get("stages"),
            )


_FIELD_SET = frozenset(FIELDS)


def _feature_row(row: Any, names: list[str]) -> dict[str, Any]:
    if not isinstance(row, list) or len(row) != len(names):
        raise Invalid(f"features: each row needs {len(names)} values")
    return dict(zip(names, row, strict=True))


def _class_name(pred: Any, classes: list[str]) -> Any:
    if type(pred) is int and 0 <= pred < len(classes):
        return classes[pred]
    raise Invalid(f"prediction: class index {pred!r} not in class_names")


def _class_probs(row: Any, classes: list[str]) -> dict[str, Any]:
    if not isinstance(row, list) or len(row) != len(classes):
        raise Invalid(f"probabilities: each row needs {len(classes)} values")
    return dict(zip(classes, row, strict=True))

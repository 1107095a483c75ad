"""The rows of a record batch as events: the decoder's checks, vectorized per column.

Each row is judged as the same event sent as JSON would be, with the same rejection
reasons; a row's first bad field (in `sidecar.frames.FIELDS` order) gives its reason. A
null cell is an absent field (so a null `status` is "success"); a NaN or infinite float
is a null, as Python's `json.dumps` writes them and the JSON path reads them. A column
of a type that the field cannot take is not cast: its non-null cells reject their rows
as `wrong_type`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sidecar.events import MAX_ABS_VALUE, MAX_TS
from sidecar.frames import FIELDS

_REASONS = ("", "missing_field", "wrong_type", "out_of_range", "invalid_value")
WRONG_TYPE, OUT_OF_RANGE, INVALID_VALUE = 2, 3, 4
_HEX32 = "^[0-9a-fA-F]{32}$"


@dataclass(slots=True)
class RowRejections:
    """Rows rejected for one reason and field: their count and one detail."""

    reason: str
    detail: str
    count: int


def is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _numeric_lists(t: pa.DataType, maps: bool) -> bool:
    if pa.types.is_map(t):
        return maps and is_number(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return is_number(t.value_type)
    return False


def fits(name: str, t: pa.DataType) -> bool:
    """Whether a column of type `t` can carry field `name` (else its non-null cells reject
    their rows as `wrong_type`, and its null cells are absent fields)."""
    if name == "features":
        return bool(pa.types.is_struct(t))
    if name == "prediction":
        return is_number(t) or is_text(t)
    if name in ("confidence", "latency_s", "ts"):
        return is_number(t)
    if name in ("status", "trace_id", "id"):
        return is_text(t)
    if name in ("probabilities", "embedding"):
        return _numeric_lists(t, maps=name == "probabilities")
    return False


def fits_feature(t: pa.DataType) -> bool:
    """Whether a child of `features` can carry feature values."""
    return is_number(t) or is_text(t) or bool(pa.types.is_boolean(t))


def valid(arr: pa.Array) -> np.ndarray:
    """Which cells are not null."""
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    out: np.ndarray = arr.is_valid().to_numpy(zero_copy_only=False)
    return out


def floats(arr: pa.Array) -> np.ndarray:
    """A numeric column as float64, NaN for null, NaN and infinity (read-only when it is
    the column's own memory)."""
    return floats_range(arr)[0]


def floats_range(arr: pa.Array) -> tuple[np.ndarray, float, float]:
    """`floats(arr)`, and its least and greatest value (NaN when it has none)."""
    x = np.asarray(arr.to_numpy(zero_copy_only=False))
    if x.dtype != np.float64:
        with np.errstate(invalid="ignore", over="ignore"):
            x = x.astype(np.float64)
    if not x.size:
        return x, np.nan, np.nan
    # min and max tell, without a mask or a warning, that every value is finite: the
    # common case. (NaN wins both; an infinity wins one.)
    lo, hi = float(x.min()), float(x.max())
    if math.isfinite(lo) and math.isfinite(hi):
        return x, lo, hi
    fin = np.isfinite(x)
    x = np.where(fin, x, np.nan)
    if not fin.any():
        return x, np.nan, np.nan
    return x, float(np.nanmin(x)), float(np.nanmax(x))


def outside(x: np.ndarray, low: float, high: float, lo: float, hi: float) -> np.ndarray | None:
    """Where x (NaN for missing) is outside [low, high]; None when nowhere, as its least
    and greatest values `lo` and `hi` (NaN when it has none) tell at once."""
    if math.isnan(lo) or (lo >= low and hi <= high):
        return None
    with np.errstate(invalid="ignore"):
        mask: np.ndarray = (x < low) | (x > high)
    return mask


def list_parts(arr: pa.Array) -> tuple[pa.Array, np.ndarray, pa.Array | None] | None:
    """A list-like column's values (for a map: its items), the offsets of each row into
    them (n + 1, from 0), and a map's keys; None when the column is not list-like."""
    t = arr.type
    n = len(arr)
    keys = None
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        values = arr.values.slice(arr.offset * size, n * size)
        return values, np.arange(n + 1, dtype=np.int64) * size, None
    if pa.types.is_map(t):
        offsets = arr.offsets.to_numpy().astype(np.int64)
        values, keys = arr.items, arr.keys
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = arr.offsets.to_numpy().astype(np.int64)
        values = arr.values
    else:
        return None
    start, stop = int(offsets[0]), int(offsets[-1])
    values = values.slice(start, stop - start)
    if keys is not None:
        keys = keys.slice(start, stop - start)
    return values, offsets - start, keys


def first_bad(kinds: np.ndarray, offsets: np.ndarray, rows_valid: np.ndarray) -> np.ndarray:
    """Per row, the kind (nonzero) of its first bad element, or 0."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int8)
    pos = np.flatnonzero(kinds)
    if pos.size:
        rows = np.searchsorted(offsets, pos, side="right") - 1
        r, first = np.unique(rows, return_index=True)
        out[r] = kinds[pos[first]]
        out[~rows_valid] = 0
    return out


class _Verdicts:
    """The first reason found per row, and a detail per (reason, field)."""

    def __init__(self, n: int) -> None:
        self.reason = np.zeros(n, dtype=np.int8)
        self.found: list[tuple[int, str, np.ndarray]] = []
        self.floats: dict[str, np.ndarray] = {}
        """Numeric columns as `floats` made them, by field (`features.NAME` for features)."""

    def mark(self, mask: np.ndarray, code: int, what: str) -> None:
        new = mask & (self.reason == 0)
        if new.any():
            self.reason[new] = code
            self.found.append((code, what, new))

    def mark_kinds(self, kinds: np.ndarray, what: dict[int, str]) -> None:
        for code, text in what.items():
            self.mark(kinds == code, code, text)

    def rejections(self) -> list[RowRejections]:
        out = []
        for code, what, mask in self.found:
            rows = np.flatnonzero(mask)
            more = f" and {rows.size - 1} more rows" if rows.size > 1 else ""
            out.append(RowRejections(_REASONS[code], f"row {rows[0]}{more}: {what}", rows.size))
        return out


def _numeric_field(
    v: _Verdicts, arr: pa.Array, name: str, *, low: float, high: float, what: str
) -> None:
    if pa.types.is_null(arr.type):
        return
    if not is_number(arr.type):
        v.mark(valid(arr), WRONG_TYPE, f"{name}: a column of {arr.type}, expected numbers")
        return
    x, lo, hi = floats_range(arr)
    v.floats[name] = x
    bad = outside(x, low, high, lo, hi)
    if bad is not None:
        v.mark(bad, OUT_OF_RANGE, f"{name}: {what}")


def _list_field(
    v: _Verdicts,
    arr: pa.Array,
    name: str,
    *,
    null_kind: int,
    low: float,
    high: float,
    what: str,
) -> None:
    t = arr.type
    if pa.types.is_null(t):
        return
    parts = list_parts(arr)
    allowed_map = name == "probabilities"
    if parts is None or (pa.types.is_map(t) and not allowed_map):
        v.mark(valid(arr), WRONG_TYPE, f"{name}: a column of {t}, expected lists of numbers")
        return
    values, offsets, _ = parts
    if not is_number(values.type):
        v.mark(valid(arr), WRONG_TYPE, f"{name}: a column of {t}, expected lists of numbers")
        return
    if values.null_count == 0 and len(values):
        # the common case, told by two reductions in the column's own type (float32
        # embeddings are not widened): every element finite and within range
        raw = np.asarray(values.to_numpy(zero_copy_only=False))
        # as Python floats: comparing a float32 with ±1e100 would cast the bound
        lo, hi = float(raw.min()), float(raw.max())
        if math.isfinite(lo) and math.isfinite(hi) and lo >= low and hi <= high:
            return
    x = floats(values)
    kinds = np.zeros(len(x), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        kinds[(x < low) | (x > high)] = OUT_OF_RANGE
    kinds[np.isnan(x)] = null_kind
    if kinds.any():
        per_row = first_bad(kinds, offsets, valid(arr))
        null_what = "a null, NaN or infinite element"
        v.mark_kinds(per_row, {null_kind: f"{name}: {null_what}", OUT_OF_RANGE: f"{name}: {what}"})


def _text_field(v: _Verdicts, arr: pa.Array, name: str) -> pa.Array | None:
    if pa.types.is_null(arr.type):
        return None
    if not is_text(arr.type):
        v.mark(valid(arr), WRONG_TYPE, f"{name}: a column of {arr.type}, expected strings")
        return None
    return arr


FEATURE_BLOCK = "features"
"""The key, among `check`'s numeric columns, of the numeric features at once: a
(features, rows) float64 block, present when all of them are within range (the common
case, told by two reductions over the whole block)."""
BLOCK_CHILDREN = "features.*"
"""The key of the struct child index of each row of the `FEATURE_BLOCK`."""


@functools.lru_cache(maxsize=64)  # a bound, whatever the clients send
def _numeric_children(t: pa.StructType, encoded: frozenset[str]) -> list[int]:
    """Which children of a `features` struct type are plain numbers; kept per type, as
    every batch of a stream has the same."""
    return [i for i, f in enumerate(t) if is_number(f.type) and f"features.{f.name}" not in encoded]


def _in_place(kids: list[pa.Array]) -> np.ndarray | None:
    """The children as one read-only (k, n) float64 view of the bytes they were read
    from, when they are float64 without nulls and lie end to end there; else None."""
    n = len(kids[0])
    if not n or any(
        not pa.types.is_float64(k.type) or k.null_count or k.offset or len(k) != n for k in kids
    ):
        return None
    bufs = [k.buffers()[1] for k in kids]
    start = bufs[0].address
    if any(b.address != start + j * n * 8 for j, b in enumerate(bufs)):
        return None
    end = start + len(kids) * n * 8
    whole = bufs[0]
    while whole is not None and not (whole.address <= start and end <= whole.address + whole.size):
        whole = whole.parent
    if whole is None:
        return None
    view = np.frombuffer(whole, np.float64, len(kids) * n, start - whole.address)
    view.flags.writeable = False
    return view.reshape(len(kids), n)


def _numeric_block(kids: list[pa.Array]) -> np.ndarray | None:
    """Numeric children of a `features` struct as one (k, n) float64 block (NaN for null,
    NaN and infinity), when every finite value is within ±MAX_ABS_VALUE; otherwise None,
    and the children are checked one by one. When the children are float64 without nulls
    and lie end to end in the stream's bytes (as writers lay out a struct's children), the
    block is a read-only view of those bytes, and every value in it is finite."""
    view = _in_place(kids)
    if view is not None and view.size:
        lo, hi = float(view.min()), float(view.max())
        if math.isfinite(lo) and math.isfinite(hi):
            return view if lo >= -MAX_ABS_VALUE and hi <= MAX_ABS_VALUE else None
    block = np.empty((len(kids), len(kids[0])))
    with np.errstate(invalid="ignore", over="ignore"):
        for j, child in enumerate(kids):
            block[j] = child.to_numpy(zero_copy_only=False)
    if not block.size:
        return block
    lo, hi = float(block.min()), float(block.max())
    if math.isfinite(lo) and math.isfinite(hi):
        return block if lo >= -MAX_ABS_VALUE and hi <= MAX_ABS_VALUE else None
    fin = np.isfinite(block)
    if not fin.all():
        block[~fin] = np.nan
    if fin.any() and (
        float(np.nanmin(block)) < -MAX_ABS_VALUE or float(np.nanmax(block)) > MAX_ABS_VALUE
    ):
        return None
    return block


def check(
    batch: pa.RecordBatch, plan: dict[str, int], encoded: frozenset[str] = frozenset()
) -> tuple[np.ndarray, list[RowRejections], dict[str, np.ndarray]]:
    """Which rows pass the decoder's checks, why the others do not, and the numeric
    columns as float64 (by field; `features.NAME` for a feature), for reuse. `encoded`
    names the dictionary-encoded columns (read as their indices): not taken."""
    n = batch.num_rows
    v = _Verdicts(n)
    if encoded:
        plan = dict(plan)
        for name in FIELDS:
            if name in encoded and name in plan:
                arr = batch.column(plan.pop(name))
                what = f"{name}: a dictionary-encoded column, expected plain values"
                v.mark(valid(arr), WRONG_TYPE, what)
    col = batch.column
    if "features" in plan:
        feats = col(plan["features"])
        if pa.types.is_struct(feats.type):
            kids = feats.flatten()
            at = _numeric_children(feats.type, encoded)
            block = _numeric_block([kids[i] for i in at]) if at else None
            if block is not None:
                v.floats[FEATURE_BLOCK] = block
                v.floats[BLOCK_CHILDREN] = np.array(at, dtype=np.intp)
            in_block = set(at) if block is not None else set()
            for i, (f, child) in enumerate(zip(feats.type, kids, strict=True)):
                if i in in_block:
                    continue
                t = child.type
                if f"features.{f.name}" in encoded:
                    what = f"features.{f.name[:100]}: a dictionary-encoded column"
                    v.mark(valid(child), WRONG_TYPE, what)
                elif is_number(t):
                    x, lo, hi = floats_range(child)
                    v.floats[f"features.{f.name}"] = x
                    bad = outside(x, -MAX_ABS_VALUE, MAX_ABS_VALUE, lo, hi)
                    if bad is not None:
                        what = f"features.{f.name[:100]}: beyond ±{MAX_ABS_VALUE:g}"
                        v.mark(bad, OUT_OF_RANGE, what)
                elif not (is_text(t) or pa.types.is_boolean(t) or pa.types.is_null(t)):
                    v.mark(
                        valid(child),
                        WRONG_TYPE,
                        f"features.{f.name[:100]}: a column of {t}, expected numbers, "
                        "strings or bools",
                    )
        elif not pa.types.is_null(feats.type):
            what = f"features: a column of {feats.type}, expected a struct"
            v.mark(valid(feats), WRONG_TYPE, what)
    if "prediction" in plan:
        pred = col(plan["prediction"])
        if not is_text(pred.type):
            rng = f"beyond ±{MAX_ABS_VALUE:g}"
            _numeric_field(v, pred, "prediction", low=-MAX_ABS_VALUE, high=MAX_ABS_VALUE, what=rng)
    if "probabilities" in plan:
        probs = col(plan["probabilities"])
        what = "outside [0, 1]"
        _list_field(v, probs, "probabilities", null_kind=WRONG_TYPE, low=0.0, high=1.0, what=what)
    if "confidence" in plan:
        conf = col(plan["confidence"])
        _numeric_field(v, conf, "confidence", low=0.0, high=1.0, what="outside [0, 1]")
    if "latency_s" in plan:
        lat = col(plan["latency_s"])
        what = "negative or too large"
        _numeric_field(v, lat, "latency_s", low=0.0, high=MAX_ABS_VALUE, what=what)
    if "status" in plan:
        status = _text_field(v, col(plan["status"]), "status")
        if status is not None:
            ok = pc.is_in(status, value_set=pa.array(["success", "error"])).to_numpy(
                zero_copy_only=False
            )
            v.mark(valid(status) & ~ok, INVALID_VALUE, "status: not 'success' or 'error'")
    if "trace_id" in plan:
        tid = _text_field(v, col(plan["trace_id"]), "trace_id")
        if tid is not None and tid.null_count < n:
            ok = pc.match_substring_regex(tid, _HEX32).fill_null(True)
            v.mark(~ok.to_numpy(zero_copy_only=False), INVALID_VALUE, "trace_id: not 32 hex digits")
    if "id" in plan:
        _text_field(v, col(plan["id"]), "id")
    if "embedding" in plan:
        _list_field(
            v,
            col(plan["embedding"]),
            "embedding",
            null_kind=INVALID_VALUE,
            low=-MAX_ABS_VALUE,
            high=MAX_ABS_VALUE,
            what=f"beyond ±{MAX_ABS_VALUE:g}",
        )
    if "ts" in plan:
        what = f"negative or beyond {MAX_TS:g}"
        _numeric_field(v, col(plan["ts"]), "ts", low=0.0, high=MAX_TS, what=what)
    return v.reason == 0, v.rejections(), v.floats

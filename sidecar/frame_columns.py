"""Arrow record batch columns as the tracker's steps need them (sidecar.frame_ingest):
the numeric matrix, class and category codes, predictions, embeddings, confidences, and
the request, latency and confidence counters, each as its JSON-path twin computes it."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sidecar.events import Event
from sidecar.frame_rows import (
    BLOCK_CHILDREN,
    FEATURE_BLOCK,
    fits,
    fits_feature,
    floats,
    is_number,
    is_text,
    list_parts,
    valid,
)
from sidecar.stats.reference import category_key
from sidecar.tracker import LATENCY_BUCKETS, ModelTracker
from sidecar.vocab import Vocab


class Columns:
    """A batch's columns as the tracker's steps need them."""

    def __init__(
        self,
        batch: pa.RecordBatch,
        plan: dict[str, int],
        version: str | None,
        converted: dict[str, np.ndarray] | None = None,
        encoded: frozenset[str] = frozenset(),
    ) -> None:
        self.batch = batch
        self._converted = converted or {}
        self._encoded = encoded
        self.plan = plan
        self.version = version
        self.n = batch.num_rows
        self.children: dict[str, pa.Array] = {}
        self.struct_rows = 0
        """Rows whose `features` is not null."""
        self.child_names: list[str] = []
        self.block_rows: dict[str, int] = {}
        """Row of each feature in the row checks' block of all features (`FEATURE_BLOCK`
        in `converted`), when there is one."""
        self.from_text = False
        """Whether a numeric feature was read from strings (`column_matrix`)."""
        self.all_finite = False
        """Whether `column_matrix` gave a matrix known to hold finite values only (the
        row checks' block when it is read in place, which it is only when so)."""
        feats = self.get("features")
        if feats is not None and pa.types.is_struct(feats.type):
            self.struct_rows = self.n - feats.null_count
            self.child_names, at = _layout(feats.type, encoded)
            kids = feats.flatten()
            # a repeated name: the last wins, as in JSON; a child of a type no feature
            # takes is null in every row that was accepted: the feature is missing
            self.children = {name: kids[i] for name, i in at.items()}
            children = self._converted.get(BLOCK_CHILDREN)
            if children is not None:
                row_of = {int(c): r for r, c in enumerate(children.tolist())}
                self.block_rows = {name: row_of[i] for name, i in at.items() if i in row_of}

    def block(self) -> np.ndarray | None:
        """The row checks' (features, rows) block of every feature, if they made one."""
        return self._converted.get(FEATURE_BLOCK)

    def get(self, name: str) -> pa.Array | None:
        """The column of field `name`; None when absent, or of a type the field cannot
        take (then it is null in every row that was accepted)."""
        i = self.plan.get(name)
        if i is None:
            return None
        arr = self.batch.column(i)
        return arr if fits(name, arr.type) else None

    def floats(self, key: str, arr: pa.Array) -> np.ndarray:
        """`frame_rows.floats(arr)`, reusing the row checks' conversion of field `key`."""
        got = self._converted.get(key)
        return got if got is not None else floats(arr)

    def take(self, keep: np.ndarray) -> Columns:
        kept = self.batch.filter(pa.array(keep))
        return Columns(kept, self.plan, self.version, None, self._encoded)


@functools.lru_cache(maxsize=64)  # a bound, whatever the clients send
def _layout(t: pa.StructType, encoded: frozenset[str]) -> tuple[list[str], dict[str, int]]:
    """A features struct's child names, and the child index of each feature it carries
    (the last of a repeated name; none for a child of a type no feature takes). Kept per
    type: every batch of a stream has the same. Read only, by its callers."""
    names = [f.name for f in t]
    at: dict[str, int] = {}
    for i, f in enumerate(t):
        if fits_feature(f.type) and f"features.{f.name}" not in encoded:
            at[f.name] = i
        else:
            at.pop(f.name, None)
    return names, at


def column_matrix(tracker: ModelTracker, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """As `event_arrays.numeric_matrix`: (n, k) float64, and the rows holding a
    non-numeric string for a numeric feature."""
    n, names = cols.n, tracker.numeric_names
    block = cols.block()
    if block is not None:
        rows = [cols.block_rows.get(name, -1) for name in names]
        # a read-only block is the stream's own bytes, read in place: all of it finite
        # (frame_rows._numeric_block)
        finite = not block.flags.writeable
        if rows == list(range(block.shape[0])):  # the struct holds the model's features, in order
            cols.all_finite = finite
            return block.T, np.zeros(n, dtype=bool)
        if -1 not in rows:
            cols.all_finite = finite
            return block[rows].T, np.zeros(n, dtype=bool)
    # Filled feature by feature as contiguous rows of its transpose: the columns are
    # contiguous in Arrow, and the sort that follows wants them so too.
    by_feature = np.empty((len(names), n))
    bad = np.zeros(n, dtype=bool)
    for j, name in enumerate(names):
        child = cols.children.get(name)
        row = by_feature[j]
        if child is None or pa.types.is_null(child.type):
            row.fill(np.nan)
        elif block is not None and name in cols.block_rows:
            row[:] = block[cols.block_rows[name]]
        elif is_number(child.type):
            row[:] = cols.floats(f"features.{name}", child)
        elif pa.types.is_boolean(child.type):
            row[:] = floats(child.cast(pa.float64()))
        else:  # strings, read as the JSON path reads a numeric string
            cols.from_text = True
            row.fill(np.nan)
            for i, s in enumerate(child.to_pylist()):
                if s is None:
                    continue
                try:
                    row[i] = float(s)
                except ValueError:
                    bad[i] = True
    return by_feature.T, bad


def column_codes(arr: pa.Array | None, vocab: Vocab, n: int) -> np.ndarray:
    """Vocabulary codes of a categorical column, -1 where missing; new values get their
    codes in the order they first appear, as event by event."""
    out = np.full(n, -1, dtype=np.int32)
    if arr is None or pa.types.is_null(arr.type):
        return out
    t = arr.type
    if is_text(t):
        enc = pc.dictionary_encode(arr)
        keys: list[Any] = enc.dictionary.to_pylist()  # in order of first appearance
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        table = np.array([*(vocab.code(k) for k in keys), -1], dtype=np.int32)
        out[:] = table[idx]
        return out
    if pa.types.is_boolean(t):
        x = floats(arr.cast(pa.float64()))
        labels = {1.0: "true", 0.0: "false"}
    else:
        x = floats(arr)
        labels = {}
    fin = np.flatnonzero(~np.isnan(x))
    if not fin.size:
        return out
    uniq, first, inv = np.unique(x[fin], return_index=True, return_inverse=True)
    table = np.empty(uniq.size, dtype=np.int32)
    for u in np.argsort(first, kind="stable"):
        v = float(uniq[u])
        key = labels.get(v) if labels else category_key(v)
        assert key is not None
        table[u] = vocab.code(key)
    out[fin] = table[inv]
    return out


def column_predictions(tracker: ModelTracker, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """As `event_arrays.prediction_array`."""
    n = cols.n
    pred = cols.get("prediction")
    bad = np.zeros(n, dtype=bool)
    if tracker.pred_vocab is not None:
        return column_codes(pred, tracker.pred_vocab, n), bad
    if pred is None:
        return np.full(n, np.nan), bad
    if is_text(pred.type):
        present = valid(pred)
        if tracker.pred_kind == "numeric":
            bad = present
        return np.full(n, np.nan), bad
    return cols.floats("prediction", pred), bad


def column_embeddings(
    tracker: ModelTracker, cols: Columns
) -> tuple[np.ndarray | None, dict[int, tuple[str, str]]]:
    """As `embedding.embedding_matrix`."""
    dim = tracker.embedding_dim
    if dim is None:
        return None, {}
    n = cols.n
    out = np.full((n, dim), np.nan, dtype=np.float32)
    bad: dict[int, tuple[str, str]] = {}
    arr = cols.get("embedding")
    if arr is None:
        return out, bad
    parts = list_parts(arr)
    assert parts is not None  # the row checks took only list-like columns
    values, offsets, _ = parts
    if (
        pa.types.is_fixed_size_list(arr.type)
        and arr.type.list_size == dim
        and arr.null_count == 0
        and values.null_count == 0
        and pa.types.is_float32(values.type)
    ):
        # float32 rows of the right length, as the client sends them: used in place
        block = np.asarray(values.to_numpy(zero_copy_only=False)).reshape(n, dim)
        if not block.size or (np.isfinite(block.min()) and np.isfinite(block.max())):
            return block, bad
    present = valid(arr)
    lengths = np.diff(offsets)
    wrong = present & (lengths != dim)
    for i in np.flatnonzero(wrong).tolist():
        bad[i] = ("embedding_dim", f"embedding of {int(lengths[i])} values, expected {dim}")
    good = np.flatnonzero(present & ~wrong)
    if good.size:
        x = np.asarray(values.to_numpy(zero_copy_only=False))
        if pa.types.is_fixed_size_list(arr.type):
            block = x.reshape(n, dim)[good]
        else:
            idx = (offsets[good][:, None] + np.arange(dim)[None, :]).ravel()
            block = x[idx].reshape(good.size, dim)
        if block.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):
                block = block.astype(np.float64).astype(np.float32)
        finite = np.isfinite(block).all(axis=1)
        out[good[finite]] = block[finite]
        for i in good[~finite].tolist():
            bad[i] = ("invalid_value", "embedding holds a value that is not a finite float32")
    return out, bad


def count_requests(tracker: ModelTracker, cols: Columns) -> None:
    code = tracker.version_vocab.code(cols.version or tracker.spec.version)
    status = cols.get("status")
    errors = 0
    if status is not None:
        errors = int(pc.sum(pc.equal(status, "error")).as_py() or 0)
    if cols.n - errors:
        tracker.requests[(code, "success")] += cols.n - errors
    if errors:
        tracker.requests[(code, "error")] += errors


def count_latency(tracker: ModelTracker, cols: Columns, now: float) -> None:
    arr = cols.get("latency_s")
    if arr is None:
        return
    lat = cols.floats("latency_s", arr)
    ok = np.isfinite(lat)
    if not ok.any():
        return
    tracker.add_latencies(lat[ok])
    tids = cols.get("trace_id")
    if tids is None or tids.null_count == len(tids):
        return
    with_tid = valid(tids) & ok
    rows = np.flatnonzero(with_tid)
    if not rows.size:
        return
    ts_arr = cols.get("ts")
    ts = cols.floats("ts", ts_arr) if ts_arr is not None else np.full(cols.n, np.nan)
    buckets = np.searchsorted(LATENCY_BUCKETS, lat[rows], side="left")
    # the last event of each bucket is its exemplar, as event by event
    last: dict[int, int] = {}
    for b, i in zip(buckets.tolist(), rows.tolist(), strict=True):
        last[b] = i
    for b, i in last.items():
        tid = tids[i].as_py()
        t = float(ts[i]) if np.isfinite(ts[i]) else now
        tracker.latency_exemplars[b] = (tid.lower(), float(lat[i]), t)


def column_confidences(cols: Columns) -> np.ndarray:
    arr = cols.get("confidence")
    conf = cols.floats("confidence", arr) if arr is not None else np.full(cols.n, np.nan)
    probs = cols.get("probabilities")
    if probs is None:
        return conf
    missing = np.isnan(conf)
    if not missing.any():
        return conf
    parts = list_parts(probs)
    assert parts is not None
    values, offsets, _ = parts
    lengths = np.diff(offsets)
    rows = np.flatnonzero(missing & valid(probs) & (lengths > 0))
    if rows.size:
        x = floats(values)
        # pairs of (start, end) indices; the padding keeps every end a valid index
        padded = np.append(x, -np.inf)
        bounds = np.stack([offsets[rows], offsets[rows + 1]], axis=1).ravel()
        maxima = np.maximum.reduceat(padded, bounds)[::2]
        conf = conf.copy() if not conf.flags.writeable else conf
        conf[rows] = maxima
    return conf


def _fallback_classes(cols: Columns, rows: np.ndarray) -> list[str]:
    """`class_codes.predicted_class` of rows whose prediction gives no class code."""
    pred = cols.get("prediction")
    texts = None
    if pred is not None and is_text(pred.type):
        texts = pred.take(pa.array(rows)).to_pylist()
    probs = cols.get("probabilities")
    parts = list_parts(probs) if probs is not None else None
    pvalid = valid(probs) if probs is not None else None
    out = []
    for j, i in enumerate(rows.tolist()):
        if texts is not None and texts[j] is not None:
            out.append(texts[j])
            continue
        if parts is not None and pvalid is not None and pvalid[i]:
            values, offsets, keys = parts
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            if hi > lo:
                x = floats(values.slice(lo, hi - lo))
                k = int(np.argmax(x))  # the first maximum, as max() finds it
                out.append(keys[lo + k].as_py() if keys is not None else str(k))
                continue
        out.append("none")
    return out


def count_confidence(
    tracker: ModelTracker, cols: Columns, preds: np.ndarray, conf: np.ndarray
) -> np.ndarray | None:
    """As `ModelTracker._count_confidence`: returns the rows' class codes, or None when no
    row has a confidence (then none were needed)."""
    ok = np.isfinite(conf)
    if not ok.any():
        return None
    if ok.all():
        codes = tracker._classes.codes_of(
            preds, tracker.pred_vocab, lambda rows: _fallback_classes(cols, rows)
        )
        tracker.add_confidences(codes, conf)
        return codes
    # only the rows with a confidence give their classes codes, as one by one
    at = np.flatnonzero(ok)
    some = tracker._classes.codes_of(
        preds[at], tracker.pred_vocab, lambda rows: _fallback_classes(cols, at[rows])
    )
    tracker.add_confidences(some, conf[at])
    codes = np.full(cols.n, -1, dtype=np.int64)
    codes[at] = some
    return codes


def label_events(model: str, cols: Columns) -> list[Event] | None:
    """The rows as events carrying what `LabelBook.observe` reads (prediction,
    probabilities, id), or None when the batch has neither probabilities nor ids: then
    there is nothing to estimate and nothing waits for a label. Per-row work, only for
    batches that need it."""
    probs = cols.get("probabilities")
    ids = cols.get("id")
    if probs is None and ids is None:
        return None
    n = cols.n
    plist: list[object] = probs.to_pylist() if probs is not None else [None] * n
    if probs is not None and pa.types.is_map(probs.type):
        plist = [dict(p) if p is not None else None for p in plist]  # type: ignore[call-overload]
    idlist = ids.to_pylist() if ids is not None else [None] * n
    pred = cols.get("prediction")
    if pred is None:
        predlist: list[object] = [None] * n
    elif is_text(pred.type):
        predlist = pred.to_pylist()
    else:
        x = cols.floats("prediction", pred)
        predlist = [None if math.isnan(v) else v for v in x.tolist()]  # NaN: none
    return [
        Event(model=model, prediction=pv, probabilities=pr, id=i)  # type: ignore[arg-type]
        for pv, pr, i in zip(predlist, plist, idlist, strict=True)
    ]

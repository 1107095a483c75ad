"""Record batches into a model's state, column by column: what `Pipeline.handle` and
`ModelTracker.ingest` do for decoded JSON events, done on Arrow columns.

Every step mirrors the JSON path, in the same order, so that the same events give the
same counters, windows, bins and vocabulary codes whichever transport brought them:
routing (and auto-registration), `too_many_features`, the tracker's own rejections
(non-numeric strings, embeddings), then the counters. Per-row Python work is left to the
rare paths (strings where numbers are expected, trace ids for exemplars, rows without a
prediction that need their class from the probabilities).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sidecar.config import Config, SocketSettings
from sidecar.events import MAX_ABS_VALUE, Event, Rejection
from sidecar.frame_rows import check as check_rows
from sidecar.frame_rows import (
    fits,
    fits_feature,
    floats,
    is_number,
    is_text,
    list_parts,
    valid,
)
from sidecar.frames import Frame, FrameError, FrameReader, read_body
from sidecar.health import Health
from sidecar.pipeline import Pipeline
from sidecar.stats.reference import category_key
from sidecar.tracker import CONFIDENCE_BUCKETS, LATENCY_BUCKETS, ModelTracker
from sidecar.vocab import Vocab


class _Connection(Protocol):
    """What of `ingest.EventProtocol` a frame connection uses."""

    transport: asyncio.Transport | None

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class _Queue(Protocol):
    def put_frame(self, frame: Frame, source: Any) -> None: ...


class _Server(Protocol):
    """What of `ingest.IngestServer` a frame connection uses."""

    health: Health
    pipeline: Pipeline

    @property
    def limits(self) -> SocketSettings: ...

    @property
    def queue(self) -> _Queue: ...


class FrameConnection:
    """A socket connection that carries an Arrow IPC stream: its batches go to the queue
    (bounded and back-pressured as lines are); a bad stream closes it, counted."""

    def __init__(self, server: _Server, proto: _Connection) -> None:
        self.server = server
        self.proto = proto
        limits = server.limits
        self.reader: FrameReader | None = FrameReader(limits.max_frame_bytes)
        if not limits.arrow_enabled:
            self._fail(FrameError("refused", "socket.arrow_enabled is false"))

    def feed(self, data: bytes) -> None:
        if self.reader is None:
            return
        frames, err = self.reader.feed(data)
        queue = self.server.queue
        for frame in frames:
            queue.put_frame(frame, self.proto)
        if err is not None:
            self._fail(err)

    def finish(self) -> None:
        """The connection ended: a stream cut inside a message loses that message."""
        if self.reader is not None:
            err = self.reader.finish()
            self.reader = None
            if err is not None:
                self._fail(err)

    def _fail(self, err: FrameError) -> None:
        self.reader = None
        health = self.server.health
        health.frame_errors[err.reason] += 1
        self.server.pipeline.rejection_log.event(
            "frame_stream_closed", err.reason, reason=err.reason, detail=err.detail[:300]
        )
        transport = self.proto.transport
        if transport is not None and not transport.is_closing():
            transport.close()


def handle_frame(
    pipeline: Pipeline,
    frame: Frame,
    transport: str,
    now: float | None = None,
    errors: list[Rejection] | None = None,
) -> int:
    """Fold one record batch into its model; returns how many rows were accepted. Every
    rejection is counted (and appended to `errors` if given), as `Pipeline.handle` does."""
    now = time.time() if now is None else now
    stream, batch = frame.stream, frame.batch
    n = batch.num_rows
    pipeline.health.received[transport] += n
    if n == 0:
        return 0
    if stream.problem is not None:
        pipeline.reject(*stream.problem, n=n, errors=errors)
        return 0
    limit = pipeline.config.socket.max_batch_events
    if n > limit:
        pipeline.reject("batch_too_large", f"{n} rows > {limit}", n=n, errors=errors)
        return 0
    plan = stream.plan
    ok, rejections, converted = check_rows(batch, plan, stream.encoded)
    for r in rejections:
        pipeline.reject(r.reason, r.detail, n=r.count, errors=errors)
    if rejections:
        batch = batch.filter(pa.array(ok))
        converted = {}  # rows were taken out: convert again
    if stream.encoded:  # dictionary-encoded columns are null where rows were accepted
        plan = {k: i for k, i in plan.items() if k not in stream.encoded}
    if "features" in plan and batch.num_rows:
        feats = batch.column(plan["features"])
        max_feats = pipeline.config.socket.max_features_per_event
        if pa.types.is_struct(feats.type) and feats.type.num_fields > max_feats:
            present = valid(feats)
            k = int(present.sum())
            if k:
                detail = f"{feats.type.num_fields} features > {max_feats}"
                pipeline.reject("too_many_features", detail, n=k, errors=errors)
                batch = batch.filter(pa.array(~present))
                converted = {}
    if not batch.num_rows:
        return 0
    assert stream.model is not None
    model = stream.model
    tracker = pipeline.trackers.get(model)
    if tracker is None:
        refusal = pipeline._unregistered(model, first_event(model, stream.version, batch, plan))
        if isinstance(refusal, Rejection):
            pipeline.reject(refusal.reason, refusal.detail, batch.num_rows, errors)
            return 0
        tracker = refusal
    unknown_before = tracker.unknown_features
    cols = _Columns(batch, plan, stream.version, converted, stream.encoded)
    accepted, rejected = ingest_columns(tracker, cols, now)
    for rej in rejected:
        pipeline.reject(rej.reason, rej.detail, errors=errors)
    if tracker.unknown_features != unknown_before:
        feats = batch.column(plan["features"])
        names = sorted(f.name for f in feats.type if f.name not in set(tracker.feature_names))
        pipeline.rejection_log.event(
            "unknown_features",
            tracker.name,
            model=tracker.name,
            features=[nm[:100] for nm in names[:10]],
            distinct=len(names),
            detail="feature names the model does not have, ignored; a typo in the client?",
        )
    return accepted


def ingest_body(
    pipeline: Pipeline, body: bytes, config: Config, errors: list[Rejection]
) -> tuple[int, FrameError | None]:
    """A whole stream (a `POST /v1/events` body): fold its batches up to the first problem;
    returns the rows accepted and that problem, counted in drift_sidecar_frame_errors_total.
    A batch whose processing fails (a defect) is counted as dropped, as on the socket."""
    got, problem = read_body(body, config.socket.max_frame_bytes)
    accepted = 0
    now = time.time()
    for frame in got:
        try:
            accepted += handle_frame(pipeline, frame, "http", now, errors)
        except Exception as exc:  # a defect: count the batch's rows, keep serving
            n = frame.batch.num_rows
            pipeline.health.dropped["internal_error"] += n
            pipeline.rejection_log.event(
                "events_dropped",
                "internal_error:http",
                level="error",
                reason="internal_error",
                count=n,
                transport="http",
                error=repr(exc),
                exc_info=exc,
            )
    if problem is not None:
        pipeline.health.frame_errors[problem.reason] += 1
        pipeline.rejection_log.event(
            "frame_stream_closed", problem.reason, reason=problem.reason, detail=problem.detail
        )
    return accepted, problem


def first_event(
    model: str, version: str | None, batch: pa.RecordBatch, plan: dict[str, int]
) -> Event:
    """The batch's first row as an Event: what auto-registration learns a model from."""
    row: dict[str, Any] = {}
    for name in ("features", "prediction"):
        if name in plan:
            row[name] = batch.column(plan[name]).slice(0, 1).to_pylist()[0]
    feats = row.get("features")
    if isinstance(feats, dict):
        feats = {
            k: None if isinstance(x, float) and not np.isfinite(x) else x for k, x in feats.items()
        }
    pred = row.get("prediction")
    if isinstance(pred, float) and not np.isfinite(pred):
        pred = None
    return Event(model=model, version=version, features=feats, prediction=pred)


class _Columns:
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
        feats = self.get("features")
        if feats is not None and pa.types.is_struct(feats.type):
            self.struct_rows = int(valid(feats).sum())
            self.child_names = [f.name for f in feats.type]
            for f, child in zip(feats.type, feats.flatten(), strict=True):
                # a repeated name: the last wins, as in JSON; a child of a type no feature
                # takes is null in every row that was accepted: the feature is missing
                if fits_feature(child.type) and f"features.{f.name}" not in encoded:
                    self.children[f.name] = child
                else:
                    self.children.pop(f.name, None)

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

    def take(self, keep: np.ndarray) -> _Columns:
        kept = self.batch.filter(pa.array(keep))
        return _Columns(kept, self.plan, self.version, None, self._encoded)


def _numeric_matrix(tracker: ModelTracker, cols: _Columns) -> tuple[np.ndarray, np.ndarray]:
    """As `event_arrays.numeric_matrix`: (n, k) float64, and the rows holding a
    non-numeric string for a numeric feature."""
    n, names = cols.n, tracker.numeric_names
    # Filled feature by feature as contiguous rows of its transpose: the columns are
    # contiguous in Arrow, and the sort that follows wants them so too.
    by_feature = np.empty((len(names), n))
    bad = np.zeros(n, dtype=bool)
    for j, name in enumerate(names):
        child = cols.children.get(name)
        row = by_feature[j]
        if child is None or pa.types.is_null(child.type):
            row.fill(np.nan)
        elif is_number(child.type):
            row[:] = cols.floats(f"features.{name}", child)
        elif pa.types.is_boolean(child.type):
            row[:] = floats(child.cast(pa.float64()))
        else:  # strings, read as the JSON path reads a numeric string
            row.fill(np.nan)
            for i, s in enumerate(child.to_pylist()):
                if s is None:
                    continue
                try:
                    row[i] = float(s)
                except ValueError:
                    bad[i] = True
    return by_feature.T, bad


def _codes(arr: pa.Array | None, vocab: Vocab, n: int) -> np.ndarray:
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


def _predictions(tracker: ModelTracker, cols: _Columns) -> tuple[np.ndarray, np.ndarray]:
    """As `event_arrays.prediction_array`."""
    n = cols.n
    pred = cols.get("prediction")
    bad = np.zeros(n, dtype=bool)
    if tracker.pred_vocab is not None:
        return _codes(pred, tracker.pred_vocab, n), bad
    if pred is None:
        return np.full(n, np.nan), bad
    if is_text(pred.type):
        present = valid(pred)
        if tracker.pred_kind == "numeric":
            bad = present
        return np.full(n, np.nan), bad
    return cols.floats("prediction", pred), bad


def _embeddings(
    tracker: ModelTracker, cols: _Columns
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


def ingest_columns(
    tracker: ModelTracker, cols: _Columns, now: float
) -> tuple[int, list[Rejection]]:
    """`ModelTracker.ingest` on columns: returns how many rows were accepted, and the
    rejections."""
    num, bad = _numeric_matrix(tracker, cols)
    preds, bad_pred = _predictions(tracker, cols)
    bad |= bad_pred
    emb, bad_emb = _embeddings(tracker, cols)
    rejections: list[Rejection] = []
    ids = cols.get("id")
    if bad.any() or bad_emb:
        id_list = ids.to_pylist() if ids is not None else None
        for i in sorted(set(np.flatnonzero(bad).tolist()) | bad_emb.keys()):
            if bad[i]:
                reason, detail = "wrong_type", "non-numeric string for a numeric feature"
            else:
                reason, detail = bad_emb[i]
            name = (id_list[i] if id_list else None) or i
            rejections.append(Rejection(reason, f"event {name}: {detail}"))
        keep = ~bad
        if bad_emb:
            keep[list(bad_emb)] = False
        if not keep.any():
            return 0, rejections
        cols = cols.take(keep)
        num, _ = _numeric_matrix(tracker, cols)
        preds, _ = _predictions(tracker, cols)
        if emb is not None:
            emb = emb[keep]
    n = cols.n

    finite = np.isfinite(num)
    all_finite = bool(finite.all())
    if all_finite:
        n_finite = np.full(num.shape[1], n, dtype=np.int64)
    else:
        num[~finite] = np.nan
        n_finite = finite.sum(axis=0)
    ordered = np.sort(num.T, axis=1)  # num.T is C-contiguous (see _numeric_matrix)
    if ordered.size:
        with np.errstate(invalid="ignore"):
            huge = (np.abs(num) > MAX_ABS_VALUE).any(axis=1)
        if huge.any():  # only a numeric string gets here, as in the JSON path
            id_list = cols.get("id").to_pylist() if cols.get("id") is not None else None  # type: ignore[union-attr]
            for i in np.flatnonzero(huge).tolist():
                name = (id_list[i] if id_list else None) or i
                rejections.append(
                    Rejection("out_of_range", f"event {name}: a feature beyond ±{MAX_ABS_VALUE:g}")
                )
            if huge.all():
                return 0, rejections
            got, more = ingest_columns(tracker, cols.take(~huge), now)
            return got, rejections + more
    tracker.accepted += n

    if cols.struct_rows:
        known = set(tracker.feature_names)
        unknown = sum(1 for name in set(cols.child_names) if name not in known)
        tracker.unknown_features += cols.struct_rows * unknown

    cat = np.full((n, len(tracker.categorical_names)), -1, dtype=np.int32)
    for j, (name, vocab) in enumerate(
        zip(tracker.categorical_names, tracker.cat_vocab, strict=True)
    ):
        cat[:, j] = _codes(cols.children.get(name), vocab, n)
    tracker.missing[: len(tracker.numeric_names)] += n - n_finite
    if cat.shape[1]:
        tracker.missing[len(tracker.numeric_names) :] += (cat < 0).sum(axis=0)

    _count_requests(tracker, cols)
    _count_latency(tracker, cols, now)
    conf = _confidences(cols)
    _count_confidence(tracker, cols, preds, conf)
    tracker._count_predictions(preds)
    tracker.feature_sums += num.sum(axis=0) if all_finite else np.nansum(num, axis=0)
    if ordered.shape[1]:
        tracker.feature_negative |= ordered[:, 0] < 0
    tracker._count_features(ordered, n_finite)

    received = np.full(n, now)
    start = 0
    capture = tracker.capture
    if capture is not None and not capture.done:
        start = capture.take(num, cat, preds, emb)
        if capture.done and tracker.on_capture is not None:
            tracker.on_capture(tracker, tracker._capture_data())
    if start < n:
        if start:
            num, cat, preds, conf = num[start:], cat[start:], preds[start:], conf[start:]
            ordered = np.sort(num.T, axis=1)
            n_finite = np.isfinite(num).sum(axis=0)
        tracker._count_bins(num, cat, preds, ordered, n_finite)
        tracker.window.append(num, cat, preds, conf, received[start:])
        if emb is not None and tracker.embedding_window is not None:
            rows = emb[start:]
            present = ~np.isnan(rows[:, 0]) if rows.shape[1] else np.zeros(0, bool)
            if present.all():
                tracker.embedding_window.append(rows, received[start:])
            elif present.any():
                tracker.embedding_window.append(rows[present], received[start:][present])
    return n, rejections


def _count_requests(tracker: ModelTracker, cols: _Columns) -> None:
    code = tracker.version_vocab.code(cols.version or tracker.spec.version)
    status = cols.get("status")
    errors = 0
    if status is not None:
        errors = int(pc.sum(pc.equal(status, "error")).as_py() or 0)
    if cols.n - errors:
        tracker.requests[(code, "success")] += cols.n - errors
    if errors:
        tracker.requests[(code, "error")] += errors


def _count_latency(tracker: ModelTracker, cols: _Columns, now: float) -> None:
    arr = cols.get("latency_s")
    if arr is None:
        return
    lat = cols.floats("latency_s", arr)
    ok = np.isfinite(lat)
    if not ok.any():
        return
    idx = np.searchsorted(LATENCY_BUCKETS, lat[ok], side="left")
    tracker.latency_counts += np.bincount(idx, minlength=len(LATENCY_BUCKETS) + 1)
    tracker.latency_sum += float(lat[ok].sum())
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


def _confidences(cols: _Columns) -> np.ndarray:
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


def _fallback_classes(cols: _Columns, rows: np.ndarray) -> list[str]:
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


def _count_confidence(
    tracker: ModelTracker, cols: _Columns, preds: np.ndarray, conf: np.ndarray
) -> None:
    ok = np.isfinite(conf)
    if not ok.any():
        return
    cc = tracker._classes
    vocab = cc.vocab
    n = cols.n
    pv = tracker.pred_vocab
    if pv is not None:
        table = np.array([vocab.code(pv.label(c)) for c in range(pv.cap + 1)], np.int64)
        codes: np.ndarray = table[np.maximum(preds, 0)]
        rest = np.flatnonzero(preds < 0)
    else:
        codes = np.zeros(n, dtype=np.int64)
        finite = np.isfinite(preds)
        integral = finite & (preds == np.round(preds))
        if integral.any():
            codes[integral] = cc._index_codes(preds[integral])
        regression = finite & ~integral
        if regression.any():
            codes[regression] = vocab.code("none")
        rest = np.flatnonzero(~finite)
    if rest.size:
        for i, label in zip(rest.tolist(), _fallback_classes(cols, rest), strict=True):
            codes[i] = vocab.code(label)
    classes = codes[ok]
    nb = len(CONFIDENCE_BUCKETS) + 1
    idx = np.searchsorted(CONFIDENCE_BUCKETS, conf[ok], side="left")
    flat = np.bincount(classes * nb + idx, minlength=tracker.conf_counts.size)
    tracker.conf_counts += flat.reshape(tracker.conf_counts.shape)
    tracker.conf_sums += np.bincount(classes, weights=conf[ok], minlength=len(tracker.conf_sums))


__all__ = ["FrameConnection", "handle_frame", "ingest_columns"]

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

from sidecar.config import Config, SocketSettings
from sidecar.events import MAX_ABS_VALUE, Event, Rejection
from sidecar.frame_columns import (
    Columns,
    column_codes,
    column_confidences,
    column_embeddings,
    column_matrix,
    column_predictions,
    count_confidence,
    count_latency,
    count_requests,
    label_events,
)
from sidecar.frame_rows import check as check_rows
from sidecar.frame_rows import valid
from sidecar.frames import Frame, FrameError, FrameReader, read_body
from sidecar.health import Health
from sidecar.labels import NOTHING_FOLDED
from sidecar.numeric_counts import sorted_transpose
from sidecar.pipeline import Pipeline
from sidecar.tracker import ModelTracker


class _Connection(Protocol):
    """What of `ingest.EventProtocol` a frame connection uses."""

    transport: asyncio.Transport | None

    def connection_lost(self, exc: Exception | None) -> None: ...

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
        if self.reader is not None:
            self._deliver(*self.reader.feed(data))

    def take_over(self) -> None:
        """Read the rest of the connection straight into the frame reader's buffers
        (asyncio.BufferedProtocol): large messages are then copied by the kernel only."""
        transport = self.proto.transport
        if self.reader is not None and transport is not None and not transport.is_closing():
            transport.set_protocol(_BufferedFrames(self, self.proto))

    def received(self, n: int) -> None:
        """`n` bytes were read into the reader's buffer (`_BufferedFrames`)."""
        if self.reader is not None:
            self._deliver(*self.reader.received(n))

    def _deliver(self, frames: list[Frame], err: FrameError | None) -> None:
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


class _BufferedFrames(asyncio.BufferedProtocol):
    """The protocol of a socket connection once it is known to carry a stream: reads go
    into the reader's buffers; the connection's end is the line protocol's, as before."""

    def __init__(self, conn: FrameConnection, proto: _Connection) -> None:
        self.conn = conn
        self.proto = proto
        self._discard = memoryview(bytearray(1 << 16))

    def get_buffer(self, sizehint: int) -> memoryview:
        reader = self.conn.reader
        # a failed stream is being closed: what still arrives is read and dropped
        return reader.get_buffer() if reader is not None else self._discard

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.received(nbytes)

    def eof_received(self) -> bool | None:
        return None  # close the transport, as the line protocol does

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.connection_lost(exc)


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
    cols = Columns(batch, plan, stream.version, converted, stream.encoded)
    accepted, rejected = ingest_columns(tracker, cols, now)
    for rej in rejected:
        pipeline.reject(rej.reason, rej.detail, errors=errors)
    pipeline.labels.take_folded(tracker, now)  # as Pipeline.handle
    if tracker.unknown_features != unknown_before:
        names = {f.name for f in batch.column(plan["features"]).type}
        pipeline.log_unknown_features(tracker, names)
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
            pipeline.dropped(frame.batch.num_rows, "http", exc)
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


def ingest_columns(tracker: ModelTracker, cols: Columns, now: float) -> tuple[int, list[Rejection]]:
    """`ModelTracker.ingest` on columns: returns how many rows were accepted, and the
    rejections."""
    tracker.folded = NOTHING_FOLDED
    num, bad = column_matrix(tracker, cols)
    preds, bad_pred = column_predictions(tracker, cols)
    bad |= bad_pred
    emb, bad_emb = column_embeddings(tracker, cols)
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
        num, _ = column_matrix(tracker, cols)
        preds, _ = column_predictions(tracker, cols)
        if emb is not None:
            emb = emb[keep]
    n = cols.n

    all_finite = cols.all_finite
    if not all_finite:
        finite = np.isfinite(num)
        all_finite = bool(finite.all())
        if not all_finite:
            num[~finite] = np.nan
    n_finite = np.full(num.shape[1], n, dtype=np.int64) if all_finite else finite.sum(axis=0)
    ordered = sorted_transpose(num)
    if ordered.size and cols.from_text:  # numbers were range-checked with the rows
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
        cat[:, j] = column_codes(cols.children.get(name), vocab, n)
    tracker.missing[: len(tracker.numeric_names)] += n - n_finite
    if cat.shape[1]:
        tracker.missing[len(tracker.numeric_names) :] += (cat < 0).sum(axis=0)

    count_requests(tracker, cols)
    count_latency(tracker, cols, now)
    conf = column_confidences(cols)
    codes = count_confidence(tracker, cols, preds, conf)
    tracker._count_predictions(preds)
    folded = label_events(tracker.name, cols)
    if folded is not None:
        tracker.folded = (folded, preds, codes)
    tracker.feature_sums += num.sum(axis=0) if all_finite else np.nansum(num, axis=0)
    if ordered.shape[1]:
        tracker.feature_negative |= ordered[:, 0] < 0
    tracker.fold_rows(num, cat, preds, conf, emb, ordered=ordered, n_finite=n_finite, now=now)
    return n, rejections


__all__ = ["FrameConnection", "handle_frame", "ingest_columns"]

"""The Monitor: a bounded buffer on the caller's side, a flusher thread on the socket's side.

The caller's thread only appends a tuple to a deque (atomic under the GIL) after one
length check. Everything that costs more (validation, encoding, the socket) happens on
one daemon thread that owns the socket. Counters written by callers take a lock only
on the drop path; counters written by the flusher are plain integers it alone writes.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from sidecar import paths
from sidecar.client._encode import Batch, LabelOf, RecordTuple
from sidecar.client._flusher import Flusher
from sidecar.client._stages import Stage
from sidecar.client._stages import current as current_stages
from sidecar.client._stats import DROP_REASONS, ClientStats
from sidecar.client._timing import Timed, track_call
from sidecar.client._trace import current_trace_id
from sidecar.errors import ConfigError

_now = time.time
_F = TypeVar("_F", bound=Callable[..., Any])

_live: weakref.WeakSet[Monitor] = weakref.WeakSet()


def default_socket_path() -> str:
    """`$DRIFT_SIDECAR_SOCKET`, else where the daemon listens when its config names no
    socket (`sidecar.paths.default_socket_path`, the daemon's own rule)."""
    return os.environ.get(paths.SOCKET_ENV) or paths.default_socket_path()


class Monitor(Flusher):
    """Sends prediction events to the drift sidecar without ever blocking or raising.

    `record()` appends to a bounded buffer and returns at once; a daemon thread encodes
    batches (one JSON array per line) and writes them to a non-blocking Unix socket,
    reconnecting with exponential backoff. When the buffer is full, events are dropped
    and counted in `stats`. Memory is bounded by `buffer_size` events plus
    `max_pending_bytes` of encoded data, whatever the sidecar does.

    With `arrow` (the default), `record_batch` columns go as Arrow record batches on a
    second connection (columnar frames) when pyarrow and numpy are installed and the
    sidecar takes them; a sidecar that refuses them is noticed within `arrow_probe_s` of
    opening that connection, and batches then go as JSON lines.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        model: str,
        version: str | None = None,
        buffer_size: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.05,
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        max_pending_bytes: int = 1_048_576,
        max_line_bytes: int = 1_048_576,
        trace_ids: bool = True,
        arrow: bool = True,
        arrow_probe_s: float = 0.25,
    ) -> None:
        problems = []
        if not isinstance(model, str) or not model:
            problems.append(f"model: expected a non-empty string, got {model!r}")
        if version is not None and not isinstance(version, str):
            problems.append(f"version: expected a string, got {version!r}")
        if buffer_size < 1:
            problems.append(f"buffer_size: must be at least 1, got {buffer_size}")
        if not 1 <= batch_size <= 10_000:
            # The daemon refuses arrays longer than socket.max_batch_events (10000 by default).
            problems.append(f"batch_size: must be in [1, 10000], got {batch_size}")
        if not flush_interval_s > 0:
            problems.append(f"flush_interval_s: must be positive, got {flush_interval_s}")
        lo, hi = reconnect_backoff
        if not 0 < lo <= hi:
            problems.append(f"reconnect_backoff: need 0 < min <= max, got {reconnect_backoff}")
        if not arrow_probe_s > 0:
            problems.append(f"arrow_probe_s: must be positive, got {arrow_probe_s}")
        if max_pending_bytes < 1 or max_line_bytes < 64:
            problems.append("max_pending_bytes / max_line_bytes: too small")
        if problems:
            raise ConfigError(problems, source="sidecar.client.Monitor")

        self.socket_path = os.fspath(socket_path) if socket_path else default_socket_path()
        self.model = model
        self.version = version
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._backoff_min, self._backoff_max = float(lo), float(hi)
        self._max_pending = max_pending_bytes
        self._max_line = max_line_bytes
        self._trace: Callable[[], int | None] | None = current_trace_id if trace_ids else None
        self._arrow = arrow
        self._arrow_probe_s = arrow_probe_s
        self._encoder = msgspec.json.Encoder()
        self._setup()
        _live.add(self)
        self._thread.start()

    def _setup(self) -> None:
        """State shared by both threads; also run again in a forked child."""
        # Caller side. _cap drops to 0 on close so the hot path needs no closed flag.
        self._buf: collections.deque[RecordTuple | Batch] = collections.deque()
        self._cap = self.buffer_size
        self._batched = 0  # events inside Batch items in _buf (guarded by _batch_lock)
        self._batch_items = 0
        self._batch_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._caller_drops = dict.fromkeys(DROP_REASONS, 0)
        self._caller_problem: str | None = None
        self._closed = False
        self._memory: int | None = None
        self._setup_flusher()

    # ---- the caller's side: a few operations each, no I/O, no exceptions ----

    def record(
        self,
        features: Mapping[str, Any] | None = None,
        *,
        prediction: float | str | None = None,
        probabilities: Sequence[float] | Mapping[str, float] | None = None,
        confidence: float | None = None,
        latency_s: float | None = None,
        status: str = "success",
        trace_id: str | None = None,
        id: str | None = None,
        ts: float | None = None,
        embedding: Sequence[float] | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> bool:
        """Buffer one event; True when buffered, False when dropped (counted in `stats`).

        Values are checked later, on the flusher thread: an invalid event still returns
        True here and is counted as `invalid_input` when it is encoded. The objects passed
        are kept by reference until then, so do not mutate them afterwards.
        """
        try:
            buf = self._buf
            if len(buf) + self._batched >= self._cap:
                return self._refuse(1)
            if trace_id is None and self._trace is not None:
                trace_id = self._trace()  # type: ignore[assignment]
            buf.append(
                (
                    _now() if ts is None else ts,
                    features,
                    prediction,
                    probabilities,
                    confidence,
                    latency_s,
                    status,
                    trace_id,
                    id,
                    embedding,
                    stages,
                )
            )
            return True
        except Exception:  # never into the request path; nothing above is expected to raise
            return self._refuse(1, "invalid_input")

    def record_label(
        self,
        id: str | None,
        label: float | str,
        prediction: float | str | None = None,
        *,
        ts: float | None = None,
    ) -> bool:
        """Buffer the ground truth of the prediction sent with this `id` (or, with
        `prediction`, of that prediction, scored at once on any replica). Like record():
        True when buffered, False when dropped; never blocks, never raises."""
        try:
            buf = self._buf
            if len(buf) + self._batched >= self._cap:
                return self._refuse(1)
            when = _now() if ts is None else ts
            mark = LabelOf(label)
            buf.append((when, None, prediction, None, None, None, mark, None, id, None, None))
            return True
        except Exception:
            return self._refuse(1, "invalid_input")

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Buffer several events given as mappings of record()'s keywords; all or none.

        Returns how many were buffered (0 when the buffer lacks room for all of them).
        `ts` and `trace_id` default to the moment of this call, for every event.
        """
        try:
            rows = events if isinstance(events, (list, tuple)) else list(events)
            shared = {"ts": _now(), "trace_id": self._trace() if self._trace else None}
            return self._submit(Batch(len(rows), {}, shared, rows=rows))
        except Exception as exc:
            self.note_invalid(f"record_many: {type(exc).__name__}: {exc}")
            return 0

    def record_batch(
        self,
        *,
        predictions: Any = None,
        probabilities: Any = None,
        confidences: Any = None,
        features: Any = None,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        latency_s: Any = None,
        status: Any = "success",
        ids: Any = None,
        embeddings: Any = None,
        trace_id: str | None = None,
        ts: float | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> int:
        """Buffer a batch given as columns (lists, numpy arrays or tensors), all or none.

        Every column given has one entry per row. `features` is a list of mappings, or a
        2-D array with `feature_names`. With `class_names`, integer predictions become
        class names and probability rows become {class: p}. `latency_s` and `status` are
        one value for the whole batch or a column; `stages`, seconds per stage, is the
        whole batch's (each row waited that long). Columns are converted on the flusher
        thread, so the caller pays for a few len() calls only; do not mutate them after.
        Returns how many events were buffered.
        """
        try:
            cols: dict[str, Any] = {}
            for name, col in (
                ("prediction", predictions),
                ("probabilities", probabilities),
                ("confidence", confidences),
                ("features", features),
                ("id", ids),
                ("embedding", embeddings),
            ):
                if col is not None:
                    cols[name] = col
            shared: dict[str, Any] = {
                "ts": _now() if ts is None else ts,
                "trace_id": trace_id if trace_id is not None or not self._trace else self._trace(),
                "stages": stages,
            }
            for name, value in (("latency_s", latency_s), ("status", status)):
                if value is None or isinstance(value, (int, float, str)):
                    shared[name] = value
                else:
                    cols[name] = value
            if not cols:
                self._caller_problem = "record_batch: no per-row column given"
                self._refuse(1, "invalid_input")
                return 0
            lengths = {name: len(col) for name, col in cols.items()}
            n = next(iter(lengths.values()))
            if any(v != n for v in lengths.values()):
                self._caller_problem = f"record_batch: columns differ in length: {lengths}"
                self._refuse(max(n, 1), "invalid_input")
                return 0
            if (
                "features" in cols
                and feature_names is None
                and not _rows_are_mappings(cols["features"])
            ):
                self._caller_problem = "record_batch: 2-D features need feature_names"
                self._refuse(max(n, 1), "invalid_input")
                return 0
            return self._submit(
                Batch(n, cols, shared, feature_names=feature_names, class_names=class_names)
            )
        except Exception as exc:
            self._caller_problem = f"record_batch: {type(exc).__name__}: {exc}"
            self._refuse(1, "invalid_input")
            return 0

    def report_model_memory(self, nbytes: int) -> bool:
        """Report the model's memory footprint (bytes) for `ml_model_memory_bytes`; latest wins."""
        value = getattr(nbytes, "item", lambda: nbytes)() if not isinstance(nbytes, int) else nbytes
        if type(value) is not int or value < 0:
            self._caller_problem = f"report_model_memory: expected bytes >= 0, got {nbytes!r}"
            return self._refuse(1, "invalid_input")
        self._memory = value
        return not self._closed

    def timed(
        self,
        features: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        trace_id: str | None = None,
    ) -> Timed:
        """A context manager that records one event with its latency when the block ends.

        Set `prediction`, `confidence`, `probabilities`, `features`, `id` or `embedding`
        on the object it yields. An exception in the block records status "error" and
        propagates unchanged.
        """
        return Timed(self, features, id, trace_id)

    def track(
        self,
        *,
        features: Callable[..., Mapping[str, Any] | None] | None = None,
        outcome: Callable[[Any], Mapping[str, Any] | None] | None = None,
    ) -> Callable[[_F], _F]:
        """A decorator (sync or async) that records each call's latency and status.

        `features(*args, **kwargs)` picks the inputs from the call's arguments;
        `outcome(result)` returns a mapping with any of prediction, probabilities,
        confidence, id, embedding. If either raises, that one event is dropped and counted
        as invalid_input; the wrapped function's own exceptions are recorded as status
        "error" and re-raised.
        """
        return track_call(self, features, outcome)

    def stage(self, name: str) -> Stage:
        """A context manager timing one stage (`stages` of the event) of the `timed()`
        block or `track()`ed call running here; outside one it times nothing."""
        return Stage(current_stages(), name)

    def _submit(self, batch: Batch) -> int:
        n = batch.n
        if n == 0:
            return 0
        with self._batch_lock:
            if len(self._buf) + self._batched + n > self._cap:
                self._refuse(n)
                return 0
            self._batched += n
            self._batch_items += 1
            self._buf.append(batch)
        return n

    def _refuse(self, n: int, reason: str | None = None) -> bool:
        """Count n events the caller's side could not take; always returns False."""
        if reason is None:
            if self._closed:
                reason = "closed"
            elif self._sock is None:
                reason = "not_connected"
            else:
                reason = "buffer_full"
        with self._drop_lock:
            self._caller_drops[reason] += n
        return False

    @property
    def trace_id_source(self) -> Callable[[], int | None] | None:
        """Gives the current OpenTelemetry trace id; None when trace ids are off."""
        return self._trace

    def note_invalid(self, detail: str) -> None:
        """Count one event that a helper judged invalid (`invalid_input`), and log `detail`.

        For helpers built on a Monitor (`timed`, `track`, `sidecar.client.torch`); the
        log line is written later, rate-limited, by the flusher.
        """
        self._caller_problem = detail
        self._refuse(1, "invalid_input")

    # ---- stats, flush, close ----

    @property
    def stats(self) -> ClientStats:
        """A snapshot of counters; `sent + dropped_total + buffered + pending` is what was given."""
        with self._drop_lock:
            dropped = dict(self._caller_drops)
        for reason, n in self._flusher_drops.items():
            dropped[reason] += n
        buffered = len(self._buf) - self._batch_items + self._batched + self._carry_left
        link = self._frames
        return ClientStats(
            sent=self._sent + (link.sent if link else 0),
            dropped=dropped,
            buffered=max(buffered, 0),
            pending=self._pending_events + (link.pending_events if link else 0),
            pending_bytes=self._pending_total(),
            connected=self._sock is not None,
            reconnects=self._reconnects,
            connect_failures=self._connect_failures,
            bytes_sent=self._bytes_sent + (link.sent_bytes if link else 0),
            frames=link is not None and link.sock is not None,
        )

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait until everything buffered so far is written to the socket; False on timeout.

        This is the one call that waits; do not call it on a request path.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            # Two full flusher cycles that start after this call has begun cover every
            # event appended before it, including ones the flusher had just popped.
            target = self._cycles + 2
            while not (self._cycles >= target and self._idle):
                if not self._thread.is_alive():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._cond.wait(min(left, self.flush_interval_s))
            return True

    def close(self, timeout: float = 2.0) -> bool:
        """Flush for up to `timeout` seconds, stop the flusher and close the socket.

        Events still unsent afterwards are counted as dropped (`closed`); later record()
        calls return False. Returns whether everything was flushed.
        """
        if self._closed:
            return True
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout) if self._thread.is_alive() else False
        self._closed = True
        self._cap = 0
        self._stop = True
        self._wake.set()
        self._thread.join(max(deadline - time.monotonic(), self.flush_interval_s * 4))
        if not self._thread.is_alive():
            # The flusher has exited, so this thread now owns its state.
            left = (
                len(self._buf)
                - self._batch_items
                + self._batched
                + self._carry_left
                + self._pending_events
            )
            if self._frames is not None:
                left += self._frames.drop_all()
            self._flusher_drops["closed"] += left
            self._buf.clear()
            self._batched = self._batch_items = self._carry_left = self._pending_events = 0
            self._pending.clear()
            self._pending_bytes = 0
            self._carry = None
        _live.discard(self)
        return flushed

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<Monitor model={self.model!r} socket={self.socket_path!r} "
            f"connected={s.connected} sent={s.sent} dropped={s.dropped_total}>"
        )

    def _after_fork(self) -> None:
        # The child inherits the buffer (already owned by the parent) but not the thread.
        if self._closed:
            return
        old = self._sock
        old_frames = self._frames.sock if self._frames is not None else None
        self._setup()
        for sock in (old, old_frames):
            if sock is not None:
                sock.close()
        self._thread.start()


def _rows_are_mappings(col: Any) -> bool:
    return isinstance(col, (list, tuple)) and (not col or isinstance(col[0], Mapping))


def _close_all() -> None:
    for monitor in list(_live):
        monitor.close(timeout=0.5)


def _reinit_after_fork() -> None:
    for monitor in list(_live):
        monitor._after_fork()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_reinit_after_fork)

"""The Monitor: a bounded buffer on the caller's side, a flusher thread on the socket's side.

The caller's thread only appends a tuple to a deque (atomic under the GIL) after one
length check. Everything that costs more (validation, encoding, the socket) happens on
one daemon thread that owns the socket. Counters written by callers take a lock only
on the drop path; counters written by the flusher are plain integers it alone writes.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from sidecar.client import _trace
from sidecar.client._encode import Batch, Invalid, RecordTuple, build_event
from sidecar.client._timing import Timed, track_call
from sidecar.errors import ConfigError

log = logging.getLogger("sidecar.client")

DROP_REASONS = (
    "buffer_full",
    "not_connected",
    "invalid_input",
    "send_failed",
    "too_large",
    "closed",
)
"""Why an event was not sent; the keys of `ClientStats.dropped`."""

LOG_EVERY_S = 60.0
"""A repeated problem (drops, bad input, a missing sidecar) is logged at most this often."""

SLICE_S = 0.0002
"""The flusher encodes for at most this long before a syscall lets request threads run."""

_IOV_MAX = 64
_now = time.time
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of what a Monitor did with the events it was given."""

    sent: int
    """Events written completely to the socket (handed to the kernel)."""
    dropped: dict[str, int]
    """Events given up on, by reason (every key of DROP_REASONS is present)."""
    buffered: int
    """Events waiting in the buffer, not yet encoded."""
    pending: int
    """Events encoded and waiting for the socket to take them."""
    pending_bytes: int
    """Bytes of encoded events waiting for the socket."""
    connected: bool
    """Whether the flusher holds a connection now."""
    reconnects: int
    """Connections made after the first one (the sidecar restarted or was late)."""
    connect_failures: int
    """Connection attempts that failed (no socket file, nobody listening)."""
    bytes_sent: int
    """Bytes written to the socket."""

    @property
    def dropped_total(self) -> int:
        """All dropped events, whatever the reason."""
        return sum(self.dropped.values())


class _Chunk:
    """One encoded line and how many events it carries."""

    __slots__ = ("data", "events", "offset")

    def __init__(self, data: bytes, events: int) -> None:
        self.data = memoryview(data)
        self.events = events
        self.offset = 0


class _LogLimiter:
    """Log each kind of problem at most once per LOG_EVERY_S, with how often it happened."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < LOG_EVERY_S:
            return
        n = self._count.pop(key)
        self._last[key] = now
        if n > 1:
            log.warning(msg + " (%d times since last logged)", *args, n)
        else:
            log.warning(msg, *args)


_live: weakref.WeakSet[Monitor] = weakref.WeakSet()


def default_socket_path() -> str:
    """Where the daemon listens when its config names no socket: the same rule as the daemon."""
    env = os.environ.get("DRIFT_SIDECAR_SOCKET")
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "drift-sidecar", "events.sock")
    return os.path.join(os.getcwd(), "drift-sidecar.sock")


class Monitor:
    """Sends prediction events to the drift sidecar without ever blocking or raising.

    `record()` appends to a bounded buffer and returns at once; a daemon thread encodes
    batches (one JSON array per line) and writes them to a non-blocking Unix socket,
    reconnecting with exponential backoff. When the buffer is full, events are dropped
    and counted in `stats`. Memory is bounded by `buffer_size` events plus
    `max_pending_bytes` of encoded data, whatever the sidecar does.
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
        self._trace: Callable[[], int | None] | None = (
            _trace.current_trace_id if trace_ids else None
        )
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
        # Flusher side.
        self._sock: socket.socket | None = None
        self._carry: Iterator[RecordTuple | Invalid] | None = None
        self._carry_left = 0
        self._pending: collections.deque[_Chunk] = collections.deque()
        self._pending_bytes = 0
        self._pending_events = 0
        self._flusher_drops = dict.fromkeys(DROP_REASONS, 0)
        self._sent = 0
        self._bytes_sent = 0
        self._reconnects = 0
        self._connect_failures = 0
        self._ever_connected = False
        self._backoff = self._backoff_min
        self._next_connect = 0.0
        self._next_peer_check = 0.0
        self._memory_sent: int | None = None
        self._logged_caller_drops = 0
        self._limiter = _LogLimiter()
        self._stop = False
        self._wake = threading.Event()
        self._cond = threading.Condition(threading.Lock())
        self._cycles = 0
        self._idle = False
        self._thread = threading.Thread(
            target=self._run, name=f"drift-sidecar-client[{self.model}]", daemon=True
        )

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
                )
            )
            return True
        except Exception:  # never into the request path; nothing above is expected to raise
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
            self._note_invalid(f"record_many: {type(exc).__name__}: {exc}")
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
    ) -> int:
        """Buffer a batch given as columns (lists, numpy arrays or tensors), all or none.

        Every column given has one entry per row. `features` is a list of mappings, or a
        2-D array with `feature_names`. With `class_names`, integer predictions become
        class names and probability rows become {class: p}. `latency_s` and `status` are
        one value for the whole batch or a column. Columns are converted on the flusher
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

    def _note_invalid(self, detail: str) -> None:
        """Count one event the caller's side judged invalid (logged later by the flusher)."""
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
        return ClientStats(
            sent=self._sent,
            dropped=dropped,
            buffered=max(buffered, 0),
            pending=self._pending_events,
            pending_bytes=self._pending_bytes,
            connected=self._sock is not None,
            reconnects=self._reconnects,
            connect_failures=self._connect_failures,
            bytes_sent=self._bytes_sent,
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

    # ---- the flusher thread ----

    def _run(self) -> None:
        while True:
            try:
                if self._cycle():
                    break
            except Exception:
                # A bug here must not silently stop delivery: log, reset the socket, go on.
                log.exception("drift-sidecar client flusher failed; reconnecting")
                self._disconnect()
                self._wake.wait(self._backoff_max)
        self._disconnect(closing=True)
        with self._cond:
            self._cycles += 1
            self._cond.notify_all()

    def _cycle(self) -> bool:
        """One round of connect, encode, write; returns True when the flusher should exit."""
        stopping = self._stop
        now = time.monotonic()
        if self._sock is None and now >= self._next_connect:
            self._connect(now)
        blocked = False
        if self._sock is not None and now >= self._next_peer_check:
            # Each syscall hands the GIL away, so a busy flusher checks only now and then.
            self._next_peer_check = now + self.flush_interval_s
            self._check_peer()
        if self._sock is not None:
            self._send_memory()
            self._encode_pending()
            blocked = self._write()
        self._log_caller_problems()
        sock = self._sock
        work = bool(self._buf) or self._carry is not None
        idle = not work and not self._pending
        with self._cond:
            self._cycles += 1
            self._idle = idle
            self._cond.notify_all()
        if stopping:
            return True
        if sock is None:
            self._wait(max(self._next_connect - time.monotonic(), 0.0))
        elif blocked:
            with contextlib.suppress(OSError, ValueError):
                select.select([], [sock], [], self.flush_interval_s)
        elif not (work and self._pending_bytes < self._max_pending):
            self._wait(self.flush_interval_s)
        return False

    def _wait(self, timeout: float) -> None:
        if self._wake.wait(timeout):
            self._wake.clear()

    def _connect(self, now: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            # No file, nobody listening, or a full accept backlog (EAGAIN): all retried.
            sock.close()
            self._connect_failures += 1
            self._next_connect = now + self._backoff
            self._backoff = min(self._backoff * 2, self._backoff_max)
            self._limiter.warn(
                "connect",
                "drift sidecar not reachable at %s (%s); buffering up to %d events, then dropping",
                self.socket_path,
                exc.strerror or type(exc).__name__,
                self.buffer_size,
            )
            return
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._backoff = self._backoff_min
        self._memory_sent = None  # a restarted sidecar has forgotten the gauge
        self._sock = sock

    def _check_peer(self) -> None:
        """Notice a sidecar that went away before the next write fails."""
        assert self._sock is not None
        try:
            data = self._sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._disconnect()
            return
        if not data:
            self._disconnect()

    def _disconnect(self, closing: bool = False) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        if self._pending and self._pending[0].offset > 0:
            # Half a line went out on the old connection; it cannot be resent whole.
            chunk = self._pending.popleft()
            self._pending_bytes -= len(chunk.data)
            self._pending_events -= chunk.events
            self._flusher_drops["send_failed"] += chunk.events
        if not closing:
            self._next_connect = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._backoff_max)
            self._limiter.warn("lost", "connection to drift sidecar at %s lost", self.socket_path)

    def _send_memory(self) -> None:
        mem = self._memory
        if mem is None or mem == self._memory_sent:
            return
        msg: dict[str, Any] = {"kind": "stats", "model": self.model, "model_memory_bytes": mem}
        if self.version is not None:
            msg["version"] = self.version
        data = self._encoder.encode(msg) + b"\n"
        self._pending.append(_Chunk(data, 0))
        self._pending_bytes += len(data)
        self._memory_sent = mem

    def _next_record(self) -> RecordTuple | Invalid | None:
        while True:
            carry = self._carry
            if carry is not None:
                rec = next(carry, None)
                if rec is not None:
                    self._carry_left -= 1
                    return rec
                self._carry = None
                self._carry_left = 0
            try:
                item = self._buf.popleft()
            except IndexError:
                return None
            if type(item) is tuple:
                return item
            assert isinstance(item, Batch)
            with self._batch_lock:
                self._batched -= item.n
                self._batch_items -= 1
            self._carry_left = item.n
            self._carry = item.expand()

    def _encode_pending(self) -> None:
        """Encode buffered events into lines, handing the GIL back every SLICE_S."""
        model, version, size = self.model, self.version, self.batch_size
        start = time.perf_counter()
        while self._pending_bytes < self._max_pending:
            events: list[dict[str, Any]] = []
            checked = 0
            while len(events) < size:
                rec = self._next_record()
                if rec is None:
                    break
                if isinstance(rec, Invalid):
                    self._invalid(str(rec))
                    continue
                try:
                    events.append(build_event(model, version, rec))
                except Invalid as exc:
                    self._invalid(str(exc))
                except Exception as exc:
                    self._invalid(f"{type(exc).__name__}: {exc}")
                checked += 1
                if checked % 16 == 0 and time.perf_counter() - start > SLICE_S:
                    break  # a shorter line now beats a request thread waiting for the GIL
            if not events:
                return
            self._add_line(events)
            if time.perf_counter() - start > SLICE_S:
                # A request thread that wanted the GIL meanwhile gets it now, not after the
                # interpreter's 5 ms switch interval.
                time.sleep(0)
                start = time.perf_counter()

    def _add_line(self, events: list[dict[str, Any]]) -> None:
        data = self._encoder.encode(events) + b"\n"
        if len(data) > self._max_line:
            if len(events) == 1:
                self._flusher_drops["too_large"] += 1
                self._limiter.warn(
                    "too_large",
                    "dropped an event of %d bytes (max_line_bytes %d)",
                    len(data),
                    self._max_line,
                )
                return
            half = len(events) // 2
            self._add_line(events[:half])
            self._add_line(events[half:])
            return
        self._pending.append(_Chunk(data, len(events)))
        self._pending_bytes += len(data)
        self._pending_events += len(events)

    def _write(self) -> bool:
        """Write pending lines until the kernel buffer is full; True when it is."""
        pending = self._pending
        while pending and self._sock is not None:
            # One vectored write per round: every syscall hands the GIL to the callers.
            views = [c.data[c.offset :] if c.offset else c.data for c in _head(pending)]
            try:
                n = self._sock.sendmsg(views)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._disconnect()
                return False
            self._bytes_sent += n
            while n:
                chunk = pending[0]
                take = min(n, len(chunk.data) - chunk.offset)
                chunk.offset += take
                n -= take
                if chunk.offset == len(chunk.data):
                    pending.popleft()
                    self._pending_bytes -= len(chunk.data)
                    self._pending_events -= chunk.events
                    self._sent += chunk.events
        return False

    def _invalid(self, detail: str) -> None:
        self._flusher_drops["invalid_input"] += 1
        self._limiter.warn("invalid_input", "dropped an invalid event: %s", detail)

    def _log_caller_problems(self) -> None:
        problem = self._caller_problem
        if problem is not None:
            self._caller_problem = None
            self._limiter.warn("caller_invalid", "dropped invalid input: %s", problem)
        with self._drop_lock:
            drops = dict(self._caller_drops)
        total = drops["buffer_full"] + drops["not_connected"]
        if total > self._logged_caller_drops:
            self._logged_caller_drops = total
            self._limiter.warn(
                "caller_drops",
                "drift-sidecar client dropping events: %d so far"
                " (buffer_full %d, not_connected %d)",
                total,
                drops["buffer_full"],
                drops["not_connected"],
            )

    def _after_fork(self) -> None:
        # The child inherits the buffer (already owned by the parent) but not the thread.
        if self._closed:
            return
        old = self._sock
        self._setup()
        if old is not None:
            old.close()
        self._thread.start()


def _head(pending: collections.deque[_Chunk]) -> list[_Chunk]:
    return list(itertools.islice(pending, _IOV_MAX))


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

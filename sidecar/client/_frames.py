"""Columnar frames on the flusher thread: `record_batch` columns as Arrow record batches,
sent as one Arrow IPC stream per connection (see docs/client.md, "Columnar frames").

pyarrow and numpy are optional for the client (a model server may install it with msgspec
alone): they are looked up when the first batch is sent, and without them batches go as
JSON lines, as they always did. A sidecar with frames switched off closes a connection
that starts with a stream at once; the flusher notices within `probe_s` of opening it,
and sends that batch, and every later one, as JSON until it reconnects to the sidecar.
"""

from __future__ import annotations

import collections
import importlib
import select
import socket
import time
from typing import Any

from sidecar.client._encode import Batch

MARKER = b"\xff\xff\xff\xff"
EOS = MARKER + b"\x00\x00\x00\x00"
MAX_ROWS = 10_000
"""Rows per record batch at most: the sidecar's default socket.max_batch_events."""
MAX_MESSAGE_BYTES = 32 * 1_048_576
"""A record batch is sliced below this (the sidecar's socket.max_frame_bytes is 64 MiB)."""


class NotColumnar(Exception):
    """This batch cannot go as a frame as it is (the JSON path judges it row by row)."""


def _modules() -> tuple[Any, Any] | None:
    """(pyarrow, numpy), or None when either is not installed."""
    try:
        # importlib, so that importing the client never loads them (see the module doc)
        return importlib.import_module("pyarrow"), importlib.import_module("numpy")
    except ImportError:
        return None


def _array(value: Any, np: Any) -> Any:
    """A caller's column as a numpy array, without a copy where it can (numpy arrays
    and contiguous CPU tensors)."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):
        if value.device.type != "cpu":
            raise NotColumnar("a tensor not on the CPU")
        return value.detach().numpy()
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (dict, str)):
            raise NotColumnar("rows, not numbers")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise NotColumnar("mixed values")
        return arr
    raise NotColumnar(f"a column of {type(value).__name__}")


def _numbers(value: Any, np: Any, pa: Any, name: str, n: int) -> Any:
    arr = _array(value, np)
    if arr.ndim != 1 or arr.shape[0] != n or arr.dtype.kind not in "iuf":
        raise NotColumnar(f"{name}: not {n} numbers")
    return pa.array(arr)


def _matrix(value: Any, np: Any, name: str, n: int) -> Any:
    arr = _array(value, np)
    if arr.ndim != 2 or arr.shape[0] != n or arr.dtype.kind not in "iuf":
        raise NotColumnar(f"{name}: not a ({n}, k) array of numbers")
    return arr


def _fixed_lists(mat: Any, np: Any, pa: Any, dtype: Any) -> Any:
    flat = np.ascontiguousarray(mat, dtype=dtype).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), mat.shape[1])


def _repeat(pa: Any, np: Any, value: Any, n: int) -> Any:
    """A column of n equal values, without n Python objects."""
    return pa.array([value]).take(pa.array(np.zeros(n, dtype=np.int64)))


def to_record_batch(batch: Batch, model: str, version: str | None) -> Any:
    """The batch as a pyarrow RecordBatch with the stream's metadata; NotColumnar when a
    column is not one that converts whole (row mappings, ragged lists, bad class
    indices): the caller then sends it as JSON, judged row by row."""
    mods = _modules()
    if mods is None or batch.rows is not None:
        raise NotColumnar("pyarrow is not installed" if mods is None else "rows")
    pa, np = mods
    n = batch.n
    cols = batch.columns
    shared = batch.shared
    if shared.get("stages") is not None or "stages" in cols:
        # frames carry protocol v1's prediction fields only: stage latencies go as JSON
        raise NotColumnar("stages")
    classes = list(batch.class_names) if batch.class_names is not None else None
    out: dict[str, Any] = {}
    if "features" in cols:
        names = batch.feature_names
        if names is None:
            raise NotColumnar("features as rows")
        mat = _matrix(cols["features"], np, "features", n)
        if mat.shape[1] != len(names):
            raise NotColumnar("features: a column per name")
        # one copy into column order; then each feature is a contiguous, zero-copy column
        by_col = np.ascontiguousarray(mat.T)
        out["features"] = pa.StructArray.from_arrays(
            [pa.array(by_col[j]) for j in range(len(names))], names=[str(x) for x in names]
        )
    if "prediction" in cols:
        pred = _array(cols["prediction"], np)
        if pred.ndim != 1 or pred.shape[0] != n:
            raise NotColumnar("prediction: not one per row")
        if classes is not None:
            if pred.dtype.kind not in "iu" or (
                n and (int(pred.min()) < 0 or int(pred.max()) >= len(classes))
            ):
                raise NotColumnar("prediction: class indices outside class_names")
            out["prediction"] = pa.array(classes, pa.string()).take(pa.array(pred))
        elif pred.dtype.kind in "iuf":
            out["prediction"] = pa.array(pred)
        elif pred.dtype.kind == "U":
            out["prediction"] = pa.array(pred.tolist(), pa.string())
        else:
            raise NotColumnar("prediction: not numbers or strings")
    if "probabilities" in cols:
        mat = _matrix(cols["probabilities"], np, "probabilities", n)
        k = mat.shape[1]
        if classes is not None:
            if k != len(classes):
                raise NotColumnar("probabilities: a column per class")
            keys = pa.array(classes, pa.string()).take(pa.array(np.tile(np.arange(k), n)))
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
            items = pa.array(np.ascontiguousarray(mat, dtype=np.float64).reshape(-1))
            out["probabilities"] = pa.MapArray.from_arrays(offsets, keys, items)
        else:
            out["probabilities"] = _fixed_lists(mat, np, pa, np.float64)
    if "confidence" in cols:
        out["confidence"] = _numbers(cols["confidence"], np, pa, "confidence", n)
    for name in ("latency_s", "status"):
        if name in cols:
            if name == "latency_s":
                out[name] = _numbers(cols[name], np, pa, name, n)
            else:
                out[name] = pa.array(list(cols[name]), pa.string())
        elif shared.get(name) is not None and not (name == "status" and shared[name] == "success"):
            value = shared[name]
            if name == "latency_s":
                if not isinstance(value, (int, float)):
                    raise NotColumnar("latency_s: not a number")
                out[name] = pa.array(np.full(n, float(value)))
            else:
                out[name] = _repeat(pa, np, str(value), n)
    tid = shared.get("trace_id")
    if tid is not None:
        if type(tid) is int:
            tid = format(tid, "032x")
        if type(tid) is not str:
            raise NotColumnar("trace_id: not a string")
        out["trace_id"] = _repeat(pa, np, tid.lower(), n)
    if "id" in cols:
        ids = cols["id"]
        arr = _array(ids, np) if not isinstance(ids, (list, tuple)) else None
        if arr is not None and arr.dtype.kind in "iu":
            out["id"] = pa.array(arr).cast(pa.string())
        else:
            values = list(ids) if arr is None else arr.tolist()
            if len(values) != n or not all(type(v) is str for v in values):
                raise NotColumnar("id: not strings")
            out["id"] = pa.array(values, pa.string())
    if "embedding" in cols:
        out["embedding"] = _fixed_lists(
            _matrix(cols["embedding"], np, "embedding", n), np, pa, np.float32
        )
    ts = shared.get("ts")
    if not isinstance(ts, (int, float)):
        raise NotColumnar("ts: not a number")
    out["ts"] = pa.array(np.full(n, float(ts)))
    meta = {"model": model}
    if version is not None:
        meta["version"] = version
    for name, arr in out.items():
        if len(arr) != n:
            raise NotColumnar(f"{name}: {len(arr)} rows, expected {n}")
    return pa.RecordBatch.from_pydict(out).replace_schema_metadata(meta)


class FrameChunk:
    """One serialized IPC message and how many events it carries."""

    __slots__ = ("data", "events", "offset")

    def __init__(self, data: Any, events: int) -> None:
        self.data = memoryview(data)
        self.events = events
        self.offset = 0


class FrameLink:
    """The flusher's Arrow connection: one stream per connection, a new connection when
    the schema changes. Every method runs on the flusher thread and never raises OSError."""

    def __init__(self, path: str, probe_s: float) -> None:
        self.path = path
        self.probe_s = probe_s
        self.sock: socket.socket | None = None
        self.schema: Any = None
        self.refused = False
        """The sidecar closed a stream at once: it takes JSON only (until it reconnects)."""
        self.confirmed = False
        """A stream on this sidecar outlived the probe: later streams (a new schema) skip
        it, until the sidecar reconnects or a frames connection breaks."""
        self.pending: collections.deque[FrameChunk] = collections.deque()
        self.pending_bytes = 0
        self.pending_events = 0
        self.lost = 0
        """Events of a message half-written when a connection broke (counted by the owner)."""
        self.sent = 0
        self.sent_bytes = 0

    def add(self, rb: Any) -> bool:
        """Queue a record batch; False when the sidecar refuses frames (send JSON)."""
        if self.refused:
            return False
        same = self.sock is not None and rb.schema.equals(self.schema, check_metadata=True)
        if not same and not self._open(rb.schema):
            return False
        rows = rb.num_rows
        per_row = max(1, rb.nbytes // max(rows, 1))
        step = max(1, min(MAX_ROWS, MAX_MESSAGE_BYTES // per_row))
        for start in range(0, rows, step):
            part = rb.slice(start, step)
            data = part.serialize()
            self.pending.append(FrameChunk(data, part.num_rows))
            self.pending_bytes += data.size
            self.pending_events += part.num_rows
        return True

    def _open(self, schema: Any) -> bool:
        """End the current stream and start one with `schema` on a new connection; False
        when the sidecar closes it at once (frames off) or cannot be reached."""
        if self.sock is not None:
            self.flush_blocking_end()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
            sock.sendall(schema.serialize().to_pybytes())
            # Frames off: the sidecar closes the connection as soon as it reads the marker.
            wait = 0.0 if self.confirmed else self.probe_s
            readable, _, _ = select.select([sock], [], [], wait)
            if readable:
                try:
                    got = sock.recv(1)
                except OSError:
                    got = b""
                if not got:
                    sock.close()
                    self.refused = True
                    return False
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False
        self.confirmed = True
        self.sock = sock
        self.schema = schema
        return True

    def flush_blocking_end(self) -> None:
        """Close the current stream (end-of-stream marker) once its messages are out."""
        sock = self.sock
        if sock is None:
            return
        deadline = time.monotonic() + 1.0
        while self.pending and time.monotonic() < deadline:
            if self.write():
                with_timeout = max(deadline - time.monotonic(), 0.0)
                select.select([], [sock], [], with_timeout)
            if self.sock is None:
                return
        if not self.pending:
            try:
                sock.settimeout(0.2)
                sock.sendall(EOS)
            except OSError:
                pass
        self.disconnect()
        self.lost += self.drop_all()  # what could not go out within the second

    def write(self) -> bool:
        """Write pending messages until the kernel buffer is full; True when it is. After a
        broken connection, the messages still whole go on a new one, after the schema."""
        pending = self.pending
        if pending and self.sock is None and self.schema is not None and not self.refused:
            self._open(self.schema)
            if self.refused:
                self.lost += self.drop_all()
        while pending and self.sock is not None:
            chunk = pending[0]
            try:
                n = self.sock.send(chunk.data[chunk.offset :])
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self.confirmed = False  # ask the next connection again
                self.disconnect()
                return False
            chunk.offset += n
            self.sent_bytes += n
            if chunk.offset == len(chunk.data):
                pending.popleft()
                self.pending_bytes -= len(chunk.data)
                self.pending_events -= chunk.events
                self.sent += chunk.events
        return False

    def disconnect(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        sock.close()
        if self.pending and self.pending[0].offset > 0:
            # half a message went out; a new stream cannot carry its rest
            chunk = self.pending.popleft()
            self.pending_bytes -= len(chunk.data)
            self.pending_events -= chunk.events
            self.lost += chunk.events

    def drop_all(self) -> int:
        """Forget everything pending (the monitor is closing); returns the events."""
        n = self.pending_events
        self.pending.clear()
        self.pending_bytes = self.pending_events = 0
        return n

"""The flusher thread's half of a Monitor: connect, encode, write, and log what went wrong.

`Monitor` inherits `Flusher`; the two files split the class by thread. Everything here
runs on the flusher thread, which alone writes the flusher-side counters.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from sidecar.client._encode import Batch, Invalid, RecordTuple, build_event
from sidecar.client._frames import FrameLink, NotColumnar, to_record_batch
from sidecar.client._stats import DROP_REASONS
from sidecar.ratelimit import LogLimiter

log = logging.getLogger("sidecar.client")

LOG_EVERY_S = 60.0
"""A repeated problem (drops, bad input, a missing sidecar) is logged at most this often."""

SLICE_S = 0.0002
"""The flusher encodes for at most this long before a syscall lets request threads run."""

_IOV_MAX = 64


class _Chunk:
    """One encoded line and how many events it carries."""

    __slots__ = ("data", "events", "offset")

    def __init__(self, data: bytes, events: int) -> None:
        self.data = memoryview(data)
        self.events = events
        self.offset = 0


class Flusher:
    """The flusher thread: owns the socket, encodes buffered events, writes them."""

    # Set by Monitor, on the caller's side, and read here.
    model: str
    version: str | None
    socket_path: str
    buffer_size: int
    batch_size: int
    flush_interval_s: float
    _backoff_min: float
    _backoff_max: float
    _max_pending: int
    _max_line: int
    _encoder: msgspec.json.Encoder
    _buf: collections.deque[RecordTuple | Batch]
    _batched: int
    _batch_items: int
    _batch_lock: threading.Lock
    _drop_lock: threading.Lock
    _caller_drops: dict[str, int]
    _caller_problem: str | None
    _memory: int | None
    _arrow: bool
    _arrow_probe_s: float

    def _setup_flusher(self) -> None:
        """The flusher side's state; run after the caller side's, and again after a fork."""
        self._sock: socket.socket | None = None
        self._frames = FrameLink(self.socket_path, self._arrow_probe_s) if self._arrow else None
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
        self._limiter = LogLimiter(LOG_EVERY_S)
        self._stop = False
        self._wake = threading.Event()
        self._cond = threading.Condition(threading.Lock())
        self._cycles = 0
        self._idle = False
        self._thread = threading.Thread(
            target=self._run, name=f"drift-sidecar-client[{self.model}]", daemon=True
        )

    def _warn(self, key: str, msg: str, *args: object) -> None:
        """Log a problem at most once per LOG_EVERY_S per key, with how often it happened."""
        held = self._limiter.admit(key)
        if held is None:
            return
        if held:
            log.warning(msg + " (%d times since last logged)", *args, held + 1)
        else:
            log.warning(msg, *args)

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
            if self._frames is not None and self._frames.pending:
                blocked = self._frames.write() or blocked
        self._count_frame_losses()
        self._log_caller_problems()
        sock = self._sock
        work = bool(self._buf) or self._carry is not None
        idle = not work and not self._pending and not (self._frames and self._frames.pending)
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
        elif not (work and self._pending_total() < self._max_pending):
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
            self._warn(
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
        if self._frames is not None:
            self._frames.refused = False  # a restarted sidecar may take frames now
            self._frames.confirmed = False

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

    def _pending_total(self) -> int:
        """Bytes encoded and not yet written, JSON lines and frames together."""
        return self._pending_bytes + (self._frames.pending_bytes if self._frames else 0)

    def _count_frame_losses(self) -> None:
        link = self._frames
        if link is not None and link.lost:
            self._flusher_drops["send_failed"] += link.lost
            self._warn("frames_lost", "%d events of Arrow frames lost with a connection", link.lost)
            link.lost = 0

    def _as_frame(self, item: Batch) -> bool:
        """Send a batch as an Arrow frame; False when it must go as JSON lines."""
        link = self._frames
        if link is None or link.refused or item.rows is not None:
            return False
        try:
            rb = to_record_batch(item, self.model, self.version)
        except NotColumnar:
            return False
        except Exception as exc:  # a conversion this code did not foresee: JSON judges it
            self._warn("frames_convert", "batch sent as JSON, not as a frame: %r", exc)
            return False
        return link.add(rb)

    def _disconnect(self, closing: bool = False) -> None:
        if closing and self._frames is not None:
            self._frames.flush_blocking_end()
            self._count_frame_losses()
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
            self._warn("lost", "connection to drift sidecar at %s lost", self.socket_path)

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
            if self._as_frame(item):
                continue
            self._carry_left = item.n
            self._carry = item.expand()

    def _encode_pending(self) -> None:
        """Encode buffered events into lines, handing the GIL back every SLICE_S."""
        model, version, size = self.model, self.version, self.batch_size
        start = time.perf_counter()
        while self._pending_total() < self._max_pending:
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
                self._warn(
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
        self._warn("invalid_input", "dropped an invalid event: %s", detail)

    def _log_caller_problems(self) -> None:
        problem = self._caller_problem
        if problem is not None:
            self._caller_problem = None
            self._warn("caller_invalid", "dropped invalid input: %s", problem)
        with self._drop_lock:
            drops = dict(self._caller_drops)
        total = drops["buffer_full"] + drops["not_connected"]
        if total > self._logged_caller_drops:
            self._logged_caller_drops = total
            self._warn(
                "caller_drops",
                "drift-sidecar client dropping events: %d so far"
                " (buffer_full %d, not_connected %d)",
                total,
                drops["buffer_full"],
                drops["not_connected"],
            )


def _head(pending: collections.deque[_Chunk]) -> list[_Chunk]:
    return list(itertools.islice(pending, _IOV_MAX))

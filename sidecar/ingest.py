"""The Unix socket server: NDJSON framing, a byte-bounded queue, and back-pressure.

Readers only frame bytes into complete lines; one processor task decodes and folds them.
When the queue holds `queue_max_bytes`, every reader pauses; the kernel buffer then fills
and the client library drops on its side, so the sidecar's memory stays bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import structlog

from sidecar.config import Config, SocketSettings
from sidecar.events import decode_lines
from sidecar.frames import MARKER, Frame
from sidecar.health import Health
from sidecar.pipeline import Pipeline
from sidecar.sockfile import OwnedSocket

if TYPE_CHECKING:
    from sidecar.frame_ingest import FrameConnection

log = structlog.get_logger("sidecar.ingest")

_CHUNK_BYTES = 1 << 20  # lines decoded per processor step: amortizes, yet keeps the loop fair
_FILL_TURNS = 16
"""Loop turns the processor may wait, while lines keep arriving, for a step to fill up."""


_LONG_LINE = 2048
"""Bytes from which a line is long enough to be found with a call of its own."""


def split_lines(data: bytes, long_line: int = _LONG_LINE) -> tuple[list[bytes], bytes | memoryview]:
    """`data` cut at each newline: the complete lines, and what follows the last newline
    (a view of `data`, or bytes).

    Equal to `data.split(b"\\n")` with its last piece apart. That split looks at each byte
    in turn, several times slower than `find`, which uses memchr; so when the first full
    line is long (batches of events), each line is found with `find` instead, and short
    lines, where a call per line would cost more than it saves, keep the one split."""
    first = data.find(b"\n")
    second = data.find(b"\n", first + 1) if first >= 0 else -1
    if second < 0 or second - first > long_line:
        lines = [data[:first]] if first >= 0 else []
        find, append = data.find, lines.append
        start = first + 1
        while (nl := find(b"\n", start)) >= 0:
            append(data[start:nl])
            start = nl + 1
        return lines, memoryview(data)[start:]
    lines = data.split(b"\n")
    return lines, lines.pop()


class FrameQueue:
    """Complete lines waiting for the processor, bounded by bytes rather than count."""

    def __init__(self, max_bytes: int, health: Health) -> None:
        self.max_bytes = max_bytes
        self.health = health
        self._frames: deque[tuple[list[bytes] | Frame, int]] = deque()
        self._bytes = 0
        self.arrived = 0
        """Bytes ever queued: whether a loop turn brought any is a difference of two reads."""
        self._nonempty = asyncio.Event()
        self._paused: set[EventProtocol] = set()

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_bytes

    @property
    def step_ready(self) -> bool:
        """Whether the next `take` gets all it can: a full chunk of lines, or a record
        batch first (taken alone), or readers paused on a full queue (nothing more comes)."""
        return (
            self._bytes >= _CHUNK_BYTES
            or self.full
            or (bool(self._frames) and type(self._frames[0][0]) is Frame)
        )

    def put(self, lines: list[bytes], source: EventProtocol) -> None:
        size = sum(map(len, lines))
        self._frames.append((lines, size))
        self._bytes += size
        self.arrived += size
        self._publish()
        self._nonempty.set()
        if self.full:
            source.pause()
            self._paused.add(source)

    def put_frame(self, frame: Frame, source: EventProtocol) -> None:
        """An Arrow record batch (`sidecar.frames`): queued and bounded as lines are."""
        self._frames.append((frame, frame.nbytes))
        self._bytes += frame.nbytes
        self.arrived += frame.nbytes
        self._publish()
        self._nonempty.set()
        if self.full:
            source.pause()
            self._paused.add(source)

    def take(self) -> list[bytes] | Frame:
        """Up to about _CHUNK_BYTES of lines, oldest first; or one record batch, when it
        comes first."""
        out: list[bytes] = []
        size = 0
        got: list[bytes] | Frame = out
        while self._frames and size < _CHUNK_BYTES:
            if type(self._frames[0][0]) is Frame:
                if not out:
                    got, size = self._frames.popleft()
                break
            frame, n = self._frames.popleft()
            out.extend(frame)  # type: ignore[arg-type]
            size += n
        self._bytes -= size
        if not self._frames:
            self._nonempty.clear()
        self._publish()
        # `<=`: with a queue of 1 byte, half is 0 and an empty queue must still resume.
        if self._paused and self._bytes <= self.max_bytes // 2:
            for p in self._paused:
                p.resume()
            self._paused.clear()
        return got

    def forget(self, source: EventProtocol) -> None:
        self._paused.discard(source)

    async def wait(self) -> None:
        await self._nonempty.wait()

    def __len__(self) -> int:
        return len(self._frames)

    def _publish(self) -> None:
        self.health.queue_depth = len(self._frames)
        self.health.queue_bytes = self._bytes


class EventProtocol(asyncio.Protocol):
    """One connection: split the byte stream into lines, skipping over-long ones."""

    def __init__(self, server: IngestServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._pending: list[bytes | memoryview] = []
        """The start of a line still coming, in the pieces that brought it."""
        self._pending_bytes = 0
        self._skipping = False
        self._paused = False
        self._sniffing = True  # until the first bytes tell NDJSON from an Arrow stream
        self._head = b""
        self.frames: FrameConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self):
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.frames is not None:
            self.frames.finish()
        last = b"".join([*self._pending, self._head])
        if last and not self._skipping:
            # A last line without its newline is still a line.
            self._emit([last])
        self._pending.clear()
        self.server.release(self)

    def pause(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self._paused and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._sniffing or self.frames is not None:
            data = self._sniff(data)
            if not data:
                return
        limit = self.server.max_line_bytes
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return
            data = data[nl + 1 :]
            self._skipping = False
        if b"\n" not in data:
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes > limit:
                self._too_long()
            return
        # A read is a few hundred KB: it is cut where it lies, and a line it ends or starts
        # is copied once, when it is joined, not once more for each step of its framing.
        lines, tail = split_lines(data)
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending.clear()
        if tail:
            self._pending.append(tail)
        self._pending_bytes = len(tail)
        if max(map(len, lines)) > limit:  # C-level: this runs for every chunk read
            kept = [ln for ln in lines if len(ln) <= limit]
            for _ in range(len(lines) - len(kept)):
                self.server.pipeline.reject("line_too_long", f"line over {limit} bytes")
                self.server.health.received["socket"] += 1
            lines = kept
        if lines:
            self._emit(lines)
        if self._pending_bytes > limit:
            self._too_long()

    def _sniff(self, data: bytes) -> bytes:
        """Hand an Arrow IPC stream (first bytes FF FF FF FF) to its reader; return the
        bytes that are NDJSON."""
        if self.frames is not None:
            self.frames.feed(data)
            return b""
        head = self._head + data if self._head else data
        if len(head) < len(MARKER) and MARKER.startswith(head):
            self._head = head  # a marker may arrive a byte at a time
            return b""
        self._sniffing = False
        self._head = b""
        if head[: len(MARKER)] != MARKER:
            return head
        # imported here: pyarrow loads with the first stream, not with the daemon
        from sidecar.frame_ingest import FrameConnection  # noqa: PLC0415

        self.frames = FrameConnection(self.server, self)
        self.frames.feed(head)
        self.frames.take_over()
        return b""

    def _too_long(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        self._skipping = True
        limit = self.server.max_line_bytes
        self.server.pipeline.reject("line_too_long", f"line over {limit} bytes")
        self.server.health.received["socket"] += 1

    def _emit(self, lines: list[bytes]) -> None:
        self.server.queue.put(lines, self)


class IngestServer:
    """Owns the listening socket, the connections, the queue and the processor task."""

    def __init__(self, config: Config, pipeline: Pipeline, health: Health) -> None:
        self.config = config
        self.pipeline = pipeline
        self.health = health
        self.path = config.socket_path
        self.queue = FrameQueue(config.socket.queue_max_bytes, health)
        self._server: asyncio.AbstractServer | None = None
        self._owned: OwnedSocket | None = None
        self._conns: set[EventProtocol] = set()

    @property
    def limits(self) -> SocketSettings:
        """The socket limits in force: the pipeline's config, which a reload replaces."""
        return self.pipeline.config.socket

    @property
    def max_line_bytes(self) -> int:
        return self.limits.max_line_bytes

    def admit(self, proto: EventProtocol) -> bool:
        limit = self.limits.max_connections
        if len(self._conns) >= limit:
            self.health.connections_refused += 1
            log.warning("connection_refused", reason="too_many_connections", limit=limit)
            return False
        self._conns.add(proto)
        self.health.connections = len(self._conns)
        return True

    def release(self, proto: EventProtocol) -> None:
        self._conns.discard(proto)
        self.queue.forget(proto)
        self.health.connections = len(self._conns)

    def claim(self) -> None:
        """Take the socket path: lock, checks, bind (see `sidecar.sockfile`). SocketError
        when it cannot be used; nothing at the path is removed unless it is a stale socket."""
        if self._owned is None:
            self._owned = OwnedSocket(self.path, self.config.socket_mode)
            try:
                self._owned.claim()
            except BaseException:
                self._owned = None
                raise

    async def start(self) -> None:
        """Serve connections on the claimed socket (claimed here if it was not yet)."""
        self.claim()
        assert self._owned is not None and self._owned.sock is not None
        loop = asyncio.get_running_loop()
        # Passing the bound socket, not the path: asyncio would otherwise unlink whatever
        # socket is at the path first, a live one included.
        self._server = await loop.create_unix_server(
            lambda: EventProtocol(self), sock=self._owned.sock
        )
        log.info("socket_listening", path=self.path, mode=oct(self.config.socket_mode))

    def socket_problem(self) -> str | None:
        """None while the socket file is the one this process listens on."""
        return self._owned.problem() if self._owned is not None else None

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for proto in list(self._conns):
            if proto.transport is not None:
                proto.transport.close()  # flushes what was received; connection_lost emits it
        # connection_lost runs from the loop: let it queue each last unterminated line before
        # the caller drains.
        await asyncio.sleep(0)

    def close_socket(self) -> None:
        """Remove the socket file if it is still ours, and give up the lock."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    async def process_forever(self) -> None:
        """The processor: an eternal task; ends only by cancellation."""
        while True:
            await self.queue.wait()
            await self._let_fill()
            self.process_pending()
            await asyncio.sleep(0)  # let readers and scrapes in between chunks

    async def _let_fill(self) -> None:
        """While lines keep arriving, wait a few loop turns more before a step, so that it
        takes up to a chunk. A step's fixed cost, a few hundred µs of array calls per model
        whatever its size, is then shared by a thousand events or more rather than by the
        line or two that one read brings (a Unix socket buffers about 200 KB). The first
        turn that brings nothing ends the wait, so a quiet stream waits one turn."""
        queue = self.queue
        for _ in range(_FILL_TURNS):
            if queue.step_ready:
                return
            seen = queue.arrived
            # This turn's readers run after this task; when it resumes, they have read.
            await asyncio.sleep(0)
            if queue.arrived == seen:
                return

    def process_pending(self) -> int:
        """Decode and fold one chunk of queued lines; returns events accepted."""
        lines = self.queue.take()
        if isinstance(lines, Frame):
            return self._process_frame(lines)
        if not lines:
            return 0
        limits = self.limits
        self.queue.max_bytes = limits.queue_max_bytes
        try:
            decoded = decode_lines(lines, limits.max_batch_events)
        except Exception as exc:  # a defect; the processor must outlive it
            self._dropped(len(lines), "lines", exc)
            return 0
        try:
            return self.pipeline.handle(decoded, "socket")
        except Exception as exc:
            self._dropped(len(decoded.events) + len(decoded.rejections), "events", exc)
            return 0

    def _process_frame(self, frame: Frame) -> int:
        from sidecar.frame_ingest import handle_frame  # noqa: PLC0415 (loads pyarrow)

        self.queue.max_bytes = self.limits.queue_max_bytes
        try:
            return handle_frame(self.pipeline, frame, "socket")
        except Exception as exc:  # a defect: count the batch's rows, keep processing
            self._dropped(frame.batch.num_rows, "events", exc)
            return 0

    def _dropped(self, n: int, unit: str, exc: Exception) -> None:
        """An unexpected error cost this chunk: counted and logged; the next is processed."""
        self.pipeline.dropped(n, "socket", exc, unit=unit)

    def drain(self) -> None:
        """Process everything already queued (shutdown)."""
        while len(self.queue):
            self.process_pending()
